//! The policy core: what a request may do, decided once for both transports. hyper's path
//! (`crate::server`) and the fast path (`crate::fastpath`) each turn what they read into a
//! [`View`] and ask [`decide`]; neither re-checks what it decided. The retry policy and the
//! upstream failure type live in [`retry`], the request record (access line and metrics) in
//! [`record`].

pub mod cors;
pub mod endpoints;
pub mod own;
pub mod record;
pub mod retry;

use std::borrow::Cow;

use http::{HeaderValue, Method};

use crate::auth::Authenticated;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::routes::{AuthMode, Route, normalize_path};
use crate::runtime::Runtime;
pub use endpoints::Own;
pub use own::Listener;
pub use record::Record;

/// What the core reads of a request, whichever transport read it.
pub struct View<'a> {
    pub method: &'a Method,
    /// The request's host (already checked to be `host[:port]`), if it names one.
    pub host: Option<&'a str>,
    /// The first `Authorization` value, and how many there were.
    pub authorization: Option<&'a [u8]>,
    pub authorizations: usize,
    /// The declared body length (`None`: chunked, or none declared).
    pub content_length: Option<u64>,
    /// The `Origin` header (read only when `[cors]` is on).
    pub origin: Option<&'a [u8]>,
    /// An `Access-Control-Request-Method` header was sent (with `OPTIONS`: a preflight).
    pub preflight: bool,
}

/// What becomes of a request.
pub enum Decision<'r, 'p> {
    /// One of the gateway's own endpoints, its method (and caller, if admin-only) checked.
    Own(Own),
    Forward(Plan<'r, 'p>),
    /// A CORS preflight from an allowed origin, answered by the gateway (`cors`).
    Preflight(&'r cors::CorsPolicy),
}

/// How a request is forwarded.
pub struct Plan<'r, 'p> {
    pub route: &'r Route,
    pub auth: Authenticated,
    /// The normalised path (matched, authorised and forwarded: the same form).
    pub path: Cow<'p, str>,
}

/// Decides for the request `v` whose target's path (as sent, no query) is `path`, in one
/// order: the normalised path, a CORS preflight, own endpoint (`endpoints::admit`) or route
/// (host, prefix, method), the Bearer check, the body limit. What it learns on the way goes
/// into `record`.
pub fn decide<'r, 'p>(
    gw: &Gateway,
    rt: &'r Runtime,
    path: &'p str,
    v: &View<'_>,
    record: &mut Record,
) -> Result<Decision<'r, 'p>, GatewayError> {
    let path = normalize_path(path)?;
    if let Cow::Owned(p) = &path {
        record.normalised = Some(p.clone());
    }
    // Before the Bearer check: a browser sends no credentials with a preflight.
    if let Some(policy) = cors::preflight(rt, &path, v, record)? {
        return Ok(Decision::Preflight(policy));
    }
    let bearer = || gw.bearer().check_value(rt, v.authorization, v.authorizations);
    if let Some(own) = endpoints::admit(Listener::Main, &rt.api_prefix, &path, v.method, bearer)? {
        return Ok(Decision::Own(own));
    }
    let route = rt.routes.find(v.host, &path, v.method).inspect_err(|_| {
        // A 405 is the route's answer: its `cors` setting holds for it too.
        if let Some(r) = rt.routes.find_any_method(v.host, &path) {
            record.cors_off = !r.cors;
        }
    })?;
    record.set_route(route);
    let auth = match route.auth {
        // A `token` header (the refresh token's) does not change the decision (SPEC §2).
        AuthMode::Required => gw.bearer().check_value(rt, v.authorization, v.authorizations)?,
        AuthMode::Public => Authenticated::anonymous(),
    };
    record.identity = auth.identity_arc();
    // After the Bearer check: an anonymous client learns nothing about the route's limits.
    if v.content_length.is_some_and(|n| n > rt.max_body_bytes) {
        return Err(GatewayError::TooLarge);
    }
    Ok(Decision::Forward(Plan { route, auth, path }))
}

/// Whether the (normalised) path is one the gateway answers itself on the main listener.
pub fn is_own(rt: &Runtime, path: &str) -> bool {
    endpoints::find(Listener::Main, &rt.api_prefix, path).is_some()
}

/// The request id: a trusted peer's own (when valid), else a new one.
pub fn request_id(gw: &Gateway, trusted: bool, sent: Option<&[u8]>) -> HeaderValue {
    match sent {
        Some(v) if trusted && valid_request_id(v) => {
            HeaderValue::from_bytes(v).unwrap_or_else(|_| gw.new_request_id())
        }
        _ => gw.new_request_id(),
    }
}

pub fn valid_request_id(b: &[u8]) -> bool {
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
}
