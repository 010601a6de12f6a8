//! `GET /admin/audit`: the store's list of the newest audit events (see [`crate::audit`]),
//! filtered.

use http::{Response, StatusCode};

use crate::audit::{EVENT_TYPES, Event};
use crate::body::GatewayBody;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::runtime::Runtime;

/// `GET /admin/audit?login=&session=&type=&since=&limit=`: the newest events that match every
/// filter given, newest first. Reads the store's whole list (at most `audit.keep` events).
pub async fn list(
    gw: &Gateway,
    rt: &Runtime,
    query: Option<&str>,
) -> Result<Response<GatewayBody>, GatewayError> {
    let q = super::parse_query(query, &["login", "session", "type", "since", "limit"])?;
    let limit = super::limit_of(&q)?;
    if let Some(t) = q.get("type").filter(|t| !EVENT_TYPES.contains(&t.as_str())) {
        return Err(GatewayError::Malformed(format!("unknown event type `{t}`")));
    }
    let since = q.get("since").map(|s| parse_time(s)).transpose()?;
    // Events name logins as the credentials source knows them (see `auth::login`).
    let login = q.get("login").map(|l| rt.credentials.canonical_login(l));
    let events = gw
        .store
        .audit_events(rt.raw.audit.keep)
        .await
        .map_err(|e| GatewayError::StoreUnavailable(e.to_string()))?;
    let wanted = |ev: &Event| {
        let is =
            |k: &str, v: &Option<String>| q.get(k).is_none_or(|want| v.as_deref() == Some(want.as_str()));
        login.as_ref().is_none_or(|l| ev.login.as_ref() == Some(l))
            && is("session", &ev.session)
            && q.get("type").is_none_or(|t| *t == ev.kind)
            && since.is_none_or(|s| parse_time(&ev.time).is_ok_and(|t| t >= s))
    };
    let found: Vec<Event> = events
        .iter()
        .filter_map(|line| serde_json::from_str::<Event>(line).ok())
        .filter(|ev| wanted(ev))
        .take(limit)
        .collect();
    crate::auth::endpoints::json_response(StatusCode::OK, &found)
}

fn parse_time(s: &str) -> Result<time::OffsetDateTime, GatewayError> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| GatewayError::Malformed("since must be an RFC 3339 time".into()))
}
