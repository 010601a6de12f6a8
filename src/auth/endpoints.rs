//! The SPEC §1 endpoints: JSON in, JSON out, TraderEvolution's field names and error codes.

use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

/// What an endpoint reads its request body from: hyper's stream, or the bytes the fast path
/// has already read (`crate::fastpath`).
pub type EndpointBody = http_body_util::Either<Incoming, http_body_util::Full<Bytes>>;
use serde::{Deserialize, Serialize};

use super::lenient_json;
use super::refresh::RefreshToken;
use super::tokens::{self, Identity, issue_access, now_secs, random_token, token_hash};
use crate::audit::{self, Context, Event};
use crate::body::{GatewayBody, JSON_CONTENT_TYPE, full};
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::runtime::{Runtime, validate_lifetimes};
use crate::store::{ConnectorSettings, MAX_USER_AGENT, NewSession, StoreError};

/// JSON bodies of the auth endpoints are small; anything larger is refused unread.
pub const MAX_JSON_BYTES: usize = 64 * 1024;
pub(super) const MAX_LOGIN_BYTES: usize = 256;
pub(super) const MAX_PASSWORD_BYTES: usize = 4096;
/// OTTs are 43 characters, refresh tokens about 90; this leaves room without hashing megabytes.
pub(super) const MAX_OPAQUE_TOKEN_BYTES: usize = 512;

/// The SPEC §1 endpoints (their paths and methods: `crate::gate::endpoints`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Token,
    Refresh,
    ExternalToken,
    ExternalVerify,
    Revoke,
    Settings,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TokenPair {
    /// For the audit trail; not part of the answer.
    #[serde(skip)]
    pub(super) session: String,
    pub(super) access_token: String,
    pub(super) access_token_life_time: u64,
    pub(super) refresh_token: String,
    pub(super) refresh_token_life_time: u64,
}

#[derive(Debug, PartialEq, Deserialize)]
pub(super) struct LoginBody {
    pub(super) login: String,
    pub(super) password: String,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RefreshBody {
    pub(super) refresh_token: String,
}

#[derive(Debug, PartialEq, Deserialize)]
struct OttBody {
    token: String,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SettingsPatch {
    access_token_life_time: Option<u64>,
    refresh_token_life_time: Option<u64>,
    one_time_token_life_time: Option<u64>,
}

pub async fn handle(
    gw: &Gateway,
    rt: &Runtime,
    endpoint: Endpoint,
    req: Request<EndpointBody>,
    client: IpAddr,
    admin: Option<std::sync::Arc<Identity>>,
) -> Result<Response<GatewayBody>, GatewayError> {
    let ctx = Context::of(req.headers(), client, req.extensions().get());
    let ctx = &ctx;
    let m = &gw.metrics;
    let outcome =
        |r: &Result<Response<GatewayBody>, GatewayError>| r.as_ref().map_or_else(|e| e.reason(), |_| "ok");
    match endpoint {
        Endpoint::Token => {
            let r = super::login::login(gw, rt, req, client, ctx).await;
            m.logins.add(outcome(&r));
            r
        }
        Endpoint::Refresh => {
            let r = super::renew::refresh(gw, rt, req, ctx).await;
            m.refreshes.add(outcome(&r));
            r
        }
        Endpoint::ExternalToken => {
            let r = issue_ott(gw, rt, req, ctx).await;
            if r.is_ok() {
                m.otts_issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            r
        }
        Endpoint::ExternalVerify => verify_ott(gw, rt, req, client, ctx).await,
        Endpoint::Revoke => revoke(gw, rt, req, ctx).await,
        // Admin-only: `crate::gate::endpoints` checked the caller.
        Endpoint::Settings => match admin {
            Some(who) => settings(gw, rt, req, ctx, &who).await,
            None => Err(GatewayError::TokenMissing),
        },
    }
}

pub fn json_response<T: Serialize>(
    status: StatusCode,
    value: &T,
) -> Result<Response<GatewayBody>, GatewayError> {
    let body = serde_json::to_vec(value).map_err(|e| GatewayError::Internal(e.to_string()))?;
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, JSON_CONTENT_TYPE.clone());
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

pub(super) async fn read_body(req: Request<EndpointBody>) -> Result<Bytes, GatewayError> {
    match Limited::new(req.into_body(), MAX_JSON_BYTES).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(GatewayError::TooLarge),
        Err(e) => Err(GatewayError::Malformed(format!("body: {e}"))),
    }
}

/// Standard JSON first; only when that fails, the lenient form of SPEC §1 (bare names and
/// values, as the vendor's clients send), which reads valid JSON exactly as `serde_json` does.
pub(super) fn parse_json<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, GatewayError> {
    serde_json::from_slice(bytes).or_else(|e| {
        lenient_json::from_slice(bytes)
            .map_err(|l| GatewayError::Malformed(format!("JSON: {e}; lenient: {l}")))
    })
}

pub(super) fn store_err(e: StoreError) -> GatewayError {
    GatewayError::StoreUnavailable(e.to_string())
}

pub(super) async fn lifetimes(gw: &Gateway, rt: &Runtime) -> Result<ConnectorSettings, GatewayError> {
    Ok(gw.store.settings().await.map_err(store_err)?.unwrap_or(rt.default_lifetimes))
}

/// Who started a session, as the session list will show it.
pub(super) struct Origin {
    client: IpAddr,
    user_agent: String,
}

impl Origin {
    pub(super) fn of(headers: &HeaderMap, client: IpAddr) -> Self {
        Self { client, user_agent: user_agent(headers) }
    }
}

/// The request's `User-Agent`, cut to [`MAX_USER_AGENT`] bytes (what sessions and audit keep).
pub fn user_agent(headers: &HeaderMap) -> String {
    let ua =
        headers.get(header::USER_AGENT).map(|v| String::from_utf8_lossy(v.as_bytes())).unwrap_or_default();
    let mut end = ua.len().min(MAX_USER_AGENT);
    while !ua.is_char_boundary(end) {
        end -= 1;
    }
    ua[..end].to_string()
}

/// Starts a session: a session id, its first refresh token (the store keeps digests of it only)
/// and an access token.
pub(super) async fn start_session(
    gw: &Gateway,
    rt: &Runtime,
    login: &str,
    roles: &[String],
    origin: Origin,
) -> Result<TokenPair, GatewayError> {
    let life = lifetimes(gw, rt).await?;
    let now = now_secs();
    let session = random_token(16);
    let refresh = RefreshToken::first(&session);
    let (access, exp) =
        issue_access(&rt.keys, &rt.token_settings, login, roles, &session, life.access_token_life_time, now)?;
    let session_id = session.clone();
    gw.store
        .create_session(NewSession {
            id: session,
            login: login.to_string(),
            key_hash: refresh.proof_hash(),
            secret_hash: refresh.secret_hash(),
            refresh_expires: now + life.refresh_token_life_time,
            access_expires: exp,
            created_at: now,
            client_address: origin.client.to_string(),
            user_agent: origin.user_agent,
        })
        .await
        .map_err(store_err)?;
    Ok(TokenPair {
        session: session_id,
        access_token: access,
        access_token_life_time: life.access_token_life_time,
        refresh_token: refresh.encode(),
        refresh_token_life_time: life.refresh_token_life_time,
    })
}

fn identity_of(auth: &tokens::Authenticated) -> Result<&Identity, GatewayError> {
    auth.identity().ok_or(GatewayError::TokenMissing)
}

async fn issue_ott(
    gw: &Gateway,
    rt: &Runtime,
    req: Request<EndpointBody>,
    ctx: &Context,
) -> Result<Response<GatewayBody>, GatewayError> {
    let auth = gw.bearer().check(rt, req.headers())?;
    let id = identity_of(&auth)?;
    let life = lifetimes(gw, rt).await?;
    let ott = random_token(32);
    gw.store
        .put_ott(&token_hash(&ott), &id.login, now_secs() + life.one_time_token_life_time)
        .await
        .map_err(store_err)?;
    audit::emit(gw, Event::new("ott.issued", ctx).login(&id.login).session(&id.session));
    json_response(
        StatusCode::OK,
        &serde_json::json!({ "token": ott, "lifeTime": life.one_time_token_life_time }),
    )
}

async fn verify_ott(
    gw: &Gateway,
    rt: &Runtime,
    req: Request<EndpointBody>,
    client: IpAddr,
    ctx: &Context,
) -> Result<Response<GatewayBody>, GatewayError> {
    let origin = Origin::of(req.headers(), client);
    let body: OttBody = parse_json(&read_body(req).await?)?;
    let invalid = |login: Option<&str>, why: &'static str| {
        gw.metrics.otts_verified.add("token.invalid");
        let mut ev = Event::new("ott.refused", ctx).detail("reason", why);
        if let Some(l) = login {
            ev = ev.login(l);
        }
        audit::emit(gw, ev);
        json_response(StatusCode::OK, &serde_json::json!({ "valid": false }))
    };
    if body.token.is_empty() || body.token.len() > MAX_OPAQUE_TOKEN_BYTES {
        return invalid(None, "malformed");
    }
    let Some(login) = gw.store.consume_ott(&token_hash(&body.token), now_secs()).await.map_err(store_err)?
    else {
        return invalid(None, "unknown, used or expired");
    };
    let roles = match rt.credentials.account(&login) {
        Some(a) if !a.disabled => a.roles,
        _ => return invalid(Some(&login), "user disabled or removed"),
    };
    let pair = start_session(gw, rt, &login, &roles, origin).await?;
    gw.metrics.otts_verified.add("ok");
    audit::emit(gw, Event::new("ott.verified", ctx).login(&login).session(&pair.session));
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "valid": true,
            "login": login,
            "accessToken": pair.access_token,
            "accessTokenLifeTime": pair.access_token_life_time,
            "refreshToken": pair.refresh_token,
            "refreshTokenLifeTime": pair.refresh_token_life_time,
        }),
    )
}

async fn revoke(
    gw: &Gateway,
    rt: &Runtime,
    req: Request<EndpointBody>,
    ctx: &Context,
) -> Result<Response<GatewayBody>, GatewayError> {
    let auth = gw.bearer().check(rt, req.headers())?;
    let id = identity_of(&auth)?;
    let until = gw.store.revoke_session(&id.session).await.map_err(store_err)?.unwrap_or(0).max(id.exp);
    gw.revocations.revoke(&id.session, until + rt.token_settings.leeway_secs);
    tracing::info!(login = %id.login, session = %id.session, "session revoked (logout)");
    audit::emit(gw, Event::new("logout", ctx).login(&id.login).session(&id.session));
    let mut resp = Response::new(crate::body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    Ok(resp)
}

async fn settings(
    gw: &Gateway,
    rt: &Runtime,
    req: Request<EndpointBody>,
    ctx: &Context,
    who: &Identity,
) -> Result<Response<GatewayBody>, GatewayError> {
    let current = lifetimes(gw, rt).await?;
    if req.method() == Method::GET {
        return json_response(StatusCode::OK, &current);
    }
    let patch: SettingsPatch = parse_json(&read_body(req).await?)?;
    let next = ConnectorSettings {
        access_token_life_time: patch.access_token_life_time.unwrap_or(current.access_token_life_time),
        refresh_token_life_time: patch.refresh_token_life_time.unwrap_or(current.refresh_token_life_time),
        one_time_token_life_time: patch.one_time_token_life_time.unwrap_or(current.one_time_token_life_time),
    };
    validate_lifetimes(&next).map_err(|(field, why)| GatewayError::Malformed(format!("{field}: {why}")))?;
    gw.store.put_settings(next).await.map_err(store_err)?;
    tracing::info!(?next, "connector settings changed");
    let ev = Event::new("settings.changed", ctx)
        .login(&who.login)
        .session(&who.session)
        .detail("by", who.login.as_str())
        .detail("old", serde_json::to_value(current).unwrap_or_default())
        .detail("new", serde_json::to_value(next).unwrap_or_default());
    audit::emit(gw, ev);
    json_response(StatusCode::OK, &next)
}

/// Parses `bytes` as each endpoint's request body, as the handlers do (for the fuzz targets:
/// any input must give `Ok` or `Err`, never a panic). Returns how many shapes accepted it.
#[doc(hidden)]
pub fn parse_any_body(bytes: &[u8]) -> usize {
    let mut ok = 0;
    ok += usize::from(parse_json::<LoginBody>(bytes).is_ok());
    ok += usize::from(parse_json::<RefreshBody>(bytes).is_ok());
    ok += usize::from(parse_json::<OttBody>(bytes).is_ok());
    if let Ok(p) = parse_json::<SettingsPatch>(bytes) {
        let s = ConnectorSettings {
            access_token_life_time: p.access_token_life_time.unwrap_or(900),
            refresh_token_life_time: p.refresh_token_life_time.unwrap_or(28_800),
            one_time_token_life_time: p.one_time_token_life_time.unwrap_or(30),
        };
        ok += usize::from(validate_lifetimes(&s).is_ok());
    }
    ok
}

/// The lenient reader against `serde_json` for each endpoint's body type (for the fuzz target
/// and the property tests; panics on a disagreement).
#[doc(hidden)]
pub fn check_lenient_bodies(bytes: &[u8]) {
    lenient_json::check_against_serde::<LoginBody>(bytes);
    lenient_json::check_against_serde::<RefreshBody>(bytes);
    lenient_json::check_against_serde::<OttBody>(bytes);
    lenient_json::check_against_serde::<SettingsPatch>(bytes);
}

/// `GET /.well-known/jwks.json`.
pub fn jwks(rt: &Runtime) -> Response<GatewayBody> {
    let mut resp = Response::new(full(rt.keys.jwks.clone()));
    let h: &mut HeaderMap = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, JSON_CONTENT_TYPE.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    resp
}
