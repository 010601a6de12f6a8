//! The fast path: plain HTTP/1.1 requests to a route, served straight from the connection's
//! bytes. The head is parsed in place (httparse, as hyper does), the Bearer check runs on the
//! Authorization value's bytes, and the upstream head is written from the client's bytes with
//! the header rules of SPEC §2, to a pooled plain socket; the response head is rewritten the
//! same way and its body relayed as it is framed. No header map, request object or body channel
//! is built: that is where hyper's path spends most of its time per request.
//!
//! It takes only what it fully understands (see [`request::parse`]). Anything else, an own
//! endpoint, a path or route hyper's path answers with an error, is handed to hyper with the
//! bytes read so far, and hyper serves the rest of the connection as before: the hardening of
//! that path (framing watch, limits, upgrades, HTTP/2) applies unchanged.

mod date;
mod request;
mod response;

use std::io;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use http::{HeaderValue, Method};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticated;
use crate::auth::endpoints::EndpointBody;
use crate::error::GatewayError;
use crate::framing::{ChunkedScan, Scanned};
use crate::gateway::Gateway;
use crate::listener::{Activity, Busy, Responding};
use crate::proxy::{SendError, Upstream, X_REQUEST_ID, is_idempotent};
use crate::routes::{AuthMode, Route, normalize_path};
use crate::runtime::Runtime;
use crate::server::{self, ConnInfo};
use request::{Forward, Parsed, RequestHead};
use response::{Framing, ResponseHead};

/// Reads a head may take before hyper gets it: hyper bounds a slow head's parsing work.
const MAX_HEAD_READS: u32 = 4;
/// Reads a response head may take (each one re-parses it): more is refused (502).
const MAX_RESPONSE_HEAD_READS: u32 = 64;
/// An upstream response head larger than this is refused (502).
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// How long closing a connection cleanly may take (a peer that reads nothing cannot stall it).
const SHUTDOWN_FOR: std::time::Duration = std::time::Duration::from_secs(2);
/// Buffer capacity a connection keeps between requests.
const RETAIN: usize = 32 * 1024;
/// Bytes relayed per read.
const CHUNK: usize = 16 * 1024;

/// What one connection's fast path works with.
pub struct Lane<'a> {
    pub gw: &'a Arc<Gateway>,
    pub info: &'a ConnInfo,
    pub activity: &'a Arc<Activity>,
    pub drain: &'a CancellationToken,
    /// The head limits of the snapshot the connection started with (as hyper's are).
    pub max_head: usize,
    pub max_headers: usize,
}

pub enum Outcome {
    /// The connection is finished.
    Close,
    /// hyper serves the rest of the connection, starting with the bytes left in the buffer.
    Handoff,
}

/// Serves requests from `io` until the connection ends or a request needs hyper. `buf` holds
/// what has been read and not yet served.
pub async fn serve<IO>(io: &mut IO, buf: &mut BytesMut, lane: &Lane<'_>) -> Outcome
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut x = Exchange {
        out: Vec::with_capacity(2048),
        up: BytesMut::new(),
        spare: Vec::new(),
        resp_spare: Vec::new(),
        drained: false,
    };
    loop {
        let mut reads = 0;
        let head = loop {
            if !buf.is_empty() {
                match request::parse(buf, lane.max_headers, std::mem::take(&mut x.spare)) {
                    Parsed::Complete(head) if head.len > lane.max_head => {
                        return x.unreadable(io, GatewayError::HeadTooLarge, lane).await;
                    }
                    Parsed::Complete(head) => break head,
                    Parsed::Unfit => return Outcome::Handoff,
                    Parsed::Malformed(why) => {
                        return x.unreadable(io, GatewayError::Malformed(why.into()), lane).await;
                    }
                    Parsed::Partial if buf.len() > lane.max_head => {
                        return x.unreadable(io, GatewayError::HeadTooLarge, lane).await;
                    }
                    Parsed::TooManyHeaders => {
                        return x.unreadable(io, GatewayError::HeadTooLarge, lane).await;
                    }
                    // A head trickling in a byte at a time: hyper's path reads the rest.
                    Parsed::Partial if reads >= MAX_HEAD_READS => return Outcome::Handoff,
                    Parsed::Partial => {}
                }
            }
            // Between requests, a drain closes the connection (the listener reads the flag).
            let between = buf.is_empty();
            lane.activity.set_between_requests(between);
            if between && lane.drain.is_cancelled() {
                return Outcome::Close;
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(4096);
            }
            let read = io.read_buf(buf).await;
            lane.activity.set_between_requests(false);
            match read {
                Ok(0) | Err(_) => return Outcome::Close,
                Ok(_) => reads += 1,
            }
        };
        // The snapshot current when the request arrived (a reload applies from the next one).
        let rt = lane.gw.runtime();
        let Some(plan) = plan(&rt, buf, &head) else { return Outcome::Handoff };
        if !lane.activity.claim_request() {
            // The framing watch refuses this request: hyper's path answers it.
            return Outcome::Handoff;
        }
        let busy = lane.activity.enter();
        let keep = match plan {
            Plan::Route { route, normalised } => {
                x.serve(io, buf, &head, &rt, Target { route, normalised }, lane, busy).await
            }
            Plan::Own(path) => x.own(io, buf, &head, &rt, &path, lane).await,
            Plan::Refuse(e) => x.refuse(io, buf, &head, e, lane).await,
        };
        x.trim();
        if buf.is_empty() && buf.capacity() > RETAIN {
            *buf = BytesMut::new();
        }
        buf.advance(head.len + head.body_here(buf.len()));
        x.spare = head.headers;
        if !keep {
            // A clean end (TLS close_notify, then FIN), as hyper's path ends a connection.
            let _ = tokio::time::timeout(SHUTDOWN_FOR, io.shutdown()).await;
            return Outcome::Close;
        }
    }
}

/// What the fast path decided for a request before taking it on.
enum Plan<'r> {
    /// Forward on this route; `normalised` when normalising changed the path.
    Route { route: &'r Route, normalised: Option<String> },
    /// One of the gateway's own endpoints, at this (normalised) path.
    Own(String),
    /// Answered with this error without going further.
    Refuse(GatewayError),
}

/// What becomes of a request, as hyper's path (`server::dispatch`) would decide it; `None` for
/// what the fast path leaves to hyper (an own endpoint's body larger than it reads).
fn plan<'r>(rt: &'r Runtime, buf: &[u8], head: &RequestHead) -> Option<Plan<'r>> {
    let raw_path = std::str::from_utf8(&buf[head.path.clone()]).ok()?;
    let path = match normalize_path(raw_path) {
        Ok(p) => p,
        Err(e) => return Some(Plan::Refuse(e)),
    };
    if server::is_own(rt, &path) {
        if head.content_length > crate::auth::endpoints::MAX_JSON_BYTES as u64 {
            return None;
        }
        return Some(Plan::Own(path.into_owned()));
    }
    let host = std::str::from_utf8(&buf[head.host.clone()]).ok()?;
    let route = match rt.routes.find(Some(host), &path, &head.method) {
        Ok(route) => route,
        Err(e) => return Some(Plan::Refuse(e)),
    };
    let normalised = match path {
        std::borrow::Cow::Owned(p) => Some(p),
        std::borrow::Cow::Borrowed(_) => None,
    };
    Some(Plan::Route { route, normalised })
}

/// Where a response stands, for the connection's timeouts (the value is only held).
#[allow(dead_code)]
enum Sending {
    Head(Busy),
    Body(Responding),
    Done,
}

/// A route and the path sent on it.
struct Target<'r> {
    route: &'r Route,
    /// The normalised path, when normalising changed it.
    normalised: Option<String>,
}

/// Buffers reused from request to request on one connection.
struct Exchange {
    /// The head (and first body bytes) being written, upstream or to the client.
    out: Vec<u8>,
    /// What the upstream sent.
    up: BytesMut,
    spare: Vec<request::Header>,
    resp_spare: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
    /// The last upstream read left the socket empty (it read less than it had room for).
    drained: bool,
}

/// How an exchange with the upstream failed.
enum Failure {
    /// Nothing was sent: no connection.
    Connect(String),
    /// The connection ended before a byte of response (on a reused one: closed while idle).
    Stale,
    Other(String),
    Timeout,
}

impl Failure {
    fn into_error(self) -> GatewayError {
        match self {
            Failure::Timeout => GatewayError::UpstreamTimeout,
            Failure::Connect(e) | Failure::Other(e) => GatewayError::UpstreamUnavailable(e),
            Failure::Stale => GatewayError::UpstreamUnavailable("connection closed early".into()),
        }
    }
}

impl Exchange {
    /// Gives back what one large request or response made the buffers grow to, so an idle
    /// kept-alive connection holds little.
    fn trim(&mut self) {
        if self.out.capacity() > RETAIN {
            self.out = Vec::with_capacity(2048);
        }
        if self.up.capacity() > RETAIN {
            self.up = BytesMut::new();
        }
    }

    /// Serves one request; false when the connection must close after it. `busy` keeps the
    /// connection's timeouts off until the response head is out (then, as on hyper's path, a
    /// body that stops moving for the idle timeout ends the connection).
    #[allow(clippy::too_many_arguments)] // the request's parts, borrowed from three owners
    async fn serve<IO>(
        &mut self,
        io: &mut IO,
        buf: &[u8],
        head: &RequestHead,
        rt: &Runtime,
        target: Target<'_>,
        lane: &Lane<'_>,
        busy: Busy,
    ) -> bool
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let started = Instant::now();
        let gw = lane.gw;
        let Target { route, normalised } = target;
        let path = normalised.as_deref().unwrap_or_else(|| raw_path(buf, head));
        let trusted = rt.is_trusted(lane.info.peer.ip());
        let request_id = request_id(gw, trusted, buf, head);
        // The body bytes already read; the rest comes from the client as it is relayed.
        let body_here = head.body_here(buf.len());
        let whole_body_here = head.whole_body_here(buf.len());
        let mut close = head.close || lane.drain.is_cancelled();
        let auth = match route.auth {
            AuthMode::Required if head.token_header => {
                Err(GatewayError::TokenInvalid("token header on a Bearer route"))
            }
            AuthMode::Required => {
                let value = head.authorization.as_ref().map(|r| &buf[r.clone()]);
                gw.authenticate_value(rt, value, head.authorizations as usize)
            }
            AuthMode::Public => Ok(Authenticated::anonymous()),
        };
        let mut upstream_used = None;
        let outcome = match auth {
            Err(e) => Err(e),
            // After the Bearer check, as on hyper's path (an anonymous client learns nothing).
            Ok(_) if head.content_length > rt.max_body_bytes => Err(GatewayError::TooLarge),
            Ok(auth) => {
                let upstream = route.pool.pick();
                upstream_used = Some(upstream);
                let peer = lane.info.peer_header.as_bytes();
                let proto: &[u8] = if lane.info.tls { b"https" } else { b"http" };
                let fwd = Forward {
                    route,
                    auth: &auth,
                    upstream_host: upstream.host_header.as_bytes(),
                    base_path: &upstream.base_path,
                    target: route.upstream_path(path),
                    peer,
                    trusted_peer: trusted,
                    proto,
                    request_id: request_id.as_bytes(),
                };
                self.out.clear();
                request::write_upstream_head(&mut self.out, buf, head, &fwd);
                self.out.extend_from_slice(&buf[head.len..head.len + body_here]);
                let body_left = head.content_length - body_here as u64;
                let retry = route.pool.upstreams.len() > 1 && is_idempotent(&head.method) && whole_body_here;
                let mut result = self.send(io, route, upstream, body_left, head).await;
                if let (Err(Failure::Connect(_)), true) = (&result, retry) {
                    let second = route.pool.pick_other(upstream);
                    tracing::info!(route = %route.name, from = %upstream.url, to = %second.url, "retrying after connect failure");
                    upstream_used = Some(second);
                    self.out.clear();
                    let fwd = Forward {
                        upstream_host: second.host_header.as_bytes(),
                        base_path: &second.base_path,
                        ..fwd
                    };
                    request::write_upstream_head(&mut self.out, buf, head, &fwd);
                    self.out.extend_from_slice(&buf[head.len..head.len + body_here]);
                    result = self.send(io, route, second, 0, head).await;
                }
                result.map(|r| (r, auth)).map_err(Failure::into_error)
            }
        };
        let (status, bytes, login) = match outcome {
            Ok(((stream, resp_head, upstream), auth)) => {
                // A drain that began while the upstream answered: the client learns it here.
                close |= resp_head.framing == Framing::UntilClose || lane.drain.is_cancelled();
                let relayed =
                    self.relay(io, stream, &resp_head, upstream, request_id.as_bytes(), close, busy).await;
                let login = auth.identity_arc();
                let status = resp_head.status;
                self.resp_spare = resp_head.headers;
                match relayed {
                    Ok(bytes) => (status, bytes, login),
                    Err(e) => {
                        tracing::debug!(error = %e, "response relay failed");
                        close = true;
                        (status, None, login)
                    }
                }
            }
            Err(e) => {
                // A body the client is still sending cannot be skipped without reading it.
                close |= !whole_body_here || lane.drain.is_cancelled();
                let status = e.status().as_u16();
                log_failure(&e, &request_id);
                let bytes = self.answer(io, e, head, request_id.as_bytes(), close).await;
                if bytes.is_none() {
                    close = true;
                }
                (status, bytes, None)
            }
        };
        let done = Done {
            path,
            route: Some(route),
            status,
            bytes,
            upstream: upstream_used.map(|u| &*u.url),
            login: login.as_deref().map(|i| i.login.as_str()),
        };
        finish(lane, head, &request_id, started, done);
        !close
    }

    /// Sends the request in `out` (head and the body bytes already read), then the rest of the
    /// body from the client, and reads the response head; bounded by the route's timeout.
    async fn send<'u, IO>(
        &mut self,
        io: &mut IO,
        route: &Route,
        upstream: &'u Upstream,
        body_left: u64,
        head: &RequestHead,
    ) -> Result<(TcpStream, ResponseHead, &'u Upstream), Failure>
    where
        IO: AsyncRead + Unpin,
    {
        let _in_flight = upstream.start_request();
        let started = Instant::now();
        // Resending what was already written: a safe method, or an idempotent one without a
        // body (RFC 9110 §9.2.2), as hyper's path does.
        let resend = body_left == 0
            && (matches!(head.method, Method::GET | Method::HEAD | Method::OPTIONS)
                || (head.content_length == 0 && crate::proxy::is_idempotent(&head.method)));
        let attempt = async {
            loop {
                let (mut stream, reused) = match upstream.conns.take_stream() {
                    Some(s) => (s, true),
                    None => match upstream.conns.open_stream().await {
                        Ok(s) => (s, false),
                        Err(SendError::Connect(e) | SendError::Other(e)) => return Err(Failure::Connect(e)),
                    },
                };
                // Let the other requests that are ready be read first, so their upstream writes
                // go out together (see `proxy::pool`: one origin wake-up per batch).
                tokio::task::yield_now().await;
                match self.exchange(io, &mut stream, body_left, head).await {
                    // A kept-alive socket the upstream closed as it was taken: once more on a new
                    // one, where sending the request again is safe.
                    Err(Failure::Stale) if reused && resend => continue,
                    Err(e) => return Err(e),
                    Ok(resp) => return Ok((stream, resp)),
                }
            }
        };
        let result = tokio::time::timeout(route.timeout, attempt).await.unwrap_or(Err(Failure::Timeout));
        if let Some(stats) = route.stats.get() {
            stats.upstream_latency.observe(started.elapsed());
        }
        match &result {
            Ok(_) => upstream.record_connect(true),
            Err(Failure::Timeout) => {
                tracing::warn!(route = %route.name, upstream = %upstream.url, "upstream timed out");
            }
            Err(Failure::Connect(e)) => {
                tracing::warn!(route = %route.name, upstream = %upstream.url, error = %e, "upstream connect failed");
                upstream.record_connect(false);
            }
            Err(Failure::Stale) => {
                tracing::warn!(route = %route.name, upstream = %upstream.url, "upstream closed the connection");
            }
            Err(Failure::Other(e)) => {
                tracing::warn!(route = %route.name, upstream = %upstream.url, error = %e, "upstream request failed");
            }
        }
        result.map(|(stream, resp)| (stream, resp, upstream))
    }

    /// One try on one socket: the request out, the response head in.
    async fn exchange<IO>(
        &mut self,
        io: &mut IO,
        stream: &mut TcpStream,
        mut body_left: u64,
        head: &RequestHead,
    ) -> Result<ResponseHead, Failure>
    where
        IO: AsyncRead + Unpin,
    {
        let other = |e: io::Error| Failure::Other(e.to_string());
        if let Err(e) = stream.write_all(&self.out).await {
            return Err(if matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset) {
                Failure::Stale
            } else {
                other(e)
            });
        }
        if body_left > 0 {
            let mut chunk = vec![0u8; CHUNK];
            while body_left > 0 {
                let want = usize::try_from(body_left).unwrap_or(CHUNK).min(CHUNK);
                let n = io.read(&mut chunk[..want]).await.map_err(other)?;
                if n == 0 {
                    return Err(Failure::Other("client closed during the request body".into()));
                }
                stream.write_all(&chunk[..n]).await.map_err(other)?;
                body_left -= n as u64;
            }
        }
        self.up.clear();
        let mut reads = 0;
        loop {
            reads += 1;
            if reads > MAX_RESPONSE_HEAD_READS {
                return Err(Failure::Other("response head in too many pieces".into()));
            }
            if self.up.capacity() - self.up.len() < 4096 {
                self.up.reserve(CHUNK);
            }
            let room = self.up.capacity() - self.up.len();
            let n = read_some(stream, &mut self.up).await.map_err(|e| match e.kind() {
                io::ErrorKind::ConnectionReset => Failure::Stale,
                _ => other(e),
            })?;
            self.drained = n < room;
            if n == 0 {
                return Err(if self.up.is_empty() {
                    Failure::Stale
                } else {
                    Failure::Other("upstream closed inside the response head".into())
                });
            }
            loop {
                match response::parse(
                    &self.up,
                    head.method == Method::HEAD,
                    std::mem::take(&mut self.resp_spare),
                ) {
                    response::Parsed::Complete(resp) => return Ok(resp),
                    response::Parsed::Interim(len) => self.up.advance(len),
                    response::Parsed::Partial if self.up.len() > MAX_RESPONSE_HEAD => {
                        return Err(Failure::Other("response head too large".into()));
                    }
                    response::Parsed::Partial => break,
                    response::Parsed::Invalid(why) => return Err(Failure::Other(why.into())),
                }
                if self.up.is_empty() {
                    break;
                }
            }
        }
    }

    /// Relays the response whose head is at the start of `up`; gives the socket back when the
    /// upstream keeps it and it was read exactly to the response's end. Returns the body's
    /// length where it is known.
    #[allow(clippy::too_many_arguments)]
    async fn relay<IO>(
        &mut self,
        io: &mut IO,
        mut stream: TcpStream,
        head: &ResponseHead,
        upstream: &Upstream,
        request_id: &[u8],
        close: bool,
        busy: Busy,
    ) -> io::Result<Option<u64>>
    where
        IO: AsyncWrite + Unpin,
    {
        self.out.clear();
        response::write_client_head(&mut self.out, &self.up, head, request_id, close);
        self.up.advance(head.len);
        // Each write sends what `out` holds: first the head with the body bytes already here.
        let mut busy = Sending::Head(busy);
        let length = match head.framing {
            Framing::Empty => {
                self.write_out(io, &mut busy).await?;
                Some(0)
            }
            Framing::Length(total) => {
                let mut left = total;
                loop {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(self.up.len());
                    self.out.extend_from_slice(&self.up[..n]);
                    self.up.advance(n);
                    left -= n as u64;
                    self.write_out(io, &mut busy).await?;
                    if left == 0 {
                        break;
                    }
                    self.refill(&mut stream, left).await?;
                }
                Some(total)
            }
            Framing::Chunked => {
                let mut scan = ChunkedScan::new();
                loop {
                    match scan.scan(&self.up) {
                        Scanned::Invalid => {
                            return Err(io::Error::new(io::ErrorKind::InvalidData, "bad chunked framing"));
                        }
                        Scanned::End(n) => {
                            self.out.extend_from_slice(&self.up[..n]);
                            self.up.advance(n);
                            self.write_out(io, &mut busy).await?;
                            break;
                        }
                        Scanned::More => {
                            self.out.extend_from_slice(&self.up);
                            self.up.clear();
                            self.write_out(io, &mut busy).await?;
                            self.refill(&mut stream, CHUNK as u64).await?;
                        }
                    }
                }
                None
            }
            Framing::UntilClose => {
                let mut total = 0u64;
                loop {
                    total += self.up.len() as u64;
                    self.out.extend_from_slice(&self.up);
                    self.up.clear();
                    self.write_out(io, &mut busy).await?;
                    if self.refill_or_end(&mut stream).await? {
                        break;
                    }
                }
                Some(total)
            }
        };
        io.flush().await?;
        if head.reusable && self.up.is_empty() {
            if self.drained {
                // The last read left the socket empty: say so without another read.
                let _ = stream
                    .try_io(tokio::io::Interest::READABLE, || Err::<(), _>(io::ErrorKind::WouldBlock.into()));
            }
            upstream.conns.keep_stream(stream);
        }
        self.up.clear();
        Ok(length)
    }

    /// Writes what `out` holds to the client. After the first write (the response head) the
    /// request is no longer `busy`: from there a body that stops moving either way for the idle
    /// timeout ends the connection, as on hyper's path.
    async fn write_out<IO: AsyncWrite + Unpin>(
        &mut self,
        io: &mut IO,
        state: &mut Sending,
    ) -> io::Result<()> {
        io.write_all(&self.out).await?;
        self.out.clear();
        if matches!(state, Sending::Head(_)) {
            if let Sending::Head(busy) = std::mem::replace(state, Sending::Done) {
                *state = Sending::Body(busy.responding());
            }
        }
        Ok(())
    }

    /// Reads more of the body (at most `want` bytes); an early end is an error.
    async fn refill(&mut self, stream: &mut TcpStream, want: u64) -> io::Result<()> {
        self.up.clear();
        let want = usize::try_from(want).unwrap_or(CHUNK).min(CHUNK);
        self.up.reserve(want);
        let mut limited = (&mut *stream).take(want as u64);
        let n = limited.read_buf(&mut self.up).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "upstream closed inside the body"));
        }
        self.drained = n < want;
        Ok(())
    }

    /// Reads more of a body that ends when the upstream closes; true at the end.
    async fn refill_or_end(&mut self, stream: &mut TcpStream) -> io::Result<bool> {
        self.up.clear();
        self.up.reserve(CHUNK);
        Ok(stream.read_buf(&mut self.up).await? == 0)
    }

    /// Answers with the gateway's own error response; the body's length, or `None` when the
    /// client could not be written to.
    async fn answer<IO>(
        &mut self,
        io: &mut IO,
        e: GatewayError,
        head: &RequestHead,
        request_id: &[u8],
        close: bool,
    ) -> Option<u64>
    where
        IO: AsyncWrite + Unpin,
    {
        self.respond(io, e.into_response(), request_id, close, head.method == Method::HEAD).await
    }

    /// Writes a response the gateway made itself (a JSON answer or an error); the body's
    /// length, or `None` when the client could not be written to.
    async fn respond<IO>(
        &mut self,
        io: &mut IO,
        resp: http::Response<crate::body::GatewayBody>,
        request_id: &[u8],
        close: bool,
        head_request: bool,
    ) -> Option<u64>
    where
        IO: AsyncWrite + Unpin,
    {
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.ok()?.to_bytes();
        self.out.clear();
        response::status_line(&mut self.out, parts.status.as_u16(), "");
        for (name, value) in &parts.headers {
            if name != http::header::CONTENT_LENGTH
                && name != http::header::CONNECTION
                && name != X_REQUEST_ID
            {
                request::line(&mut self.out, name.as_str().as_bytes(), value.as_bytes());
            }
        }
        // RFC 9110 §8.6: never on a 1xx or 204.
        if parts.status.as_u16() >= 200 && parts.status != http::StatusCode::NO_CONTENT {
            let mut len = itoa::Buffer::new();
            request::line(&mut self.out, b"content-length", len.format(body.len()).as_bytes());
        }
        request::line(&mut self.out, b"date", &date::now());
        request::line(&mut self.out, b"x-request-id", request_id);
        if close {
            request::line(&mut self.out, b"connection", b"close");
        }
        self.out.extend_from_slice(b"\r\n");
        if !head_request {
            self.out.extend_from_slice(&body);
        }
        io.write_all(&self.out).await.ok()?;
        io.flush().await.ok()?;
        Some(body.len() as u64)
    }

    /// Answers a head that cannot be read (unparseable, or past `max_header_bytes`) with `e`
    /// and the SPEC's body, then closes: nothing after it can be framed. (hyper's own answer
    /// to these is an empty 400 or 431.) Like hyper's, no route or access line records it.
    async fn unreadable<IO>(&mut self, io: &mut IO, e: GatewayError, lane: &Lane<'_>) -> Outcome
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let request_id = lane.gw.new_request_id();
        log_failure(&e, &request_id);
        let _ = self.respond(io, e.into_response(), request_id.as_bytes(), true, false).await;
        Outcome::Close
    }

    /// Answers `e` for a request refused before it reached a route's upstream (path, route,
    /// body size); false when the connection must close after it.
    async fn refuse<IO>(
        &mut self,
        io: &mut IO,
        buf: &[u8],
        head: &RequestHead,
        e: GatewayError,
        lane: &Lane<'_>,
    ) -> bool
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let started = Instant::now();
        let rt = lane.gw.runtime();
        let request_id = request_id(lane.gw, rt.is_trusted(lane.info.peer.ip()), buf, head);
        // A body the client is still sending cannot be skipped without reading it.
        let close = head.close || !head.whole_body_here(buf.len()) || lane.drain.is_cancelled();
        let status = e.status().as_u16();
        log_failure(&e, &request_id);
        let bytes = self.answer(io, e, head, request_id.as_bytes(), close).await;
        let done =
            Done { path: raw_path(buf, head), route: None, status, bytes, upstream: None, login: None };
        finish(lane, head, &request_id, started, done);
        bytes.is_some() && !close
    }

    /// Serves one of the gateway's own endpoints: its body (at most the endpoints' JSON limit)
    /// is read whole, then the same handler as on hyper's path answers.
    async fn own<IO>(
        &mut self,
        io: &mut IO,
        buf: &mut BytesMut,
        head: &RequestHead,
        rt: &Runtime,
        path: &str,
        lane: &Lane<'_>,
    ) -> bool
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let started = Instant::now();
        let gw = lane.gw;
        let request_id = request_id(gw, rt.is_trusted(lane.info.peer.ip()), buf, head);
        // Within the endpoints' limit (see `plan`), and the header read timeout: a body this
        // small has no reason to trickle.
        let end = head.len + head.content_length as usize;
        let read = async {
            while buf.len() < end {
                buf.reserve(end - buf.len());
                if matches!(io.read_buf(buf).await, Ok(0) | Err(_)) {
                    return false;
                }
            }
            true
        };
        if !matches!(tokio::time::timeout(rt.header_read_timeout, read).await, Ok(true)) {
            return false;
        }
        let result = match own_request(buf, head) {
            Ok(req) => server::own(gw, rt, lane.info, path, req).await,
            Err(e) => Err(e),
        };
        let resp = result.unwrap_or_else(|e| {
            log_failure(&e, &request_id);
            e.into_response()
        });
        let status = resp.status().as_u16();
        let close = head.close || lane.drain.is_cancelled();
        let head_request = head.method == Method::HEAD;
        let bytes = self.respond(io, resp, request_id.as_bytes(), close, head_request).await;
        let done = Done { path, route: None, status, bytes, upstream: None, login: None };
        finish(lane, head, &request_id, started, done);
        bytes.is_some() && !close
    }
}

/// How a request ended, for its metrics and access-log line.
struct Done<'a> {
    path: &'a str,
    route: Option<&'a Route>,
    status: u16,
    bytes: Option<u64>,
    upstream: Option<&'a str>,
    login: Option<&'a str>,
}

/// Records a finished request as hyper's path does: the route's metrics (or the gateway's,
/// without a route) and the access-log line.
fn finish(lane: &Lane<'_>, head: &RequestHead, request_id: &HeaderValue, started: Instant, d: Done<'_>) {
    let took = started.elapsed();
    match d.route.and_then(|r| r.stats.get()) {
        Some(stats) => stats.record(&head.method, d.status, took),
        None => lane.gw.metrics.gateway.record(&head.method, d.status, took),
    }
    server::log_access(server::AccessLine {
        request_id,
        client: lane.info.peer,
        method: &head.method,
        path: d.path,
        route: d.route.map(|r| &*r.name),
        status: d.status,
        bytes: d.bytes,
        took,
        upstream: d.upstream,
        login: d.login,
    });
}

/// The request as hyper's path hands it to an own endpoint: method, target, headers, and the
/// body, already read.
fn own_request(buf: &[u8], head: &RequestHead) -> Result<http::Request<EndpointBody>, GatewayError> {
    let malformed = |what: &str| GatewayError::Malformed(format!("{what} not accepted"));
    let target = &buf[head.path.start..head.query.as_ref().map_or(head.path.end, |q| q.end)];
    let uri = http::Uri::try_from(target).map_err(|_| malformed("target"))?;
    let mut headers = http::HeaderMap::with_capacity(head.headers.len());
    for h in &head.headers {
        let name =
            http::HeaderName::from_bytes(&buf[h.name.clone()]).map_err(|_| malformed("header name"))?;
        let value = HeaderValue::from_bytes(&buf[h.value.clone()]).map_err(|_| malformed("header value"))?;
        headers.append(name, value);
    }
    let body = bytes::Bytes::copy_from_slice(&buf[head.len..head.len + head.content_length as usize]);
    let mut req = http::Request::new(http_body_util::Either::Right(http_body_util::Full::new(body)));
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Ok(req)
}

/// The request id: a trusted peer's own (when valid), else a new one.
fn request_id(gw: &Gateway, trusted: bool, buf: &[u8], head: &RequestHead) -> HeaderValue {
    match &head.request_id {
        Some(r) if trusted => HeaderValue::from_bytes(&buf[r.clone()])
            .ok()
            .filter(server::valid_request_id)
            .unwrap_or_else(|| gw.new_request_id()),
        _ => gw.new_request_id(),
    }
}

/// The path as the client sent it (ASCII: the target was checked byte by byte).
fn raw_path<'b>(buf: &'b [u8], head: &RequestHead) -> &'b str {
    std::str::from_utf8(&buf[head.path.clone()]).unwrap_or("/")
}

/// Reads what the socket has into `buf`'s spare room, waiting for it first (so a socket whose
/// readiness was cleared costs no empty read).
async fn read_some(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read_buf(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

fn log_failure(e: &GatewayError, request_id: &HeaderValue) {
    if e.status().is_server_error() {
        tracing::warn!(request_id = ?request_id, error = %e, "request failed");
    } else {
        tracing::debug!(request_id = ?request_id, error = %e, "request refused");
    }
}
