//! The one table of the gateway's own endpoints. It decides which listener answers a path, the
//! admin-only check (401/403), the 405 for a method it does not list, and which handler
//! answers (`super::own::serve`); `docs/openapi.yaml` is tested against it (tests/openapi.rs).

use std::sync::Arc;

use http::{HeaderValue, Method};

use super::own::Listener;
use crate::auth::endpoints::Endpoint;
use crate::auth::{Authenticated, Identity};
use crate::error::GatewayError;

/// Which listener(s) serve an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    Main,
    Admin,
    Both,
}

impl On {
    pub fn serves(self, l: Listener) -> bool {
        matches!((self, l), (On::Both, _) | (On::Main, Listener::Main) | (On::Admin, Listener::Admin))
    }
}

/// Who answers an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    Healthz,
    /// `ready` or why not on the main listener; with each route's upstreams on the admin one.
    Readyz,
    Jwks,
    /// A SPEC §1 endpoint (its path is under `api_prefix`).
    Auth(Endpoint),
    Metrics,
    /// `GET` lists sessions, `DELETE` ends a login's.
    AdminSessions,
    /// `DELETE` ends the session named by the path's last segment.
    AdminSession,
    AdminAudit,
    /// The status page's files (`admin::status`).
    StatusPage,
}

/// One endpoint the gateway answers itself.
#[derive(Debug)]
pub struct OwnEndpoint {
    /// The path. A SPEC §1 endpoint's is under `api_prefix`, with or without one trailing
    /// slash; a path ending in `{name}` takes whatever follows the part before it.
    pub path: &'static str,
    /// The methods it answers (`HEAD` where it is `GET` without the body); any other is a 405.
    pub methods: &'static [&'static str],
    pub on: On,
    /// Only for a Bearer token with role `admin` (checked before the method: 401/403).
    pub admin_only: bool,
    pub handler: Handler,
}

const fn ep(path: &'static str, methods: &'static [&'static str], on: On, handler: Handler) -> OwnEndpoint {
    OwnEndpoint { path, methods, on, admin_only: false, handler }
}

const fn admin(path: &'static str, methods: &'static [&'static str], handler: Handler) -> OwnEndpoint {
    OwnEndpoint { path, methods, on: On::Admin, admin_only: true, handler }
}

const GET: &[&str] = &["GET", "HEAD"];
const POST: &[&str] = &["POST"];

/// Every endpoint the gateway answers itself. `POST /auth/token` is on the admin listener too,
/// for signing in to the status page (there also without `api_prefix`).
pub static ENDPOINTS: &[OwnEndpoint] = &[
    ep("/auth/token", POST, On::Both, Handler::Auth(Endpoint::Token)),
    ep("/auth/token/refresh", &["GET"], On::Main, Handler::Auth(Endpoint::Refresh)),
    ep("/external/token", POST, On::Main, Handler::Auth(Endpoint::ExternalToken)),
    ep("/external/token/verify", POST, On::Main, Handler::Auth(Endpoint::ExternalVerify)),
    ep("/auth/token/revoke", POST, On::Main, Handler::Auth(Endpoint::Revoke)),
    OwnEndpoint {
        path: "/connectors/settings",
        methods: &["GET", "PATCH"],
        on: On::Main,
        admin_only: true,
        handler: Handler::Auth(Endpoint::Settings),
    },
    ep("/.well-known/jwks.json", GET, On::Main, Handler::Jwks),
    ep("/healthz", GET, On::Both, Handler::Healthz),
    ep("/readyz", GET, On::Both, Handler::Readyz),
    ep("/metrics", GET, On::Admin, Handler::Metrics),
    admin("/admin/sessions", &["GET", "DELETE"], Handler::AdminSessions),
    admin("/admin/sessions/{session}", &["DELETE"], Handler::AdminSession),
    admin("/admin/audit", &["GET"], Handler::AdminAudit),
    ep("/", GET, On::Admin, Handler::StatusPage),
    ep("/status.js", GET, On::Admin, Handler::StatusPage),
    ep("/status.css", GET, On::Admin, Handler::StatusPage),
];

impl OwnEndpoint {
    /// Whether `path` names this endpoint; `under` is `path` under `api_prefix` without one
    /// trailing slash (read once per request: this runs for every request on the main listener).
    fn matches(&self, listener: Listener, path: &str, under: Option<&str>) -> bool {
        if let Handler::Auth(_) = self.handler {
            return under == Some(self.path) || (listener == Listener::Admin && path == self.path);
        }
        match self.fixed() {
            Some(fixed) => path.starts_with(fixed),
            None => path == self.path,
        }
    }

    /// The part before `{name}`, for a path ending in one.
    fn fixed(&self) -> Option<&'static str> {
        let path: &'static str = self.path;
        path.ends_with('}').then(|| path.rsplit_once('{').map_or(path, |(f, _)| f))
    }

    /// What follows the fixed part of a `{name}` path (the whole path for any other).
    pub fn parameter<'p>(&self, path: &'p str) -> &'p str {
        self.fixed().and_then(|f| path.strip_prefix(f)).unwrap_or(path)
    }

    fn allows(&self, m: &Method) -> Result<(), GatewayError> {
        if self.methods.contains(&m.as_str()) {
            return Ok(());
        }
        let allow = HeaderValue::from_str(&self.methods.join(", ")).unwrap_or(HeaderValue::from_static(""));
        Err(GatewayError::MethodNotAllowed { allow })
    }
}

/// The endpoint `listener` serves at `path` (normalised on the main listener), if any.
pub fn find(listener: Listener, api_prefix: &str, path: &str) -> Option<&'static OwnEndpoint> {
    let under = path.strip_prefix(api_prefix).map(|rest| rest.strip_suffix('/').unwrap_or(rest));
    ENDPOINTS.iter().find(|e| e.on.serves(listener) && e.matches(listener, path, under))
}

/// An own endpoint a request may reach, with the admin it was checked to come from.
#[derive(Debug, Clone)]
pub struct Own {
    pub endpoint: &'static OwnEndpoint,
    pub admin: Option<Arc<Identity>>,
}

/// The table's checks, in order: which endpoint, then (admin-only) the Bearer token and role
/// `admin`, then the method. `Ok(None)`: no endpoint of `listener` (a route's, or a 404). A
/// path under the admin API's first segment (`/admin/`, see [`guarded`]) is checked for an
/// admin even when nothing is there: an anonymous client learns nothing of which admin paths exist.
pub fn admit(
    listener: Listener,
    api_prefix: &str,
    path: &str,
    method: &Method,
    bearer: impl FnOnce() -> Result<Authenticated, GatewayError>,
) -> Result<Option<Own>, GatewayError> {
    let Some(endpoint) = find(listener, api_prefix, path) else {
        if guarded(listener, path) {
            require_admin(bearer())?;
        }
        return Ok(None);
    };
    let admin = if endpoint.admin_only { Some(require_admin(bearer())?) } else { None };
    endpoint.allows(method)?;
    Ok(Some(Own { endpoint, admin }))
}

/// The Bearer check's answer, then role `admin` (403 `forbidden` without it).
fn require_admin(auth: Result<Authenticated, GatewayError>) -> Result<Arc<Identity>, GatewayError> {
    let id = auth?.identity_arc().ok_or(GatewayError::TokenMissing)?;
    if !id.has_role("admin") {
        return Err(GatewayError::Forbidden("this endpoint needs role admin"));
    }
    Ok(id)
}

/// On the admin listener, whether `path` is under the first segment of an admin-only endpoint
/// of that listener alone (`/admin/`; the main listener's paths beside them may be routes').
fn guarded(listener: Listener, path: &str) -> bool {
    let mut admins = ENDPOINTS.iter().filter(|e| e.admin_only && e.on == On::Admin);
    listener == Listener::Admin
        && admins.any(|e| {
            let first = e.path[1..].find('/').map(|i| &e.path[..i + 2]);
            first.is_some_and(|f| path.starts_with(f))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(l: Listener, prefix: &str, path: &str) -> Option<Handler> {
        find(l, prefix, path).map(|e| e.handler)
    }

    #[test]
    fn paths_find_their_endpoint_on_their_listener_only() {
        use Listener::{Admin, Main};
        assert_eq!(at(Main, "/api", "/api/auth/token/"), Some(Handler::Auth(Endpoint::Token)));
        assert_eq!(at(Main, "/api", "/auth/token"), None);
        assert_eq!(at(Main, "/api", "/api/auth/token//"), None);
        assert_eq!(at(Admin, "/api", "/auth/token"), Some(Handler::Auth(Endpoint::Token)));
        assert_eq!(at(Admin, "/api", "/api/auth/token"), Some(Handler::Auth(Endpoint::Token)));
        assert_eq!(at(Admin, "/api", "/api/auth/token/refresh"), None);
        assert_eq!(at(Main, "", "/metrics"), None);
        assert_eq!(at(Main, "", "/admin/sessions"), None);
        assert_eq!(at(Main, "", "/"), None);
        assert_eq!(at(Admin, "", "/admin/sessions/abc"), Some(Handler::AdminSession));
        assert_eq!(at(Admin, "", "/admin/sessions"), Some(Handler::AdminSessions));
        assert_eq!(at(Admin, "", "/healthz/"), None);
        let e = find(Admin, "", "/admin/sessions/a/b").unwrap();
        assert_eq!(e.parameter("/admin/sessions/a/b"), "a/b");
    }

    #[test]
    fn admin_only_is_checked_before_the_method_and_guards_its_prefix() {
        let none = || Err(GatewayError::TokenMissing);
        let admit = |path, m: &Method, bearer: fn() -> Result<Authenticated, GatewayError>| {
            admit(Listener::Admin, "", path, m, bearer)
        };
        assert!(matches!(admit("/admin/sessions", &Method::PUT, none), Err(GatewayError::TokenMissing)));
        assert!(matches!(admit("/admin/nothing", &Method::GET, none), Err(GatewayError::TokenMissing)));
        assert!(matches!(admit("/admin", &Method::GET, none), Ok(None)));
        let anonymous = || Ok(Authenticated::anonymous());
        assert!(matches!(admit("/admin/audit", &Method::GET, anonymous), Err(GatewayError::TokenMissing)));
        match admit("/healthz", &Method::POST, none) {
            Err(GatewayError::MethodNotAllowed { allow }) => assert_eq!(allow, "GET, HEAD"),
            _ => panic!("a 405"),
        }
        assert!(matches!(admit("/healthz", &Method::HEAD, none), Ok(Some(_))));
    }
}
