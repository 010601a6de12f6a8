//! `GET /admin/sessions`, `DELETE /admin/sessions/<id>`, `DELETE /admin/sessions?login=`. Ending
//! a session is what a logout does (`auth::sessions`).

use http::{Response, StatusCode};
use serde::Serialize;

use super::{Caller, limit_of, parse_query, rfc3339};
use crate::audit::{self, Event};
use crate::auth::endpoints::json_response;
use crate::auth::sessions::{end_session, end_sessions_of, live};
use crate::auth::tokens::now_secs;
use crate::body::GatewayBody;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::runtime::Runtime;
use crate::store::{SessionRecord, SessionState, StoreError};

fn store_err(e: StoreError) -> GatewayError {
    GatewayError::StoreUnavailable(e.to_string())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionView {
    session: String,
    login: String,
    created_at: String,
    last_refresh_at: String,
    refresh_count: u64,
    client_address: String,
    user_agent: String,
    expires_at: String,
}

impl SessionView {
    fn new(id: String, r: SessionRecord) -> Self {
        Self {
            session: id,
            login: r.login,
            created_at: rfc3339(r.created_at),
            last_refresh_at: rfc3339(r.last_refresh_at),
            refresh_count: r.refresh_count,
            client_address: r.client_address,
            user_agent: r.user_agent,
            expires_at: rfc3339(r.expires_at),
        }
    }
}

/// `GET /admin/sessions?login=&limit=`: that login's live sessions (newest first), or the most
/// recent live sessions of anyone. `login` is read as the credentials source knows it (SPEC §1:
/// for `http`, in any case), as sessions are indexed.
pub async fn list(
    gw: &Gateway,
    rt: &Runtime,
    query: Option<&str>,
) -> Result<Response<GatewayBody>, GatewayError> {
    let q = parse_query(query, &["login", "limit"])?;
    let limit = limit_of(&q)?;
    let now = now_secs();
    let ids = match q.get("login") {
        Some(login) => gw.store.sessions_of(&rt.credentials.canonical_login(login), now).await,
        None => gw.store.recent_sessions(limit, now).await,
    }
    .map_err(store_err)?;
    let mut found = live(gw, ids, now).await.map_err(store_err)?;
    found.sort_by(|a, b| b.1.created_at.cmp(&a.1.created_at).then_with(|| a.0.cmp(&b.0)));
    found.truncate(limit);
    let views: Vec<SessionView> = found.into_iter().map(|(id, r)| SessionView::new(id, r)).collect();
    json_response(StatusCode::OK, &views)
}

/// `DELETE /admin/sessions/<id>`: 204, or 404 when the store knows no such session.
pub async fn end_one(
    gw: &Gateway,
    rt: &Runtime,
    id: &str,
    query: Option<&str>,
    caller: &Caller,
) -> Result<Response<GatewayBody>, GatewayError> {
    parse_query(query, &[])?;
    if !plausible_id(id) {
        return Err(GatewayError::UnknownSession);
    }
    let Some(record) = gw.store.session(id).await.map_err(store_err)? else {
        return Err(GatewayError::UnknownSession);
    };
    // Ending it again (already ended, stolen or expired) is answered alike and changes nothing.
    if record.state == SessionState::Live && record.expires_at > now_secs() {
        end_session(gw, rt, id).await.map_err(store_err)?;
        tracing::info!(login = %record.login, session = %id, by = %caller.identity.login, "session ended by an administrator");
        revoked_event(gw, caller, &record.login, id);
    }
    let mut resp = Response::new(crate::body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    Ok(resp)
}

/// `DELETE /admin/sessions?login=`: ends every live session of that login (read as `list`
/// reads it); `{"revoked": n}`.
/// Without `login` it is refused: nothing ends sessions nobody named.
pub async fn end_of_login(
    gw: &Gateway,
    rt: &Runtime,
    query: Option<&str>,
    caller: &Caller,
) -> Result<Response<GatewayBody>, GatewayError> {
    let q = parse_query(query, &["login"])?;
    let login = q.get("login").ok_or_else(|| GatewayError::Malformed("login is required".into()))?;
    let login = rt.credentials.canonical_login(login);
    let ended = end_sessions_of(gw, rt, &login).await.map_err(store_err)?;
    tracing::info!(%login, revoked = ended.len(), by = %caller.identity.login, "sessions ended by an administrator");
    for id in &ended {
        revoked_event(gw, caller, &login, id);
    }
    json_response(StatusCode::OK, &serde_json::json!({ "revoked": ended.len() }))
}

/// `session.revoked`, by the calling admin; counted in `bo_gateway_admin_sessions_ended`.
fn revoked_event(gw: &Gateway, caller: &Caller, login: &str, id: &str) {
    gw.metrics.admin_sessions_ended.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ev = Event::new("session.revoked", &caller.context)
        .login(login)
        .session(id)
        .detail("by", caller.identity.login.as_str());
    audit::emit(gw, ev);
}

/// Session ids are base64url; anything else names no session (and is not worth a store call).
fn plausible_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
