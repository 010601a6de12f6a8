//! The HTTP service of one request: request id, path normalisation, dispatch to health, auth
//! endpoints or a route, and the access log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Request, Response, header};
use hyper::body::Incoming;

use crate::auth::endpoints::{self, Endpoint};
use crate::auth::{Authenticated, Identity};
use crate::body::GatewayBody;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::health;
use crate::metrics::RouteStats;
use crate::proxy::{self, Forwarding, X_REQUEST_ID};
use crate::routes::{AuthMode, normalize_path, valid_host};
use crate::runtime::Runtime;

/// Every endpoint the gateway answers itself: path (auth paths under `api_prefix`), methods,
/// and whether it is on the admin listener only. `docs/openapi.yaml` must describe exactly these.
pub const OWN_ENDPOINTS: &[(&str, &[&str], bool)] = &[
    ("/auth/token", &["POST"], false),
    ("/auth/token/refresh", &["GET"], false),
    ("/external/token", &["POST"], false),
    ("/external/token/verify", &["POST"], false),
    ("/auth/token/revoke", &["POST"], false),
    ("/connectors/settings", &["GET", "PATCH"], false),
    ("/.well-known/jwks.json", &["GET"], false),
    ("/healthz", &["GET"], false),
    ("/readyz", &["GET"], false),
    ("/metrics", &["GET"], true),
];

/// What the listener knows about a connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The peer's address as a header value (for `X-Forwarded-For`), made once per connection.
    pub peer_header: HeaderValue,
    pub tls: bool,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        let peer_header =
            HeaderValue::from_str(&peer.ip().to_string()).unwrap_or(HeaderValue::from_static("-"));
        Self { peer, peer_header, tls }
    }
}

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Main,
    Admin,
}

/// Marks a request whose HTTP/1 framing the listener's watch found ambiguous (a repeated
/// `Content-Length`, or one beside `Transfer-Encoding`): it is refused and its connection
/// closed, as nothing after it can be trusted.
#[derive(Debug, Clone, Copy)]
pub struct AmbiguousFraming;

/// The request head's size as written in HTTP/1.1 (request line, `name: value` lines).
fn head_size<B>(req: &Request<B>) -> usize {
    let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let line = req.method().as_str().len() + target + 12;
    req.headers().iter().fold(line + 2, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

/// No Transfer-Encoding header, or exactly one `chunked` coding in it.
fn plain_chunked(headers: &http::HeaderMap) -> bool {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(crate::auth::tokens::trim_spaces)
        .filter(|c| !c.is_empty());
    match codings.next() {
        None => !headers.contains_key(header::TRANSFER_ENCODING),
        Some(c) => c.eq_ignore_ascii_case(b"chunked") && codings.next().is_none(),
    }
}

/// What one request did, for its access-log line and metrics.
#[derive(Default)]
pub struct Trail {
    pub route: Option<Arc<str>>,
    pub stats: Option<Arc<RouteStats>>,
    pub upstream: Option<Arc<str>>,
    pub identity: Option<Arc<Identity>>,
    /// The normalised path, when normalising changed it.
    pub normalised: Option<String>,
}

pub async fn handle(
    gw: Arc<Gateway>,
    conn: ConnInfo,
    listener: Listener,
    req: Request<Incoming>,
) -> Result<Response<GatewayBody>, std::convert::Infallible> {
    let started = Instant::now();
    let rt = gw.runtime();
    let trusted = rt.is_trusted(conn.peer.ip());
    let request_id = match req.headers().get(&X_REQUEST_ID) {
        Some(id) if trusted && valid_request_id(id) => id.clone(),
        _ => gw.new_request_id(),
    };
    let method = req.method().clone();
    let ambiguous = req.extensions().get::<AmbiguousFraming>().is_some();
    let coding = !plain_chunked(req.headers());
    let oversized = head_size(&req) > rt.max_header_bytes;
    // Nothing after these can be framed. A refused CONNECT is followed by the bytes meant for
    // the tunnel: none of them is a request.
    let close = ambiguous
        || coding
        || oversized
        || (method == http::Method::CONNECT && req.version() <= http::Version::HTTP_11);
    let uri = req.uri().clone();
    let mut trail = Trail::default();
    let result = match listener {
        _ if ambiguous => Err(GatewayError::Malformed("ambiguous body framing".into())),
        // hyper removes the chunked framing; another coding (gzip, chunked) would reach the
        // upstream as if it were the content, and `chunked, chunked` would leave one framing in.
        _ if coding => Err(GatewayError::Malformed("transfer codings other than one chunked".into())),
        // hyper counts HTTP/1 header fields itself; HTTP/2 has only a byte limit there. And
        // hyper checks its byte limit only while a head is incomplete: one that arrives in a
        // single large read (its buffer grows with earlier bodies) is parsed whole.
        _ if req.headers().len() > rt.max_headers || oversized => Err(GatewayError::HeadTooLarge),
        Listener::Main => dispatch(&gw, &rt, &conn, trusted, &request_id, req, &mut trail).await,
        Listener::Admin => admin(&gw, &rt, req).await,
    };
    let mut resp = result.unwrap_or_else(|e| {
        if e.status().is_server_error() {
            tracing::warn!(request_id = ?request_id, error = %e, "request failed");
        } else {
            tracing::debug!(request_id = ?request_id, error = %e, "request refused");
        }
        e.into_response()
    });
    resp.headers_mut().insert(X_REQUEST_ID.clone(), request_id.clone());
    if close {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let took = started.elapsed();
    let status = resp.status().as_u16();
    if listener == Listener::Main {
        trail.stats.as_deref().unwrap_or(&gw.metrics.gateway).record(&method, status, took);
    }
    log_access(AccessLine {
        request_id: &request_id,
        client: conn.peer,
        method: &method,
        path: trail.normalised.as_deref().unwrap_or(uri.path()),
        route: trail.route.as_deref(),
        status,
        bytes: http_body::Body::size_hint(resp.body()).exact(),
        took,
        upstream: trail.upstream.as_deref(),
        login: trail.identity.as_deref().map(|i| i.login.as_str()),
    });
    Ok(resp)
}

/// One request's access-log line (never a credential: no token, password or cookie).
pub struct AccessLine<'a> {
    pub request_id: &'a HeaderValue,
    pub client: SocketAddr,
    pub method: &'a http::Method,
    pub path: &'a str,
    pub route: Option<&'a str>,
    pub status: u16,
    pub bytes: Option<u64>,
    pub took: std::time::Duration,
    pub upstream: Option<&'a str>,
    pub login: Option<&'a str>,
}

pub fn log_access(l: AccessLine<'_>) {
    tracing::info!(
        target: "access",
        // A plain string (Debug would quote it); only visible ASCII ids get here.
        request_id = l.request_id.to_str().unwrap_or("-"),
        client = %l.client,
        method = %l.method,
        path = l.path,
        route = l.route.unwrap_or("-"),
        status = l.status,
        bytes = l.bytes,
        micros = l.took.as_micros() as u64,
        upstream = l.upstream,
        login = l.login,
    );
}

pub fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
}

async fn admin(
    gw: &Arc<Gateway>,
    rt: &Runtime,
    req: Request<Incoming>,
) -> Result<Response<GatewayBody>, GatewayError> {
    match req.uri().path() {
        "/healthz" => health::healthz(req.method()),
        "/readyz" => health::readyz(gw, rt, req.method()).await,
        "/metrics" => health::metrics(gw, req.method()),
        _ => Err(GatewayError::NoRoute),
    }
}

async fn dispatch(
    gw: &Gateway,
    rt: &Runtime,
    conn: &ConnInfo,
    trusted: bool,
    request_id: &HeaderValue,
    req: Request<Incoming>,
    trail: &mut Trail,
) -> Result<Response<GatewayBody>, GatewayError> {
    // A clone of the URI (reference-counted, no copy) so the normalised path can outlive `req`.
    let uri = req.uri().clone();
    let path = normalize_path(uri.path())?;
    if let std::borrow::Cow::Owned(p) = &path {
        trail.normalised = Some(p.clone());
    }
    let host = request_host(&req)?;
    if is_own(rt, &path) {
        return own(gw, rt, conn, &path, req.map(http_body_util::Either::Left)).await;
    }
    let route = rt.routes.find(host.as_ref().and_then(|h| h.to_str().ok()), &path, req.method())?;
    trail.route = Some(route.name.clone());
    trail.stats = route.stats.get().cloned();
    let auth = match route.auth {
        AuthMode::Required => {
            // A token in two places is ambiguous: refuse rather than pick one.
            if req.headers().contains_key("token") {
                return Err(GatewayError::TokenInvalid("token header on a Bearer route"));
            }
            let auth = gw.authenticate(rt, req.headers())?;
            trail.identity = auth.identity_arc();
            auth
        }
        AuthMode::Public => Authenticated::anonymous(),
    };
    let fwd = Forwarding {
        peer_header: conn.peer_header.clone(),
        trusted_peer: trusted,
        proto: if conn.tls { "https" } else { "http" },
        host,
        request_id: request_id.clone(),
    };
    proxy::forward(route, &auth, &fwd, req, &path, rt.max_body_bytes, &mut trail.upstream).await
}

/// Whether the (normalised) path is one the gateway answers itself on the main listener.
pub fn is_own(rt: &Runtime, path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/.well-known/jwks.json")
        || Endpoint::find(&rt.api_prefix, path).is_some()
}

/// Answers one of the gateway's own endpoints (see [`is_own`]).
pub async fn own(
    gw: &Gateway,
    rt: &Runtime,
    conn: &ConnInfo,
    path: &str,
    req: Request<endpoints::EndpointBody>,
) -> Result<Response<GatewayBody>, GatewayError> {
    match path {
        "/healthz" => health::healthz(req.method()),
        "/readyz" => health::readyz(gw, rt, req.method()).await,
        "/.well-known/jwks.json" => endpoints::jwks(rt, req.method()),
        _ => match Endpoint::find(&rt.api_prefix, path) {
            Some(ep) => {
                let client = proxy::client_address(req.headers(), conn.peer.ip(), |ip| rt.is_trusted(ip));
                endpoints::handle(gw, rt, ep, req, client).await
            }
            None => Err(GatewayError::NoRoute),
        },
    }
}

/// The request's host: the URI authority (HTTP/2, absolute-form) or the Host header. Refused
/// (400), as RFC 9112 §3.2 asks: a repeated Host, an HTTP/1.1 request without one, and a value
/// that is not `host[:port]` (userinfo, paths, lists), since routes are chosen by it.
fn request_host(req: &Request<Incoming>) -> Result<Option<HeaderValue>, GatewayError> {
    let bad = |why: &str| GatewayError::Malformed(why.into());
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(bad("more than one Host header"));
    }
    if let Some(authority) = req.uri().authority() {
        let a = authority.as_str();
        if !valid_host(a.as_bytes()) {
            return Err(bad("the request target's authority is not host[:port]"));
        }
        // HTTP/2 with both: they must name the same host (RFC 9113 §8.3.1). In HTTP/1.1 the
        // absolute-form's authority replaces Host (RFC 9112 §3.2.3).
        if req.version() == http::Version::HTTP_2
            && header.is_some_and(|h| !h.as_bytes().eq_ignore_ascii_case(a.as_bytes()))
        {
            return Err(bad("Host differs from :authority"));
        }
        return Ok(HeaderValue::from_str(a).ok());
    }
    match header {
        // An empty Host is allowed for a target without authority; it names no host.
        Some(h) if h.is_empty() => Ok(None),
        Some(h) if valid_host(h.as_bytes()) => Ok(Some(h.clone())),
        Some(_) => Err(bad("the Host header is not host[:port]")),
        None if req.version() == http::Version::HTTP_11 => Err(bad("an HTTP/1.1 request without Host")),
        None => Ok(None),
    }
}
