//! hyper's path forwarding: a request (hyper's types) to its route's upstream as the policy
//! core's plan says, through `crate::proxy`'s header policy and its byte-level exchange on the
//! connections the fast path uses (`crate::proxy::exchange`); streaming, timeouts, retries
//! (`crate::gate::retry`), upgrades.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use crate::body::{GatewayBody, LimitedBody, body_fate};
use crate::error::GatewayError;
use crate::gate::{Plan, Record, retry};
use crate::proxy::exchange::Outgoing;
use crate::proxy::{
    self, BytesBody, Failure, Forwarding, Upstream, UpstreamHead, UpstreamStream, prepare_response,
    write_upstream_request,
};
use crate::routes::Route;

/// Sends `req` to one of the route's upstreams, as `plan` says, and streams the answer back.
pub async fn forward(
    plan: &Plan<'_, '_>,
    fwd: &Forwarding,
    mut req: Request<Incoming>,
    max_body_bytes: u64,
    record: &mut Record,
) -> Result<Response<GatewayBody>, GatewayError> {
    let route = plan.route;
    let upgrade = upgrade_protocol(&req);
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let hold = req.extensions_mut().remove::<crate::activity::TunnelHold>();

    let first = route.pool.pick();
    let (parts, body) = req.into_parts();
    let target = route.upstream_path(&plan.path);
    let has_body = !http_body::Body::is_end_stream(&body);
    // A body of unknown length (chunked, or HTTP/2 without Content-Length) goes chunked.
    let chunked = has_body
        && http_body::Body::size_hint(&body).exact().is_none()
        && !parts.headers.contains_key(header::CONTENT_LENGTH);
    let head_for = |upstream: &Upstream, out: &mut Vec<u8>| {
        let head = UpstreamHead {
            method: &parts.method,
            base_path: &upstream.base_path,
            target,
            query: parts.uri.query(),
            host: &upstream.host_header,
            upgrade: upgrade.as_ref(),
            chunked,
            join_cookies: parts.version == Version::HTTP_2,
        };
        out.clear();
        write_upstream_request(out, &head, &parts.headers, fwd, &plan.auth, route);
    };
    let mut head = Vec::with_capacity(1024);
    head_for(first, &mut head);
    let asked =
        Outgoing { head_request: parts.method == http::Method::HEAD, upgrade: upgrade.is_some(), chunked };
    record.upstream = Some(first.url.clone());
    let fate = Arc::new(AtomicU8::new(body_fate::READING));
    let mut body = has_body.then(|| LimitedBody::new(body, max_body_bytes, fate.clone()));
    let mut result = send(route, first, &head, asked, &parts.method, body.as_mut()).await;
    if let Err(f) = &result {
        // Only after a failure to connect: the body is still unread.
        if let Some(second) = retry::elsewhere(f, route, first, record) {
            head_for(second, &mut head);
            result = send(route, second, &head, asked, &parts.method, body.as_mut()).await;
        }
    }
    let resp = match result {
        Ok(resp) => resp,
        Err(f) => {
            // The client's body not read to its end: its connection cannot go on.
            record.body_unread = has_body && fate.load(Ordering::Acquire) != body_fate::ENDED;
            return Err(client_side(f, &fate).into_error());
        }
    };
    match client_upgrade {
        // Only an upgrade request's answer can be a 101 (`proxy::response::parse`).
        Some(client_upgrade) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
            let (parts, body) = resp.into_parts();
            if let Some((upstream, early)) = body.into_tunnel() {
                tokio::spawn(tunnel(client_upgrade, upstream, early, hold));
            }
            Ok(Response::from_parts(parts, crate::body::empty()))
        }
        _ => Ok(relayed(resp)),
    }
}

/// Carries bytes both ways between the upgraded client connection and the upstream socket
/// (first what the upstream sent after its 101). The tunnel holds its upstream connection's
/// place (open tunnels count against the cap) and closes after the idle timeout without a
/// byte either way.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    mut upstream: UpstreamStream,
    early: bytes::Bytes,
    hold: Option<crate::activity::TunnelHold>,
) {
    let client = match client.await {
        Ok(client) => client,
        Err(e) => return tracing::debug!(error = %e, "upgrade failed"),
    };
    let mut client = TokioIo::new(client);
    let copy = async {
        client.write_all(&early).await?;
        tokio::io::copy_bidirectional(&mut client, &mut *upstream).await
    };
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

/// The response the client gets: the response header fates applied, HTTP/1.1, and the status
/// code's own reason phrase (`response::reason`): hyper writes a phrase it is given only for a
/// code without one.
fn relayed<B>(mut resp: Response<B>) -> Response<GatewayBody>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<crate::body::BoxError>,
{
    let status = resp.status().as_u16();
    prepare_response(resp.headers_mut(), status);
    *resp.version_mut() = Version::HTTP_11;
    if resp.status().canonical_reason().is_some() {
        resp.extensions_mut().remove::<hyper::ext::ReasonPhrase>();
    }
    resp.map(|b| Either::Right(crate::body::Streamed::new(b)))
}

/// One attempt against one upstream, bounded by the route's timeout; feeds passive health.
async fn send(
    route: &Route,
    upstream: &Upstream,
    head: &[u8],
    req: Outgoing,
    method: &http::Method,
    body: Option<&mut LimitedBody>,
) -> Result<Response<BytesBody>, Failure> {
    let _in_flight = upstream.start_request();
    let started = std::time::Instant::now();
    let has_body = body.is_some();
    let resend = |f: &Failure, reused: bool| retry::may_resend(f, reused, method, has_body);
    let exchange = proxy::exchange::send(&upstream.conns, head, req, body, resend);
    let result = tokio::time::timeout(route.timeout, exchange).await.unwrap_or(Err(Failure::Timeout));
    retry::observe(route, upstream, started, result.as_ref().map(|_| ()));
    result
}

/// A failed exchange whose cause was the client's body (too large, broken off, badly framed)
/// is the client's failure, whatever the upstream call reported.
fn client_side(f: Failure, fate: &AtomicU8) -> Failure {
    match (f, fate.load(Ordering::Acquire)) {
        (Failure::Timeout, _) => Failure::Timeout,
        (_, body_fate::TOO_LARGE) => Failure::TooLarge,
        (_, body_fate::CLIENT_FAILED) => {
            Failure::Client("the request body broke off or its framing is invalid".into())
        }
        (f, _) => f,
    }
}

/// The protocol of an HTTP/1.1 WebSocket upgrade (`Connection: upgrade` + `Upgrade: websocket`),
/// the only one tunnelled: any other `Upgrade` (h2c included) is dropped as hop-by-hop and the
/// request served as plain HTTP.
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
    let upgrade =
        req.headers().get(header::UPGRADE).filter(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if wants { upgrade.cloned() } else { None }
}
