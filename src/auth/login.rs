//! `POST /auth/token`: the login limits of SPEC §1 without check-then-act, then the password
//! check and a new session.

use std::net::IpAddr;

use http::{Request, Response, StatusCode};

use super::credentials::{self, Verdict};
use super::endpoints::{
    EndpointBody, LoginBody, MAX_LOGIN_BYTES, MAX_PASSWORD_BYTES, Origin, json_response, parse_json,
    read_body, start_session, store_err,
};
use super::tokens::now_secs;
use crate::audit::{self, Context, Event};
use crate::body::GatewayBody;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::runtime::Runtime;
use crate::store::Reservation;

/// SPEC §1's login limits without check-then-act: one attempt is reserved against the login's
/// and the address's counters atomically before the password is checked, so however many
/// attempts race (on any number of replicas), at most the limit reach the password check. A
/// wrong password keeps its reservation (a failure); anything else gives it back, and a success
/// resets the login's count.
pub(super) async fn login(
    gw: &Gateway,
    rt: &Runtime,
    req: Request<EndpointBody>,
    client: IpAddr,
    ctx: &Context,
) -> Result<Response<GatewayBody>, GatewayError> {
    let result = attempt(gw, rt, req, client).await;
    let ev = match &result {
        Ok((login, session, _)) => Event::new("login.ok", ctx).login(login).session(session),
        Err((login, e)) => {
            let kind = if matches!(e, GatewayError::TooManyAttempts { .. }) {
                "login.limited"
            } else {
                "login.failed"
            };
            let ev = Event::new(kind, ctx).detail("code", e.code());
            match login {
                Some(l) => ev.login(l),
                None => ev,
            }
        }
    };
    audit::emit(gw, ev);
    result.map(|(_, _, resp)| resp).map_err(|(_, e)| e)
}

/// The login attempt; its outcome with the login it named (when the body could be read) and,
/// on success, the new session, for the audit trail.
async fn attempt(
    gw: &Gateway,
    rt: &Runtime,
    req: Request<EndpointBody>,
    client: IpAddr,
) -> Result<(String, String, Response<GatewayBody>), (Option<String>, GatewayError)> {
    let origin = Origin::of(req.headers(), client);
    let body = read_body(req).await.and_then(|b| parse_json::<LoginBody>(&b)).map_err(|e| (None, e))?;
    if body.login.len() > MAX_LOGIN_BYTES || body.password.len() > MAX_PASSWORD_BYTES {
        return Err((None, GatewayError::Malformed("login or password too long".into())));
    }
    // The login as the source knows it: what the counter, the session (and so the store's
    // per-login index and the tokens) and the audit trail name.
    let login = rt.credentials.canonical_login(&body.login);
    let named = |e: GatewayError| (Some(login.clone()), e);
    let limits = &rt.login_limits;
    let login_key = format!("login:{login}");
    let addr_key = format!("addr:{client}");
    let keys: Vec<(&str, u32)> =
        [(login_key.as_str(), limits.per_login), (addr_key.as_str(), limits.per_address)]
            .into_iter()
            .filter(|(_, max)| *max > 0)
            .collect();
    let now = now_secs();
    if !keys.is_empty() {
        let reserved = gw
            .store
            .reserve_attempt(&keys, limits.window_secs, now)
            .await
            .map_err(|e| named(store_err(e)))?;
        if let Reservation::Refused { resets_at } = reserved {
            let retry_after_secs = resets_at.saturating_sub(now);
            return Err(named(GatewayError::TooManyAttempts { retry_after_secs }));
        }
    }
    gw.metrics.password_checks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let verdict =
        credentials::check_password(rt.credentials.clone(), &gw.hashing, body.login.clone(), body.password)
            .await;
    let give = |reset: bool| give_back(gw, &keys, reset.then_some(login_key.as_str()), now);
    match verdict {
        Ok(Verdict::Valid { roles }) => {
            give(true).await;
            let pair = start_session(gw, rt, &login, &roles, origin).await.map_err(named)?;
            tracing::info!(%login, %client, "login");
            let resp = json_response(StatusCode::OK, &pair).map_err(named)?;
            Ok((login.clone(), pair.session.clone(), resp))
        }
        Ok(Verdict::Disabled) => {
            give(false).await;
            Err(named(GatewayError::UserDisabled))
        }
        Ok(Verdict::Invalid) => {
            tracing::info!(%client, "login failed");
            Err(named(GatewayError::BadCredentials))
        }
        Err(e) => {
            give(false).await;
            Err(named(e))
        }
    }
}

/// Gives a reserved attempt back to every key, or resets `reset`'s count instead. Failing to is
/// logged, not answered: the attempt then counts as a failure, which only ever errs on the safe
/// side.
async fn give_back(gw: &Gateway, keys: &[(&str, u32)], reset: Option<&str>, now: u64) {
    for (key, _) in keys {
        let result = if reset == Some(*key) {
            gw.store.clear_login_failures(key).await
        } else {
            gw.store.release_attempt(key, now).await
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not give a login attempt back");
        }
    }
}
