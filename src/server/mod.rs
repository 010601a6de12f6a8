//! The HTTP service of one request: request id, path normalisation, dispatch to health, auth
//! endpoints or a route, and the access log. Forwarding to a route's upstream is `forward`.

mod forward;

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Request, Response, header};
use hyper::body::Incoming;

use crate::body::GatewayBody;
use crate::error::GatewayError;
pub use crate::gate::own::{ConnInfo, Listener};
use crate::gate::{self, Decision, Record, endpoints, own, record};
use crate::gateway::Gateway;
use crate::proxy::{Forwarding, X_REQUEST_ID};
use crate::routes::valid_host;
use crate::runtime::Runtime;

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

pub async fn handle(
    gw: Arc<Gateway>,
    conn: ConnInfo,
    listener: Listener,
    req: Request<Incoming>,
) -> Result<Response<GatewayBody>, std::convert::Infallible> {
    let mut record = Record::new(Instant::now());
    let rt = gw.runtime();
    let trusted = rt.is_trusted(conn.peer.ip());
    let request_id =
        gate::request_id(&gw, trusted, req.headers().get(&X_REQUEST_ID).map(HeaderValue::as_bytes));
    let method = req.method().clone();
    let ambiguous = req.extensions().get::<AmbiguousFraming>().is_some();
    let coding = !plain_chunked(req.headers());
    let oversized = head_size(&req) > rt.max_header_bytes;
    // Nothing after these can be framed. A refused CONNECT is followed by the bytes meant for
    // the tunnel: none of them is a request.
    let mut close = ambiguous
        || coding
        || oversized
        || (method == http::Method::CONNECT && req.version() <= http::Version::HTTP_11);
    let h1 = req.version() <= http::Version::HTTP_11;
    let uri = req.uri().clone();
    // Kept for the answer (a reference-counted clone); not even looked up when `[cors]` is off.
    let origin = match (&rt.cors, listener) {
        (Some(_), Listener::Main) => req.headers().get(header::ORIGIN).cloned(),
        _ => None,
    };
    let result = match listener {
        _ if ambiguous => Err(GatewayError::Malformed("ambiguous body framing".into())),
        // hyper removes the chunked framing; another coding (gzip, chunked) would reach the
        // upstream as if it were the content, and `chunked, chunked` would leave one framing in.
        _ if coding => Err(GatewayError::Malformed("transfer codings other than one chunked".into())),
        // hyper counts HTTP/1 header fields itself; HTTP/2 has only a byte limit there. And
        // hyper checks its byte limit only while a head is incomplete: one that arrives in a
        // single large read (its buffer grows with earlier bodies) is parsed whole.
        _ if req.headers().len() > rt.max_headers || oversized => Err(GatewayError::HeadTooLarge),
        Listener::Main => dispatch(&gw, &rt, &conn, trusted, &request_id, req, &mut record).await,
        Listener::Admin => Box::pin(admin(&gw, &rt, &conn, &request_id, req)).await,
    };
    let mut resp = result.unwrap_or_else(|e| {
        record::log_failure(&e, &request_id);
        e.into_response()
    });
    // A body that had not all arrived when the gateway answered is not read on: the answer
    // says the connection closes (the fast path's rule too; hyper would close it unsaid).
    close |= h1 && record.body_unread;
    if listener == Listener::Main {
        // An upstream's answer streams its body (`forward`); the gateway's are whole.
        let from_upstream = matches!(resp.body(), http_body_util::Either::Right(_));
        gate::cors::for_request(&rt, origin.as_ref().map(HeaderValue::as_bytes), &record)
            .apply(resp.headers_mut(), from_upstream);
    }
    // Marked sensitive, so HTTP/2 sends it as a literal never indexed: each value is new, and
    // indexing it would search and churn the HPACK tables of both ends for every response
    // (HTTP/1 writes it as it is).
    let mut id = request_id.clone();
    id.set_sensitive(true);
    resp.headers_mut().insert(X_REQUEST_ID.clone(), id);
    if close {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let status = resp.status().as_u16();
    let bytes = http_body::Body::size_hint(resp.body()).exact();
    record.finish(
        &gw,
        listener == Listener::Main,
        &request_id,
        conn.peer,
        &method,
        uri.path(),
        status,
        bytes,
    );
    Ok(resp)
}

/// Whether a refused request's body has all arrived: what is already buffered is taken (hyper
/// does the same before it keeps such a connection), nothing waited for.
fn arrived_whole(mut body: Incoming) -> bool {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if http_body::Body::is_end_stream(&body) {
            return true;
        }
        match http_body::Body::poll_frame(std::pin::Pin::new(&mut body), &mut cx) {
            std::task::Poll::Ready(Some(Ok(_))) => continue,
            std::task::Poll::Ready(None) => return true,
            std::task::Poll::Ready(Some(Err(_))) | std::task::Poll::Pending => return false,
        }
    }
}

/// The declared `Content-Length`, when there is one readable value.
fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH).and_then(|v| crate::proxy::response::parse_length(v.as_bytes()))
}

/// The admin listener: its own endpoints only (`gate::endpoints`: health, metrics, the SPEC §7
/// admin API and status page, and `POST /auth/token` for signing in to it).
async fn admin(
    gw: &Gateway,
    rt: &Runtime,
    conn: &ConnInfo,
    request_id: &HeaderValue,
    req: Request<Incoming>,
) -> Result<Response<GatewayBody>, GatewayError> {
    let bearer = || gw.bearer().check(rt, req.headers());
    let own = endpoints::admit(Listener::Admin, &rt.api_prefix, req.uri().path(), req.method(), bearer)?
        .ok_or(GatewayError::NoRoute)?;
    own::serve(gw, rt, conn, Listener::Admin, own, request_id, req.map(http_body_util::Either::Left)).await
}

async fn dispatch(
    gw: &Gateway,
    rt: &Runtime,
    conn: &ConnInfo,
    trusted: bool,
    request_id: &HeaderValue,
    req: Request<Incoming>,
    record: &mut Record,
) -> Result<Response<GatewayBody>, GatewayError> {
    let host = request_host(&req)?;
    // Clones of the URI and method (reference-counted or inline, no copy), so the decision,
    // which borrows the path, can outlive the request moved upstream.
    let uri = req.uri().clone();
    let method = req.method().clone();
    let mut auths = req.headers().get_all(header::AUTHORIZATION).iter();
    let first = auths.next().map(HeaderValue::as_bytes);
    let view = gate::View {
        method: &method,
        host: host.as_ref().and_then(|h| h.to_str().ok()),
        authorization: first,
        authorizations: usize::from(first.is_some()) + auths.count(),
        content_length: content_length(req.headers()),
        // Not even looked up when `[cors]` is off.
        origin: rt.cors.as_ref().and_then(|_| req.headers().get(header::ORIGIN)).map(HeaderValue::as_bytes),
        preflight: rt.cors.is_some() && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD),
    };
    let decision = match gate::decide(gw, rt, uri.path(), &view, record) {
        Ok(d) => d,
        Err(e) => {
            record.body_unread = !arrived_whole(req.into_body());
            return Err(e);
        }
    };
    match decision {
        Decision::Preflight(policy) => {
            record.body_unread = !arrived_whole(req.into_body());
            Ok(policy.preflight_response())
        }
        // Boxed, as the admin listener's: an own endpoint's future (a login) is as large as a
        // forward's, and every proxied request's future would carry its room.
        Decision::Own(o) => {
            Box::pin(own::serve(
                gw,
                rt,
                conn,
                Listener::Main,
                o,
                request_id,
                req.map(http_body_util::Either::Left),
            ))
            .await
        }
        Decision::Forward(plan) => {
            let fwd = Forwarding {
                peer_header: conn.peer_header.clone(),
                trusted_peer: trusted,
                proto: if conn.tls { "https" } else { "http" },
                host,
                request_id: request_id.clone(),
            };
            forward::forward(&plan, &fwd, req, rt.max_body_bytes, record).await
        }
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
