//! Ending sessions as a logout does, for the admin API and for users the credentials source no
//! longer accepts: the store marks the session ended (its refresh tokens are `token.invalid`
//! from then on, not theft) and records the revocation, which a shared store publishes to every
//! replica; this replica refuses its access tokens at once.

use super::credentials::Standing;
use super::tokens::now_secs;
use crate::audit::{self, Context, Event};
use crate::gateway::Gateway;
use crate::runtime::Runtime;
use crate::store::{SessionRecord, SessionState, StoreError};

/// The live sessions among `ids`, in that order.
pub async fn live(
    gw: &Gateway,
    ids: Vec<String>,
    now: u64,
) -> Result<Vec<(String, SessionRecord)>, StoreError> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(r) = gw.store.session(&id).await? {
            if r.state == SessionState::Live && r.expires_at > now {
                out.push((id, r));
            }
        }
    }
    Ok(out)
}

/// Ends one session as a logout does. Returns whether the store knew it.
pub async fn end_session(gw: &Gateway, rt: &Runtime, id: &str) -> Result<bool, StoreError> {
    let until = gw.store.revoke_session(id).await?;
    if let Some(until) = until {
        gw.revocations.revoke(id, until + rt.token_settings.leeway_secs);
    }
    Ok(until.is_some())
}

/// Ends every live session of `login`; returns the ids of those it ended.
pub async fn end_sessions_of(gw: &Gateway, rt: &Runtime, login: &str) -> Result<Vec<String>, StoreError> {
    let now = now_secs();
    let ids = gw.store.sessions_of(login, now).await?;
    let mut ended = Vec::new();
    for (id, _) in live(gw, ids, now).await? {
        if end_session(gw, rt, &id).await? {
            ended.push(id);
        }
    }
    Ok(ended)
}

/// How the gateway learnt that a user may no longer use their sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A reload's users file.
    Reload,
    /// The credentials source, asked at a refresh.
    Refresh,
}

/// Ends every session of `login`, whom the credentials source no longer accepts (`standing`:
/// disabled or removed), and records `user.disabled` (with who found out, how many sessions
/// ended, or that the store failed). `current`, the session whose refresh found out, is ended
/// first even if the per-login index does not list it. One path for a reload and a refresh.
pub async fn end_user(
    gw: &Gateway,
    rt: &Runtime,
    login: &str,
    standing: Standing,
    by: Found,
    current: Option<&str>,
    ctx: &Context,
) -> Result<usize, StoreError> {
    let ended = async {
        let mut n = 0;
        if let Some(id) = current {
            n += usize::from(end_session(gw, rt, id).await?);
        }
        Ok::<_, StoreError>(n + end_sessions_of(gw, rt, login).await?.len())
    }
    .await;
    let by_name = match by {
        Found::Reload => "reload",
        Found::Refresh => "refresh",
    };
    let mut ev = Event::new("user.disabled", ctx)
        .login(login)
        .detail("by", by_name)
        .detail("state", standing.as_str());
    if let Some(id) = current {
        ev = ev.session(id);
    }
    match &ended {
        Ok(n) => {
            tracing::info!(%login, revoked = n, by = by_name, "user disabled or removed; sessions ended");
            ev = ev.detail("revoked", *n);
        }
        Err(e) => {
            tracing::warn!(%login, error = %e, by = by_name, "user disabled or removed; ending sessions failed");
            ev = ev.detail("error", "store unavailable");
        }
    }
    audit::emit(gw, ev);
    ended
}
