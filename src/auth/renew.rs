//! `GET /auth/token/refresh` (SPEC §1): rotation with reuse detection and the reuse grace,
//! decided by the store in one step; a user the credentials source no longer accepts (the users
//! file as it is now, or the BO asked through `credentials.user_url`) has every session ended.

use http::{Request, Response, StatusCode};

use super::credentials::Standing;
use super::endpoints::{
    EndpointBody, MAX_OPAQUE_TOKEN_BYTES, RefreshBody, TokenPair, json_response, lifetimes, parse_json,
    read_body, store_err,
};
use super::refresh::RefreshToken;
use super::sessions::{Found, end_user};
use super::tokens::{issue_access, now_secs};
use crate::audit::{self, Context, Event};
use crate::body::GatewayBody;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::runtime::Runtime;
use crate::store::{Rotation, SessionState};

/// The refresh token from the `token` header, or `{"refreshToken"}` when the header is absent.
async fn refresh_token_of(req: Request<EndpointBody>) -> Result<String, GatewayError> {
    let mut values = req.headers().get_all("token").iter();
    if let Some(v) = values.next() {
        if values.next().is_some() {
            return Err(GatewayError::Malformed("more than one token header".into()));
        }
        let t = v.to_str().map_err(|_| GatewayError::TokenInvalid("not ASCII"))?.trim();
        if t.is_empty() {
            return Err(GatewayError::TokenMissing);
        }
        return Ok(t.to_string());
    }
    let body = read_body(req).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(GatewayError::TokenMissing);
    }
    let b: RefreshBody = parse_json(&body)?;
    if b.refresh_token.is_empty() {
        return Err(GatewayError::TokenMissing);
    }
    Ok(b.refresh_token)
}

pub(super) async fn refresh(
    gw: &Gateway,
    rt: &Runtime,
    req: Request<EndpointBody>,
    ctx: &Context,
) -> Result<Response<GatewayBody>, GatewayError> {
    let presented = refresh_token_of(req).await?;
    if presented.len() > MAX_OPAQUE_TOKEN_BYTES {
        return Err(GatewayError::TokenInvalid("too long"));
    }
    // Tokens issued before bounded sessions have another form: refused here, cleanly.
    let Some(token) = RefreshToken::parse(&presented) else {
        return Err(GatewayError::TokenInvalid("not a refresh token of this gateway"));
    };
    // The BO, where it can be asked, before the token is spent: if it cannot answer, the client
    // keeps a token it may present again (with the grace off, presenting a spent one is theft).
    if rt.credentials.asks_at_refresh() {
        if let Some(login) = holder(gw, &token).await? {
            let standing = rt.credentials.standing(&login).await?;
            if standing != Standing::Active {
                end_user(gw, rt, &login, standing, Found::Refresh, Some(&token.session), ctx)
                    .await
                    .map_err(store_err)?;
                return Err(GatewayError::UserDisabled);
            }
        }
    }
    let life = lifetimes(gw, rt).await?;
    let now = now_secs();
    let next = token.successor();
    let successor = token
        .successor_record(&next, now + life.refresh_token_life_time, now + life.access_token_life_time)
        .ok_or_else(|| GatewayError::Internal("cannot seal a refresh token".into()))?;
    let rotation = gw
        .store
        .rotate_refresh(&token.presented(), &successor, rt.refresh_reuse_grace_secs, now)
        .await
        .map_err(store_err)?;
    let (session, next, kind) = match rotation {
        Rotation::Rotated(s) => (s, next, "refresh.ok"),
        Rotation::Replayed { session, sealed } => {
            // The successor the first refresh issued; only this token's key opens it.
            let Some(issued) = token.open(&sealed) else {
                return Err(GatewayError::Internal("the reuse grace's successor does not open".into()));
            };
            tracing::debug!(session = %session.id, "refresh token presented again within the reuse grace");
            (session, issued, "refresh.grace")
        }
        Rotation::Reused { session, revoked_until } => {
            gw.revocations.revoke(&session, revoked_until + rt.token_settings.leeway_secs);
            tracing::warn!(session = %session, "refresh token reused; session revoked");
            let mut ev = Event::new("refresh.reused", ctx).session(&session);
            // Only on theft: one more read, for whose session it was.
            if let Ok(Some(rec)) = gw.store.session(&session).await {
                ev = ev.login(&rec.login);
            }
            audit::emit(gw, ev);
            return Err(GatewayError::TokenReused);
        }
        Rotation::Unknown => return Err(GatewayError::TokenInvalid("unknown refresh token")),
    };
    // Roles come from the users file as it is now: a user disabled or removed since login
    // cannot keep refreshing. Every session of the login ends, not only this one: a reload that
    // disabled it may have failed to end them (store down).
    let roles = match rt.credentials.account(&session.login) {
        Some(a) if !a.disabled => a.roles,
        found => {
            let standing = if found.is_some() { Standing::Disabled } else { Standing::Removed };
            end_user(gw, rt, &session.login, standing, Found::Refresh, Some(&session.id), ctx)
                .await
                .map_err(store_err)?;
            return Err(match standing {
                Standing::Removed => GatewayError::TokenInvalid("user gone"),
                _ => GatewayError::UserDisabled,
            });
        }
    };
    let (access, _) = issue_access(
        &rt.keys,
        &rt.token_settings,
        &session.login,
        &roles,
        &session.id,
        life.access_token_life_time,
        now,
    )?;
    audit::emit(gw, Event::new(kind, ctx).login(&session.login).session(&session.id));
    json_response(
        StatusCode::OK,
        &TokenPair {
            session: session.id.clone(),
            access_token: access,
            access_token_life_time: life.access_token_life_time,
            refresh_token: next.encode(),
            refresh_token_life_time: life.refresh_token_life_time,
        },
    )
}

/// The login of the session `token` belongs to, if that session is live and the token carries
/// its proof (so only a holder of one of its tokens, not anyone who knows a session id, makes
/// the gateway ask the BO). `None`: the rotation will refuse the token anyway.
async fn holder(gw: &Gateway, token: &RefreshToken) -> Result<Option<String>, GatewayError> {
    let Some(rec) = gw.store.session(&token.session).await.map_err(store_err)? else { return Ok(None) };
    let live = rec.state == SessionState::Live && rec.expires_at > now_secs();
    Ok((live && rec.key_hash == token.proof_hash()).then_some(rec.login))
}
