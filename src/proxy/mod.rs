//! Forwarding a request to its route's upstream: headers, streaming, timeouts, upgrades.

mod headers;
mod pool;
mod upstream;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

pub use headers::{
    Forwarding, HOP_BY_HOP, X_REQUEST_ID, client_address, is_gateway_owned, is_hop_by_hop, strip_hop_by_hop,
};
pub use pool::SendError;
pub use pool::UpstreamBody;
pub use upstream::{Balance, Upstream, UpstreamPool, spawn_upkeep};

use crate::auth::Authenticated;
use crate::body::{GatewayBody, LimitedBody, body_fate};
use crate::error::GatewayError;
use crate::routes::Route;

/// Sends `req` to one of the route's upstreams and streams the answer back.
pub async fn forward(
    route: &Route,
    auth: &Authenticated,
    fwd: &Forwarding,
    mut req: Request<Incoming>,
    path: &str,
    max_body_bytes: u64,
    served_by: &mut Option<Arc<str>>,
) -> Result<Response<GatewayBody>, GatewayError> {
    if let Some(len) = req.headers().get(header::CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| GatewayError::Malformed("bad Content-Length".into()))?;
        if len > max_body_bytes {
            return Err(GatewayError::TooLarge);
        }
    }
    let upgrade = upgrade_protocol(&req);
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let hold = req.extensions_mut().remove::<crate::listener::TunnelHold>();

    let first = route.pool.pick();
    let (mut parts, body) = req.into_parts();
    parts.version = Version::HTTP_11;
    let target = route.upstream_path(path);
    headers::prepare_upstream_request(
        &mut parts.headers,
        fwd,
        auth,
        route.forward_authorization,
        &first.host_header,
        &route.upstream_headers,
        upgrade,
    );
    // hyper's client sends a GET or HEAD body of unknown length (chunked, or HTTP/2 without
    // Content-Length) as no body at all unless the request says chunked: say it.
    if !http_body::Body::is_end_stream(&body)
        && http_body::Body::size_hint(&body).exact().is_none()
        && !parts.headers.contains_key(header::CONTENT_LENGTH)
    {
        parts.headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    }
    // One retry on another upstream, only when nothing can have been sent: a connect failure of
    // an idempotent request without a body. The copy is made only when a retry is possible.
    let may_retry = route.pool.upstreams.len() > 1
        && is_idempotent(&parts.method)
        && http_body::Body::is_end_stream(&body);
    let client_uri = parts.uri.clone();
    parts.uri = upstream_uri(first, target, &client_uri)?;
    let fate = Arc::new(AtomicU8::new(body_fate::READING));
    let req = Request::from_parts(parts, LimitedBody::new(body, max_body_bytes, fate.clone()));
    let retry = may_retry.then(|| pool::bodiless_copy(&req));
    *served_by = Some(first.url.clone());
    let mut result = send(route, first, req).await;
    if let (Err(Failure::Connect(_)), Some(mut req)) = (&result, retry) {
        let second = route.pool.pick_other(first);
        tracing::info!(route = %route.name, from = %first.url, to = %second.url, "retrying after connect failure");
        req.headers_mut().insert(header::HOST, second.host_header.clone());
        *req.uri_mut() = upstream_uri(second, target, &client_uri)?;
        *served_by = Some(second.url.clone());
        result = send(route, second, req).await;
    }
    let mut resp = match result {
        Ok(resp) => resp,
        Err(Failure::Timeout) => return Err(GatewayError::UpstreamTimeout),
        Err(_) if fate.load(Ordering::Acquire) == body_fate::TOO_LARGE => return Err(GatewayError::TooLarge),
        Err(_) if fate.load(Ordering::Acquire) == body_fate::CLIENT_FAILED => {
            return Err(GatewayError::Malformed(
                "the request body broke off or its framing is invalid".into(),
            ));
        }
        Err(Failure::Connect(e) | Failure::Other(e)) => return Err(GatewayError::UpstreamUnavailable(e)),
    };

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(GatewayError::UpstreamUnavailable("101 without an upgrade request".into()));
        };
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            // The tunnel holds its connection's slot (open tunnels count against the cap) and
            // closes after the idle timeout without a byte either way.
            match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok((client, upstream)) => {
                    let (mut c, mut u) = (TokioIo::new(client), TokioIo::new(upstream));
                    let copy = tokio::io::copy_bidirectional(&mut c, &mut u);
                    match hold {
                        Some(hold) => tokio::select! {
                            _ = copy => {}
                            _ = hold.idle() => tracing::debug!("tunnel idle timeout"),
                        },
                        None => {
                            let _ = copy.await;
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
            }
        });
        let (parts, _) = resp.into_parts();
        return Ok(Response::from_parts(parts, crate::body::empty()));
    }
    if resp.headers().contains_key(header::TRANSFER_ENCODING)
        && resp.headers().contains_key(header::CONTENT_LENGTH)
    {
        // Both framings at once (RFC 9112 §6.3: a smuggling sign); the connection is dropped.
        return Err(GatewayError::UpstreamUnavailable(
            "response with Content-Length and Transfer-Encoding".into(),
        ));
    }
    strip_hop_by_hop(resp.headers_mut());
    Ok(resp.map(Either::Right))
}

enum Failure {
    Connect(String),
    Timeout,
    Other(String),
}

/// One attempt against one upstream, bounded by the route's timeout; feeds passive health.
async fn send(
    route: &Route,
    upstream: &Upstream,
    req: Request<LimitedBody>,
) -> Result<Response<UpstreamBody>, Failure> {
    let _in_flight = upstream.start_request();
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(route.timeout, upstream.conns.send(req)).await;
    if let Some(stats) = route.stats.get() {
        stats.upstream_latency.observe(started.elapsed());
    }
    match result {
        Err(_) => {
            tracing::warn!(route = %route.name, upstream = %upstream.url, "upstream timed out");
            Err(Failure::Timeout)
        }
        Ok(Err(SendError::Connect(e))) => {
            tracing::warn!(route = %route.name, upstream = %upstream.url, error = %e, "upstream connect failed");
            upstream.record_connect(false);
            Err(Failure::Connect(e))
        }
        Ok(Err(SendError::Other(e))) => {
            tracing::warn!(route = %route.name, upstream = %upstream.url, error = %e, "upstream request failed");
            Err(Failure::Other(e))
        }
        Ok(Ok(resp)) => {
            upstream.record_connect(true);
            Ok(resp)
        }
    }
}

/// The origin-form target sent upstream: the upstream's base path, the normalised path and the
/// client's query. When that is exactly what the client sent, its (shared) bytes are reused.
fn upstream_uri(upstream: &Upstream, target: &str, client: &Uri) -> Result<Uri, GatewayError> {
    if upstream.base_path.is_empty() && client.path() == target && client.scheme().is_none() {
        if let Some(pq) = client.path_and_query() {
            return Ok(Uri::from(pq.clone()));
        }
    }
    let query = client.query();
    let mut uri =
        String::with_capacity(upstream.base_path.len() + target.len() + query.map_or(0, |q| q.len() + 1));
    uri.push_str(&upstream.base_path);
    uri.push_str(target);
    if let Some(q) = query {
        uri.push('?');
        uri.push_str(q);
    }
    Uri::try_from(uri).map_err(|e| GatewayError::Malformed(format!("upstream uri: {e}")))
}

pub fn is_idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// The protocol of an HTTP/1.1 `Upgrade` request (`Connection: upgrade` + `Upgrade: x`).
fn upgrade_protocol<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let wants = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if wants { req.headers().get(header::UPGRADE).cloned() } else { None }
}
