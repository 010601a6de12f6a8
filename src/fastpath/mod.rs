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

pub(crate) use response::write_own;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use http::{HeaderValue, Method};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::activity::{Activity, Busy, Responding};
use crate::auth::endpoints::EndpointBody;
use crate::error::GatewayError;
use crate::framing::{ChunkedScan, LAST_CHUNK, Scanned, write_chunk};
use crate::gate::cors::Cors;
use crate::gate::own::{ConnInfo, Listener};
use crate::gate::record::log_failure;
use crate::gate::{self, Decision, Plan, Record, retry};
use crate::gateway::Gateway;
use crate::proxy::{Failure, Upstream, UpstreamStream};
use crate::routes::Route;
use crate::runtime::Runtime;
use request::{Forward, Parsed, RequestHead};
use response::{Framing, ResponseHead};

/// Reads a head may take before hyper gets it: hyper bounds a slow head's parsing work.
const MAX_HEAD_READS: u32 = 4;
/// How long closing a connection cleanly may take (a peer that reads nothing cannot stall it).
const SHUTDOWN_FOR: std::time::Duration = std::time::Duration::from_secs(2);
/// Capacity the upstream buffers (`out`, `up`) keep between requests.
const RETAIN: usize = 32 * 1024;
/// Bytes relayed per read.
const CHUNK: usize = 16 * 1024;

/// What one connection's fast path works with.
pub struct Lane<'a> {
    pub gw: &'a Arc<Gateway>,
    pub info: &'a ConnInfo,
    pub activity: &'a Arc<Activity>,
    /// Set once the listener drains (an atomic load: `CancellationToken::is_cancelled` takes
    /// a lock, and is asked several times per request).
    pub draining: &'a AtomicBool,
    /// The head limits of the snapshot the connection started with (as hyper's are).
    pub max_head: usize,
    pub max_headers: usize,
}

impl Lane<'_> {
    /// Records a finished request (`gate::record`), as hyper's path does.
    fn finish(
        &self,
        record: &Record,
        id: &HeaderValue,
        method: &Method,
        path: &str,
        status: u16,
        bytes: Option<u64>,
    ) {
        record.finish(self.gw, true, id, self.info.peer, method, path, status, bytes);
    }
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
    };
    loop {
        let mut reads = 0;
        let head = loop {
            if !buf.is_empty() {
                match request::parse(buf, lane.max_head, lane.max_headers, std::mem::take(&mut x.spare)) {
                    Parsed::Complete(head) => {
                        lane.activity.head_read(false);
                        break head;
                    }
                    Parsed::Unfit => return Outcome::Handoff,
                    Parsed::Unreadable(why) => return x.unreadable(io, why.into_error(), lane).await,
                    // A head trickling in a byte at a time: hyper's path reads the rest.
                    Parsed::Partial if reads >= MAX_HEAD_READS => return Outcome::Handoff,
                    Parsed::Partial => lane.activity.head_read(true),
                }
            }
            // Between requests, a drain closes the connection (the listener reads the flag).
            let between = buf.is_empty();
            lane.activity.set_between_requests(between);
            if between && lane.draining.load(Ordering::Acquire) {
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
        let mut record = Record::new(Instant::now());
        let decision = decide(lane.gw, &rt, buf, &head, &mut record);
        // An own endpoint's body larger than the fast path reads whole is hyper's.
        if let Ok(Decision::Own(_)) = &decision {
            if head.content_length > crate::auth::endpoints::MAX_JSON_BYTES as u64 {
                return Outcome::Handoff;
            }
        }
        lane.activity.count_request();
        let busy = lane.activity.enter();
        let keep = match decision {
            Ok(Decision::Forward(plan)) => x.serve(io, buf, &head, &rt, plan, lane, busy, &mut record).await,
            Ok(Decision::Own(o)) => x.own(io, buf, &head, &rt, o, lane, record).await,
            Ok(Decision::Preflight(policy)) => {
                x.reply(io, buf, &head, Ok(policy.preflight_response()), lane, record).await
            }
            Err(e) => x.reply(io, buf, &head, Err(e), lane, record).await,
        };
        x.trim();
        buf.advance(head.len + head.body_here(buf.len()));
        x.spare = head.headers;
        if !keep {
            // A clean end over TLS: close_notify, then FIN, as hyper's path ends a connection.
            // A plain socket's FIN comes with closing it (a shutdown first would only cost a
            // system call: nothing is read after it, so unread bytes would reset it either way).
            if lane.info.tls {
                let _ = tokio::time::timeout(SHUTDOWN_FOR, io.shutdown()).await;
            }
            return Outcome::Close;
        }
    }
}

/// The policy core's decision (`crate::gate::decide`) for a head read from `buf`.
fn decide<'r, 'p>(
    gw: &Gateway,
    rt: &'r Runtime,
    buf: &'p [u8],
    head: &RequestHead,
    record: &mut Record,
) -> Result<Decision<'r, 'p>, GatewayError> {
    let view = gate::View {
        method: &head.method,
        host: std::str::from_utf8(&buf[head.host.clone()]).ok(),
        authorization: head.authorization.as_ref().map(|r| &buf[r.clone()]),
        authorizations: head.authorizations as usize,
        content_length: Some(head.content_length),
        origin: rt.cors.as_ref().and(head.origin.as_ref()).map(|r| &buf[r.clone()]),
        preflight: head.preflight,
    };
    gate::decide(gw, rt, raw_path(buf, head), &view, record)
}

/// Where a response stands, for the connection's timeouts (the value is only held).
#[allow(dead_code)]
enum Sending {
    Head(Busy),
    Body(Responding),
    Done,
}

/// Buffers reused from request to request on one connection.
struct Exchange {
    /// The head (and first body bytes) being written, upstream or to the client.
    out: Vec<u8>,
    /// What the upstream sent.
    up: BytesMut,
    spare: Vec<request::Header>,
    resp_spare: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
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

    /// Forwards one request as `plan` says; false when the connection must close after it.
    /// `busy` keeps the connection's timeouts off until the response head is out (then a body
    /// that stops moving for the idle timeout ends the connection).
    #[allow(clippy::too_many_arguments)] // the request's parts, borrowed from their owners
    async fn serve<IO>(
        &mut self,
        io: &mut IO,
        buf: &[u8],
        head: &RequestHead,
        rt: &Runtime,
        plan: Plan<'_, '_>,
        lane: &Lane<'_>,
        busy: Busy,
        record: &mut Record,
    ) -> bool
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let gw = lane.gw;
        let route = plan.route;
        let trusted = rt.is_trusted(lane.info.peer.ip());
        let request_id = request_id(gw, trusted, buf, head);
        // The body bytes already read; the rest comes from the client as it is relayed.
        let body_here = head.body_here(buf.len());
        let mut close = head.close || lane.draining.load(Ordering::Acquire);
        let upstream = route.pool.pick();
        record.upstream = Some(upstream.url.clone());
        let fwd = Forward {
            route,
            auth: &plan.auth,
            upstream_host: upstream.host_header.as_bytes(),
            base_path: &upstream.base_path,
            target: route.upstream_path(&plan.path),
            peer: lane.info.peer_header.as_bytes(),
            trusted_peer: trusted,
            proto: if lane.info.tls { b"https" } else { b"http" },
            request_id: request_id.as_bytes(),
        };
        self.write_request(buf, head, &fwd, body_here);
        let mut body_left = head.content_length - body_here as u64;
        let mut result = self.send(io, route, upstream, &mut body_left, head).await;
        if let Err(f) = &result {
            if let Some(second) = retry::elsewhere(f, route, upstream, record) {
                let fwd = Forward {
                    upstream_host: second.host_header.as_bytes(),
                    base_path: &second.base_path,
                    ..fwd
                };
                self.write_request(buf, head, &fwd, body_here);
                result = self.send(io, route, second, &mut body_left, head).await;
            }
        }
        let cors = cors(rt, buf, head, record);
        let (status, bytes) = match result {
            Ok((stream, resp_head, upstream)) => {
                // A drain that began while the upstream answered: the client learns it here.
                close |= lane.draining.load(Ordering::Acquire);
                let relayed = self
                    .relay(io, stream, &resp_head, upstream, cors, request_id.as_bytes(), close, busy)
                    .await;
                let status = resp_head.status;
                self.resp_spare = resp_head.headers;
                match relayed {
                    Ok(bytes) => (status, bytes),
                    Err(e) => {
                        tracing::debug!(error = %e, "response relay failed");
                        close = true;
                        (status, None)
                    }
                }
            }
            Err(f) => {
                // A body the client is still sending cannot be skipped without reading it.
                close |= body_left > 0;
                let e = f.into_error();
                let status = e.status().as_u16();
                log_failure(&e, &request_id);
                let bytes = self.answer(io, e, head, cors, request_id.as_bytes(), close).await;
                close |= bytes.is_none();
                (status, bytes)
            }
        };
        lane.finish(record, &request_id, &head.method, raw_path(buf, head), status, bytes);
        !close
    }

    /// Puts the upstream request in `out`: its head, and the body bytes already read.
    fn write_request(&mut self, buf: &[u8], head: &RequestHead, fwd: &Forward<'_>, body_here: usize) {
        self.out.clear();
        request::write_upstream_head(&mut self.out, buf, head, fwd);
        self.out.extend_from_slice(&buf[head.len..head.len + body_here]);
    }

    /// Sends the request in `out` (head and the body bytes already read), then the rest of the
    /// body from the client (`body_left` counts down), and reads the response head; bounded by
    /// the route's timeout.
    async fn send<'u, IO>(
        &mut self,
        io: &mut IO,
        route: &Route,
        upstream: &'u Upstream,
        body_left: &mut u64,
        head: &RequestHead,
    ) -> Result<(UpstreamStream, ResponseHead, &'u Upstream), Failure>
    where
        IO: AsyncRead + Unpin,
    {
        let _in_flight = upstream.start_request();
        let started = Instant::now();
        let has_body = head.content_length > 0;
        let attempt = async {
            // At most one resend, and on a new connection (as `proxy::pool` does).
            let mut fresh_only = false;
            loop {
                let (mut stream, reused) = upstream.conns.stream(fresh_only).await?;
                // Let the other requests that are ready be read first, so their upstream writes
                // go out together (see `proxy::pool`: one origin wake-up per batch).
                tokio::task::yield_now().await;
                match self.exchange(io, &mut stream, body_left, head).await {
                    Err(f) if retry::may_resend(&f, reused, &head.method, has_body) => fresh_only = true,
                    Err(f) => return Err(f),
                    Ok(resp) => return Ok((stream, resp)),
                }
            }
        };
        let result = tokio::time::timeout(route.timeout, attempt).await.unwrap_or(Err(Failure::Timeout));
        retry::observe(route, upstream, started, result.as_ref().map(|_| ()));
        result.map(|(stream, resp)| (stream, resp, upstream))
    }

    /// One try on one socket: the request out, the response head in.
    async fn exchange<IO>(
        &mut self,
        io: &mut IO,
        stream: &mut TcpStream,
        body_left: &mut u64,
        head: &RequestHead,
    ) -> Result<ResponseHead, Failure>
    where
        IO: AsyncRead + Unpin,
    {
        let closed = Failure::from_io;
        stream.write_all(&self.out).await.map_err(closed)?;
        if *body_left > 0 {
            let mut chunk = vec![0u8; CHUNK];
            while *body_left > 0 {
                let want = usize::try_from(*body_left).unwrap_or(CHUNK).min(CHUNK);
                let n = match io.read(&mut chunk[..want]).await {
                    Ok(0) => 0,
                    Ok(n) => n,
                    Err(e) => return Err(Failure::Client(format!("reading the request body: {e}"))),
                };
                if n == 0 {
                    return Err(Failure::Client("the client left inside its request body".into()));
                }
                stream.write_all(&chunk[..n]).await.map_err(closed)?;
                *body_left -= n as u64;
            }
        }
        let head_request = head.method == Method::HEAD;
        response::read_head(stream, &mut self.up, head_request, false, std::mem::take(&mut self.resp_spare))
            .await
    }

    /// Relays the response whose head is at the start of `up`; gives the socket back when the
    /// upstream keeps it and it was read exactly to the response's end. Returns the body's
    /// length where it is known.
    #[allow(clippy::too_many_arguments)]
    async fn relay<IO>(
        &mut self,
        io: &mut IO,
        mut stream: UpstreamStream,
        head: &ResponseHead,
        upstream: &Upstream,
        cors: Cors<'_>,
        request_id: &[u8],
        close: bool,
        busy: Busy,
    ) -> io::Result<Option<u64>>
    where
        IO: AsyncWrite + Unpin,
    {
        self.out.clear();
        response::write_client_head(&mut self.out, &self.up, head, cors, request_id, close);
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
                self.relay_chunked(io, &mut stream, &mut busy).await?;
                None
            }
            Framing::UntilClose => {
                // Sent on chunked, as hyper's path does, so the client's connection stays open.
                let mut total = 0u64;
                loop {
                    let n = self.up.len();
                    if n > 0 {
                        total += n as u64;
                        write_chunk(&mut self.out, &self.up);
                        self.up.clear();
                    }
                    if n > 0 || matches!(busy, Sending::Head(_)) {
                        self.write_out(io, &mut busy).await?;
                    }
                    if self.refill_or_end(&mut stream).await? {
                        break;
                    }
                }
                self.out.extend_from_slice(LAST_CHUNK);
                self.write_out(io, &mut busy).await?;
                Some(total)
            }
        };
        io.flush().await?;
        if head.reusable && self.up.is_empty() {
            upstream.conns.keep_stream(stream);
        }
        self.up.clear();
        Ok(length)
    }

    /// Relays a chunked body as it is framed, up to its last chunk; its trailer section, which
    /// neither transport relays, is read and replaced by the empty one.
    async fn relay_chunked<IO: AsyncWrite + Unpin>(
        &mut self,
        io: &mut IO,
        stream: &mut TcpStream,
        busy: &mut Sending,
    ) -> io::Result<()> {
        let mut scan = ChunkedScan::new();
        let mut trailers = false;
        loop {
            let scanned = if trailers { scan.scan(&self.up) } else { scan.scan_to_last(&self.up) };
            match scanned {
                Scanned::Invalid => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "bad chunked framing"));
                }
                Scanned::Last(n) => {
                    self.out.extend_from_slice(&self.up[..n]);
                    self.out.extend_from_slice(b"\r\n");
                    self.up.advance(n);
                    trailers = true;
                    continue;
                }
                Scanned::End(n) => {
                    if !trailers {
                        self.out.extend_from_slice(&self.up[..n]);
                    }
                    self.up.advance(n);
                    return self.write_out(io, busy).await;
                }
                Scanned::More => {
                    if !trailers {
                        self.out.extend_from_slice(&self.up);
                    }
                    self.up.clear();
                    if !self.out.is_empty() {
                        self.write_out(io, busy).await?;
                    }
                    self.refill(stream, CHUNK as u64).await?;
                }
            }
        }
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
        cors: Cors<'_>,
        request_id: &[u8],
        close: bool,
    ) -> Option<u64>
    where
        IO: AsyncWrite + Unpin,
    {
        self.respond(io, e.into_response(), cors, request_id, close, head.method == Method::HEAD).await
    }

    /// Writes a response the gateway made itself (a JSON answer or an error); the body's
    /// length, or `None` when the client could not be written to.
    async fn respond<IO>(
        &mut self,
        io: &mut IO,
        mut resp: http::Response<crate::body::GatewayBody>,
        cors: Cors<'_>,
        request_id: &[u8],
        close: bool,
        head_request: bool,
    ) -> Option<u64>
    where
        IO: AsyncWrite + Unpin,
    {
        cors.apply(resp.headers_mut(), false);
        self.out.clear();
        let len = response::write_own(&mut self.out, resp, request_id, close, head_request)?;
        io.write_all(&self.out).await.ok()?;
        io.flush().await.ok()?;
        Some(len)
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
        let _ = self.respond(io, e.into_response(), Cors::Off, request_id.as_bytes(), true, false).await;
        Outcome::Close
    }

    /// Answers a request the policy core refused (`Err`) or answered itself without reading
    /// its body (a CORS preflight); false when the connection must close after it.
    async fn reply<IO>(
        &mut self,
        io: &mut IO,
        buf: &[u8],
        head: &RequestHead,
        answer: Result<http::Response<crate::body::GatewayBody>, GatewayError>,
        lane: &Lane<'_>,
        record: Record,
    ) -> bool
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let rt = lane.gw.runtime();
        let request_id = request_id(lane.gw, rt.is_trusted(lane.info.peer.ip()), buf, head);
        // A body that has not all arrived is not read on: the connection closes after the
        // answer, which says so (hyper's path: `server::handle`, the same rule).
        let close = head.close || !head.whole_body_here(buf.len()) || lane.draining.load(Ordering::Acquire);
        let resp = answer.unwrap_or_else(|e| {
            log_failure(&e, &request_id);
            e.into_response()
        });
        let status = resp.status().as_u16();
        let cors = cors(&rt, buf, head, &record);
        let head_request = head.method == Method::HEAD;
        let bytes = self.respond(io, resp, cors, request_id.as_bytes(), close, head_request).await;
        lane.finish(&record, &request_id, &head.method, raw_path(buf, head), status, bytes);
        bytes.is_some() && !close
    }

    /// Serves one of the gateway's own endpoints: its body (at most the endpoints' JSON limit)
    /// is read whole, then the same handler as on hyper's path answers.
    #[allow(clippy::too_many_arguments)] // the request's parts, borrowed from their owners
    async fn own<IO>(
        &mut self,
        io: &mut IO,
        buf: &mut BytesMut,
        head: &RequestHead,
        rt: &Runtime,
        o: gate::Own,
        lane: &Lane<'_>,
        record: Record,
    ) -> bool
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
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
            Ok(req) => gate::own::serve(gw, rt, lane.info, Listener::Main, o, &request_id, req).await,
            Err(e) => Err(e),
        };
        let resp = result.unwrap_or_else(|e| {
            log_failure(&e, &request_id);
            e.into_response()
        });
        let status = resp.status().as_u16();
        let close = head.close || lane.draining.load(Ordering::Acquire);
        let head_request = head.method == Method::HEAD;
        let cors = cors(rt, buf, head, &record);
        let bytes = self.respond(io, resp, cors, request_id.as_bytes(), close, head_request).await;
        lane.finish(&record, &request_id, &head.method, raw_path(buf, head), status, bytes);
        bytes.is_some() && !close
    }
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

/// What CORS does to the answer (`crate::gate::cors`), from the request's `Origin`.
fn cors<'b>(rt: &'b Runtime, buf: &'b [u8], head: &RequestHead, record: &Record) -> Cors<'b> {
    gate::cors::for_request(rt, head.origin.as_ref().map(|r| &buf[r.clone()]), record)
}

/// The request id: a trusted peer's own (when valid), else a new one.
fn request_id(gw: &Gateway, trusted: bool, buf: &[u8], head: &RequestHead) -> HeaderValue {
    gate::request_id(gw, trusted, head.request_id.as_ref().map(|r| &buf[r.clone()]))
}

/// The path as the client sent it (ASCII: the target was checked byte by byte).
fn raw_path<'b>(buf: &'b [u8], head: &RequestHead) -> &'b str {
    std::str::from_utf8(&buf[head.path.clone()]).unwrap_or("/")
}

/// The fast path's parsers, for the fuzz targets (`fuzz/`): not an interface.
#[doc(hidden)]
pub mod fuzzing {
    use crate::framing::Unreadable;

    /// What the fast path makes of a request head at the start of `buf`.
    #[derive(Debug, PartialEq, Eq)]
    pub enum HeadVerdict {
        /// Served here: the head's length and declared body length.
        Complete {
            len: usize,
            content_length: u64,
        },
        Partial,
        /// Handed to hyper.
        Unfit,
        Unreadable(Unreadable),
    }

    pub fn request_head(buf: &[u8], max_head: usize, max_headers: usize) -> HeadVerdict {
        match super::request::parse(buf, max_head, max_headers, Vec::new()) {
            super::Parsed::Complete(h) => {
                HeadVerdict::Complete { len: h.len, content_length: h.content_length }
            }
            super::Parsed::Partial => HeadVerdict::Partial,
            super::Parsed::Unfit => HeadVerdict::Unfit,
            super::Parsed::Unreadable(u) => HeadVerdict::Unreadable(u),
        }
    }

    /// A response head at the start of `buf`: `None` unless complete and relayed; else its
    /// status, framing, and the head the client would get.
    pub fn response_head(buf: &[u8], head_request: bool) -> Option<(u16, super::Framing, Vec<u8>)> {
        match super::response::parse(buf, head_request, false, Vec::new()) {
            super::response::Parsed::Complete(h) => {
                let mut out = Vec::new();
                super::response::write_client_head(&mut out, buf, &h, Default::default(), b"fuzz", false);
                Some((h.status, h.framing, out))
            }
            _ => None,
        }
    }
}
