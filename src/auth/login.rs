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

/// Gives a reserved attempt back to every key, or resets `reset`'s count instead. One the store
/// cannot take now (Redis failing over) is retried in the background for a while: left undone,
/// an answered login would count as a failure, and a client retrying through a failover would
/// lock its user out for the whole window. (A give-back whose answer was lost may so be applied
/// twice: one attempt less counted, only while the store was failing.)
async fn give_back(gw: &Gateway, keys: &[(&str, u32)], reset: Option<&str>, now: u64) {
    for (key, _) in keys {
        let reset = reset == Some(*key);
        if let Err(e) = give_back_one(&gw.store, key, reset, now).await {
            tracing::warn!(error = %e, "could not give a login attempt back; retrying in the background");
            let (store, key) = (gw.store.clone(), key.to_string());
            tokio::spawn(async move {
                let first = std::time::Duration::from_millis(250);
                let done = retry_for(GIVE_BACK_FOR, first, || give_back_one(&store, &key, reset, now)).await;
                if !done {
                    tracing::warn!(key = %key, "a login attempt could not be given back: it counts as a failure");
                }
            });
        }
    }
}

/// How long a give-back is retried (Redis fails over in seconds).
const GIVE_BACK_FOR: std::time::Duration = std::time::Duration::from_secs(60);

async fn give_back_one(
    store: &std::sync::Arc<dyn crate::store::Store>,
    key: &str,
    reset: bool,
    now: u64,
) -> Result<(), crate::store::StoreError> {
    if reset { store.clear_login_failures(key).await } else { store.release_attempt(key, now).await }
}

/// Runs `op` until it succeeds, after `first`, then backing off (doubling, at most 20 times
/// `first`), for at most `period`; whether it succeeded.
async fn retry_for<F, E>(
    period: std::time::Duration,
    first: std::time::Duration,
    mut op: impl FnMut() -> F,
) -> bool
where
    F: std::future::Future<Output = Result<(), E>>,
{
    let deadline = tokio::time::Instant::now() + period;
    let mut wait = first;
    loop {
        tokio::time::sleep(wait).await;
        if op().await.is_ok() {
            return true;
        }
        if tokio::time::Instant::now() + wait > deadline {
            return false;
        }
        wait = (wait * 2).min(first * 20);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::retry_for;

    #[tokio::test]
    async fn a_give_back_is_retried_until_the_store_takes_it_and_not_for_ever() {
        let calls = AtomicU32::new(0);
        // Fails three times (a failover), then succeeds.
        let ok = retry_for(Duration::from_secs(60), Duration::from_millis(1), || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 3 { Err(()) } else { Ok(()) }
        })
        .await;
        assert!(ok);
        assert_eq!(calls.load(Ordering::SeqCst), 4);

        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let ok = retry_for(Duration::from_millis(600), Duration::from_millis(1), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), ()>(())
        })
        .await;
        assert!(!ok);
        // Given up once the period is over: 1 + 2 + 4 + 8 + 16, then every 20 ms.
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(5), "{took:?}");
        assert!(calls.load(Ordering::SeqCst) >= 10, "{} tries", calls.load(Ordering::SeqCst));
    }
}
