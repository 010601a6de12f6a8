//! SPEC §7 on the admin listener: the sessions API and the audit trail. Every `/admin/*`
//! request is checked for a Bearer access token with role `admin` before anything else, even
//! on this listener (which may be reachable by more than the operators).

pub mod audit;
pub mod sessions;
pub mod status;

use std::collections::HashMap;

use http::{HeaderMap, Method, Request, Response};

use crate::auth::Identity;
use crate::body::GatewayBody;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::runtime::Runtime;

/// Who is calling the admin API, and from where: what the audit trail records of an admin.
pub struct Caller {
    pub identity: std::sync::Arc<Identity>,
    pub context: crate::audit::Context,
}

/// Answers `path` (under `/admin/`) for an admin; 401/403 for anyone else.
pub async fn handle<B>(
    gw: &Gateway,
    rt: &Runtime,
    req: Request<B>,
    client: std::net::IpAddr,
    request_id: &str,
) -> Result<Response<GatewayBody>, GatewayError> {
    let identity = require_admin(gw, rt, req.headers())?;
    let rid = crate::audit::RequestId(request_id.to_string());
    let caller = Caller { identity, context: crate::audit::Context::of(req.headers(), client, Some(&rid)) };
    let path = req.uri().path();
    let query = req.uri().query();
    let method = req.method();
    if path == "/admin/sessions" {
        return match *method {
            Method::GET => sessions::list(gw, rt, query).await,
            Method::DELETE => sessions::end_of_login(gw, rt, query, &caller).await,
            _ => Err(not_allowed("GET, DELETE")),
        };
    }
    if path == "/admin/audit" {
        return match *method {
            Method::GET => audit::list(gw, rt, query).await,
            _ => Err(not_allowed("GET")),
        };
    }
    if let Some(id) = path.strip_prefix("/admin/sessions/") {
        return match *method {
            Method::DELETE => sessions::end_one(gw, rt, id, query, &caller).await,
            _ => Err(not_allowed("DELETE")),
        };
    }
    Err(GatewayError::NoRoute)
}

fn not_allowed(allow: &'static str) -> GatewayError {
    GatewayError::MethodNotAllowed { allow: http::HeaderValue::from_static(allow) }
}

/// The Bearer check of SPEC §2, then role `admin` (403 `forbidden` without it).
fn require_admin(
    gw: &Gateway,
    rt: &Runtime,
    headers: &HeaderMap,
) -> Result<std::sync::Arc<Identity>, GatewayError> {
    let id = gw.authenticate(rt, headers)?.identity_arc().ok_or(GatewayError::TokenMissing)?;
    if !id.has_role("admin") {
        return Err(GatewayError::Forbidden("the admin API needs role admin"));
    }
    Ok(id)
}

/// A query string as `name → value`, refusing (400) names not in `allowed`, a name given twice
/// and empty values: a filter the gateway does not apply must not look applied.
pub fn parse_query(query: Option<&str>, allowed: &[&str]) -> Result<HashMap<String, String>, GatewayError> {
    let bad = |why: String| GatewayError::Malformed(why);
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if !allowed.contains(&k.as_ref()) {
            return Err(bad(format!("unknown query parameter `{k}`")));
        }
        if v.is_empty() {
            return Err(bad(format!("`{k}` is empty")));
        }
        if out.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(bad(format!("`{k}` given more than once")));
        }
    }
    Ok(out)
}

/// `limit=` (1 to [`MAX_LIMIT`]), [`DEFAULT_LIMIT`] when absent.
pub fn limit_of(q: &HashMap<String, String>) -> Result<usize, GatewayError> {
    match q.get("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| GatewayError::Malformed(format!("limit must be 1 to {MAX_LIMIT}"))),
    }
}

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// Unix seconds as RFC 3339 (UTC).
pub fn rfc3339(secs: u64) -> String {
    use time::format_description::well_known::Rfc3339;
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_strict() {
        let q = parse_query(Some("login=bo%20b&limit=5"), &["login", "limit"]).unwrap();
        assert_eq!(q["login"], "bo b");
        assert_eq!(limit_of(&q).unwrap(), 5);
        assert!(parse_query(Some("logn=x"), &["login"]).is_err());
        assert!(parse_query(Some("login=a&login=b"), &["login"]).is_err());
        assert!(parse_query(Some("login="), &["login"]).is_err());
        assert!(parse_query(None, &["login"]).unwrap().is_empty());
        for bad in ["0", "1001", "-1", "x"] {
            let q = parse_query(Some(&format!("limit={bad}")), &["limit"]).unwrap();
            assert!(limit_of(&q).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
