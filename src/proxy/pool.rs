//! Upstream connections: opened on demand, kept alive and reused (HTTP/1.1), one idle queue per
//! upstream. Built on hyper's connection-level client rather than hyper-util's legacy `Client`,
//! which spawns a task and takes its pool's mutex for every request. Here a request pops a
//! connection from a lock-free queue and drives it from its own task, as does the response
//! body, which pushes it back when it ends: no task, channel hop or wake-up between the request
//! and its connection.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use http::uri::Authority;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use super::Failure;
use super::room::{Handed, Waiters};
use super::stream::{SharedStream, UpstreamStream};
use crate::activity::now_ms;
use crate::body::LimitedBody;

/// Idle connections kept per upstream; past this, a finished connection is closed.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed instead of reused: upstream servers close idle
/// keep-alive connections after a while (nginx: 75 s), and reusing one at that moment fails.
const IDLE_FOR: Duration = Duration::from_secs(50);
/// A connection idle for less than this is taken as quiet when the reactor has recorded
/// nothing readable on it since the read that emptied it (no system call: one of five per
/// request under load); one idle longer is asked of the kernel. The reactor hears of new bytes
/// or a close within a fraction of this (it is polled every few dozen task polls), and servers
/// close idle keep-alive connections after seconds (Node.js 5 s, nginx 60 s).
const TRUST_READINESS_FOR: Duration = Duration::from_millis(50);
/// The read buffer of an upstream connection.
const READ_BUF: usize = 16 * 1024;
/// How long a connection taken from the pool may take to be ready for a request.
const SETTLE_FOR: Duration = Duration::from_secs(1);

/// The connections to one upstream.
pub struct Connections {
    authority: Authority,
    connect_timeout: Duration,
    idle: ArrayQueue<Idle>,
    /// Idle plain sockets of the fast path (`crate::fastpath`), which speaks HTTP/1.1 itself.
    streams: ArrayQueue<IdleStream>,
    /// One permit per connection open to the upstream, in use or idle, on either transport
    /// (the route's `max_connections`).
    slots: Arc<Semaphore>,
    max_connections: usize,
    /// Requests waiting for a connection while every place is taken (`super::room`).
    waiters: Waiters,
}

pub(super) struct IdleStream {
    stream: UpstreamStream,
    /// When it was given back (`crate::activity::now_ms`).
    since: u64,
}

/// What waiting for room brought.
enum Waited {
    Handed(Handed),
    Slot(OwnedSemaphorePermit),
    /// Queued, or handed nothing: look at the idle queues again.
    Again,
}

/// hyper's connection future with upgrade support (its type cannot be named, hence the box).
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send + Sync>>;

/// One upstream connection: the handle requests are sent through, and the future that does
/// the connection's reading and writing whenever whoever holds it polls it.
struct Link {
    sender: SendRequest<LimitedBody>,
    /// `None` once the connection has ended.
    driver: Option<Driver>,
    /// The socket hyper speaks on (shared, not duplicated), to ask the kernel whether an idle
    /// connection is still open before it is reused.
    probe: Arc<TcpStream>,
}

impl Link {
    /// Lets the connection read and write; false once it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(driver) = self.driver.as_mut() else { return false };
        match driver.as_mut().poll(cx) {
            Poll::Pending => true,
            Poll::Ready(r) => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "upstream connection ended with an error");
                }
                self.driver = None;
                false
            }
        }
    }

    /// Drives the connection until it can take a request: `Pending` while it settles, false
    /// when it has ended.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if !self.drive(cx) {
            return Poll::Ready(false);
        }
        self.sender.poll_ready(cx).map(|r| r.is_ok())
    }
}

pub(super) struct Idle {
    link: Link,
    /// When it was given back (`crate::activity::now_ms`).
    since: u64,
}

impl Connections {
    pub fn new(authority: Authority, connect_timeout: Duration, max_connections: usize) -> Arc<Self> {
        Arc::new(Self {
            authority,
            connect_timeout,
            idle: ArrayQueue::new(MAX_IDLE.min(max_connections)),
            streams: ArrayQueue::new(MAX_IDLE.min(max_connections)),
            slots: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            waiters: Waiters::default(),
        })
    }

    /// The cap on connections open to this upstream.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// A socket for the fast path and whether it was pooled: a kept-alive one the upstream has
    /// not closed and has sent nothing more on, else a new one (`fresh`: always a new one).
    /// With every place taken, the request waits in turn (`super::room`) up to
    /// `connect_timeout`, then `Failure::Busy`.
    pub async fn stream(&self, fresh: bool) -> Result<(UpstreamStream, bool), Failure> {
        let mut deadline = None;
        let mut queued = None;
        loop {
            if queued.is_some() || !self.waiters.any() {
                if let Some(stream) = if fresh { None } else { self.take_stream() } {
                    return Ok((stream, true));
                }
                if let Some(slot) = self.free_slot()? {
                    return Ok((UpstreamStream::new(self.connect_socket().await?, slot), false));
                }
            }
            match self.wait(&mut queued, &mut deadline).await? {
                Waited::Handed(Handed::Stream(IdleStream { stream, since }))
                    if !fresh && fit_for_reuse(since, &stream) =>
                {
                    return Ok((stream, true));
                }
                // Of the other transport, or unfit: closing it frees its place.
                Waited::Handed(_) | Waited::Again => {}
                Waited::Slot(slot) => {
                    return Ok((UpstreamStream::new(self.connect_socket().await?, slot), false));
                }
            }
        }
    }

    fn take_stream(&self) -> Option<UpstreamStream> {
        while let Some(IdleStream { stream, since }) = self.streams.pop() {
            if fit_for_reuse(since, &stream) {
                return Some(stream);
            }
        }
        None
    }

    /// Gives back a socket whose last response was read to its end.
    pub fn keep_stream(&self, stream: UpstreamStream) {
        self.give_back(Handed::Stream(IdleStream { stream, since: now_ms() }));
    }

    /// A finished connection: to the longest-waiting request, else to its idle queue.
    fn give_back(&self, item: Handed) {
        let Some(item) = self.waiters.hand_over(item) else { return };
        let stream = matches!(item, Handed::Stream(_));
        self.put_idle(item);
        // A request that queued while this was put back may have looked before it was there
        // (see `Waiters::join`).
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        if self.waiters.any() {
            let again = if stream {
                self.streams.pop().map(Handed::Stream)
            } else {
                self.idle.pop().map(Handed::Link)
            };
            if let Some(back) = again.and_then(|i| self.waiters.hand_over(i)) {
                self.put_idle(back);
            }
        }
    }

    /// Into its idle queue; closed when that is full.
    fn put_idle(&self, item: Handed) {
        match item {
            Handed::Stream(s) => drop(self.streams.push(s)),
            Handed::Link(l) => drop(self.idle.push(l)),
        }
    }

    /// A free place under the cap, if there is one now: a place no connection holds, or one
    /// an idle connection (of either transport) gives up by closing.
    fn free_slot(&self) -> Result<Option<OwnedSemaphorePermit>, Failure> {
        loop {
            match self.slots.clone().try_acquire_owned() {
                Ok(slot) => return Ok(Some(slot)),
                Err(TryAcquireError::Closed) => return Err(Failure::Busy),
                Err(TryAcquireError::NoPermits) => {}
            }
            if self.streams.pop().is_none() && self.idle.pop().is_none() {
                return Ok(None);
            }
        }
    }

    /// Waits in turn for a connection handed over or a place freed, until `deadline`. The
    /// first call only queues: the caller then looks once more (nothing given back in between
    /// is missed).
    async fn wait(
        &self,
        queued: &mut Option<tokio::sync::oneshot::Receiver<Handed>>,
        deadline: &mut Option<tokio::time::Instant>,
    ) -> Result<Waited, Failure> {
        let Some(handed) = queued.as_mut() else {
            *queued = Some(self.waiters.join());
            return Ok(Waited::Again);
        };
        // Only a request that waits reads the clock for its deadline.
        let deadline = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + self.connect_timeout);
        tokio::select! {
            biased;
            item = handed => {
                *queued = None;
                Ok(item.map_or(Waited::Again, Waited::Handed))
            }
            slot = self.slots.clone().acquire_owned() => slot.map(Waited::Slot).map_err(|_| Failure::Busy),
            () = tokio::time::sleep_until(deadline) => Err(Failure::Busy),
        }
    }

    async fn connect_socket(&self) -> Result<TcpStream, Failure> {
        let host = self.authority.host().trim_start_matches('[').trim_end_matches(']');
        let port = self.authority.port_u16().unwrap_or(80);
        let stream = match tokio::time::timeout(self.connect_timeout, TcpStream::connect((host, port))).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(Failure::Connect(format!("connect to {}: {e}", self.authority))),
            Err(_) => return Err(Failure::Connect(format!("connect to {}: timed out", self.authority))),
        };
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        Ok(stream)
    }

    /// Sends `req` (origin-form URI) on a pooled connection, or on a new one. A request that a
    /// pooled connection refused unsent (the upstream closed it while idle) goes on another;
    /// one that failed after it went out goes once more, on a fresh connection, where
    /// `resend(failure, reused)` (the policy core's rule) allows it. When no connection could
    /// be opened, the request comes back with the failure, untouched, for another upstream.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<LimitedBody>,
        resend: impl Fn(&Failure, bool) -> bool,
    ) -> Result<Response<UpstreamBody>, (Failure, Option<Unsent>)> {
        let mut fresh_only = false;
        loop {
            let (mut link, reused) = match self.link(fresh_only).await {
                Ok(got) => got,
                Err(f) => return Err((f, Some(Box::new(req)))),
            };
            // The copy for a resend is made only where the rule could allow one (the probe
            // failure allocates nothing).
            let again = (reused && !fresh_only && resend(&Failure::Closed(String::new()), true))
                .then(|| bodiless_copy(&req));
            // Let the other requests that are ready be read first, so their upstream writes go
            // out together: an upstream on the same core (the load benchmark's origin) then
            // wakes once per batch instead of once per request (measured: 39k -> 44k req/s).
            tokio::task::yield_now().await;
            let mut response = std::pin::pin!(link.sender.try_send_request(req));
            let result = poll_fn(|cx| {
                link.drive(cx);
                response.as_mut().poll(cx)
            })
            .await;
            match result {
                Ok(resp) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                    // The connection hands its socket to the upgrade when driven past the 101;
                    // it is not the pool's any more.
                    if let Some(driver) = link.driver.take() {
                        tokio::spawn(driver);
                    }
                    return Ok(resp.map(|body| UpstreamBody { inner: body, lease: None, ended: false }));
                }
                Ok(resp) => {
                    let reusable = resp.version() == http::Version::HTTP_11;
                    let lease = Lease { link, pool: self.clone(), reusable };
                    return Ok(resp.map(|body| UpstreamBody {
                        inner: body,
                        lease: Some(lease),
                        ended: false,
                    }));
                }
                Err(mut e) => {
                    if let (Some(unsent), true) = (e.take_message(), reused) {
                        req = unsent;
                        continue;
                    }
                    let failure = classify(e.into_error());
                    match again {
                        Some(copy) if resend(&failure, reused) => {
                            tracing::debug!(failure = ?failure, "a reused upstream connection failed; sending again");
                            req = copy;
                            fresh_only = true;
                        }
                        _ => return Err((failure, None)),
                    }
                }
            }
        }
    }

    /// A connection for hyper's client and whether it was pooled, as [`Self::stream`] finds
    /// one for the fast path.
    async fn link(&self, fresh: bool) -> Result<(Link, bool), Failure> {
        let mut deadline = None;
        let mut queued = None;
        loop {
            if queued.is_some() || !self.waiters.any() {
                if !fresh {
                    while let Some(idle) = self.idle.pop() {
                        if let Some(link) = ready(idle).await {
                            return Ok((link, true));
                        }
                    }
                }
                if let Some(slot) = self.free_slot()? {
                    return Ok((self.connect(slot).await?, false));
                }
            }
            match self.wait(&mut queued, &mut deadline).await? {
                Waited::Handed(Handed::Link(idle)) if !fresh => {
                    if let Some(link) = ready(idle).await {
                        return Ok((link, true));
                    }
                }
                // Of the other transport: closing it frees its place.
                Waited::Handed(_) | Waited::Again => {}
                Waited::Slot(slot) => return Ok((self.connect(slot).await?, false)),
            }
        }
    }

    /// Closes idle connections that have ended or been idle too long, so an upstream that
    /// closed them is not left with half-closed sockets until the next request comes.
    pub fn sweep(&self) {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for _ in 0..self.idle.len() {
            let Some(Idle { mut link, since }) = self.idle.pop() else { break };
            if idle_since(since) < IDLE_FOR && link.drive(&mut cx) {
                let _ = self.idle.push(Idle { link, since });
            }
        }
        for _ in 0..self.streams.len() {
            let Some(IdleStream { stream, since }) = self.streams.pop() else { break };
            if idle_since(since) < IDLE_FOR && is_quiet(&*stream) {
                let _ = self.streams.push(IdleStream { stream, since });
            }
        }
    }

    async fn connect(&self, slot: OwnedSemaphorePermit) -> Result<Link, Failure> {
        let (stream, probe) = SharedStream::new(self.connect_socket().await?, slot);
        // The response head limits of `super::response`: its byte size set here; its header
        // count is hyper's default (100, `response::MAX_HEADERS`), which setting would move
        // hyper's header array to the heap for every response.
        let (sender, conn) = http1::Builder::new()
            .max_header_size(super::response::MAX_HEAD)
            // What one upstream read brings in, as the fast path's reads: the most a response
            // not yet taken by its client holds per stream, beside the HTTP/2 send buffer
            // (`crate::listener`). Fixed, so no connection's buffer grows with its bodies.
            .read_buf_exact_size(Some(READ_BUF))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::Connect(e.to_string()))?;
        let mut link = Link { sender, driver: Some(Box::pin(conn.with_upgrades())), probe };
        match poll_fn(|cx| link.poll_ready(cx)).await {
            true => Ok(link),
            false => Err(Failure::Connect(format!("connection to {} ended at once", self.authority))),
        }
    }
}

/// A request no upstream connection took: nothing of it was sent.
pub type Unsent = Box<Request<LimitedBody>>;

/// What a hyper client error says of the exchange: the connection ended (closed or reset)
/// before a whole response head, or the upstream answered what is not HTTP/1.1.
fn classify(e: hyper::Error) -> Failure {
    let io_kind = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    let closed = e.is_incomplete_message()
        || e.is_canceled()
        || matches!(
            io_kind,
            Some(
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            )
        );
    if closed { Failure::Closed(e.to_string()) } else { Failure::Upstream(e.to_string()) }
}

/// A request without a body, again: method, target, version and headers (for a resend).
pub(super) fn bodiless_copy(req: &Request<LimitedBody>) -> Request<LimitedBody> {
    let mut copy = Request::new(LimitedBody::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// An idle connection ready for a request, or `None` (then closed).
async fn ready(Idle { mut link, since }: Idle) -> Option<Link> {
    if idle_since(since) >= IDLE_FOR {
        return None;
    }
    // Usually ready at once; a connection still taking in the end of its last response gets a
    // moment, and one that ended while idle is dropped.
    let ready = match poll_fn(|cx| Poll::Ready(link.poll_ready(cx))).await {
        Poll::Ready(ready) => ready,
        Poll::Pending => {
            tokio::time::timeout(SETTLE_FOR, poll_fn(|cx| link.poll_ready(cx))).await == Ok(true)
        }
    };
    (ready && fit_for_reuse(since, &link.probe)).then_some(link)
}

/// How long a connection given back at `since` (`now_ms`) has been idle.
fn idle_since(since: u64) -> Duration {
    Duration::from_millis(now_ms().saturating_sub(since))
}

/// Whether a connection idle since `since` may carry a request: not idle too long, still open,
/// nothing unread on it. One rule for both transports' idle connections.
fn fit_for_reuse(since: u64, socket: &TcpStream) -> bool {
    let idle = idle_since(since);
    if idle >= IDLE_FOR {
        return false;
    }
    // Readiness is cleared by a read that left the socket empty (tokio does so on a short
    // read, with the readiness seen before that read, so nothing that came after is lost).
    let mut cx = Context::from_waker(std::task::Waker::noop());
    if idle < TRUST_READINESS_FOR && socket.poll_read_ready(&mut cx).is_pending() {
        return true;
    }
    // The reactor may not have seen the upstream's close yet; the kernel has.
    is_quiet(socket)
}

/// Whether an idle socket is still open with nothing unread on it. Asked of the kernel (a
/// non-blocking peek), not of the reactor's readiness record, which may be stale.
fn is_quiet(socket: &impl std::os::fd::AsFd) -> bool {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    matches!(socket2::SockRef::from(socket).peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// A connection lent to one exchange; back to the pool when its response has been read to the end.
struct Lease {
    link: Link,
    pool: Arc<Connections>,
    /// The upstream answered in HTTP/1.1: an HTTP/1.0 answer's connection is not reused, as
    /// hyper would speak HTTP/1.0 on it from then on (and drop a chunked body's framing).
    reusable: bool,
}

impl Lease {
    fn release(self) {
        if self.reusable && self.link.driver.is_some() {
            // Not polled while idle; the next request drives it until it is ready.
            self.pool.give_back(Handed::Link(Idle { link: self.link, since: now_ms() }));
        }
    }
}

/// An upstream response body; its connection goes back to the pool when it has been read to
/// the end, and is closed when it is dropped before (the rest of the response would be unread).
pub struct UpstreamBody {
    inner: Incoming,
    lease: Option<Lease>,
    /// Read to the end (a chunked body never reports `is_end_stream`; its last poll does).
    ended: bool,
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            if self.ended || self.inner.is_end_stream() {
                lease.release();
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let mut polled = Pin::new(&mut this.inner).poll_frame(cx);
        if polled.is_pending() {
            // The body's bytes come from the connection, which only moves when polled: let it
            // read, then look again (it has usually buffered the whole body already).
            if let Some(lease) = this.lease.as_mut() {
                lease.link.drive(cx);
                polled = Pin::new(&mut this.inner).poll_frame(cx);
            }
        }
        match &polled {
            Poll::Ready(None) => self.ended = true,
            // Trailers are not relayed (on either transport): the body ends before them.
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => {
                self.ended = true;
                return Poll::Ready(None);
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An upstream that answers each connection's first request, then closes it after `linger`.
    async fn one_shot_upstream(linger: Duration) -> Authority {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                    tokio::time::sleep(linger).await;
                });
            }
        });
        format!("127.0.0.1:{}", addr.port()).parse().unwrap()
    }

    async fn get(conns: &Arc<Connections>) -> Bytes {
        let req = Request::get("/").header("host", "a").body(LimitedBody::empty()).unwrap();
        let resp = conns.send(req, |_, _| false).await.map_err(|(f, _)| f).unwrap();
        resp.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_finished_connection_is_pooled_and_swept_once_the_upstream_closes_it() {
        let conns = Connections::new(
            one_shot_upstream(Duration::from_millis(100)).await,
            Duration::from_secs(1),
            256,
        );
        assert_eq!(get(&conns).await, "ok");
        assert_eq!(conns.idle.len(), 1, "a response read to the end gives its connection back");
        conns.sweep();
        assert_eq!(conns.idle.len(), 1, "still open upstream: kept");
        tokio::time::sleep(Duration::from_millis(400)).await;
        conns.sweep();
        assert_eq!(conns.idle.len(), 0, "closed by the upstream while idle: swept");
        // The next request opens a new connection.
        assert_eq!(get(&conns).await, "ok");
    }

    #[tokio::test]
    async fn only_quiet_open_sockets_are_taken_from_the_pool() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Connections::new(
            format!("127.0.0.1:{}", addr.port()).parse().unwrap(),
            Duration::from_secs(1),
            256,
        );
        let pair = || async {
            let (c, s) = tokio::join!(TcpStream::connect(addr), listener.accept());
            let slot = conns.free_slot().unwrap().unwrap();
            (UpstreamStream::new(c.unwrap(), slot), s.unwrap().0)
        };
        let (quiet, _q) = pair().await;
        conns.keep_stream(quiet);
        assert!(conns.take_stream().is_some(), "an open, silent socket is reused");

        // A response read to its end by a read that left the socket empty (tokio then clears
        // the readiness), then bytes the upstream sent after it: once the reactor has heard of
        // them, the socket is never handed out.
        let (mut chatty, mut up) = pair().await;
        up.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await.unwrap();
        let mut got = bytes::BytesMut::with_capacity(4096);
        while got.len() < 40 {
            tokio::io::AsyncReadExt::read_buf(&mut *chatty, &mut got).await.unwrap();
        }
        up.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nSECRET").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        conns.keep_stream(chatty);
        // Idle longer than the reactor is trusted for: the kernel is asked, whatever the
        // reactor recorded (here: nothing, as if it had not heard of the bytes yet).
        let (stale, mut up3) = pair().await;
        up3.write_all(b"garbage").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _ = stale
            .try_io(tokio::io::Interest::READABLE, || Err::<(), _>(std::io::ErrorKind::WouldBlock.into()));
        let since = now_ms() - TRUST_READINESS_FOR.as_millis() as u64;
        let _ = conns.streams.push(IdleStream { stream: stale, since });
        let (closed, up2) = pair().await;
        drop(up2);
        tokio::time::sleep(Duration::from_millis(50)).await;
        conns.keep_stream(closed);
        assert!(conns.take_stream().is_none(), "a socket with unread bytes or closed is dropped");
    }

    #[tokio::test]
    async fn the_cap_counts_every_open_connection_and_idle_ones_give_their_place_up() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let authority = format!("127.0.0.1:{}", addr.port()).parse().unwrap();
        let conns = Connections::new(authority, Duration::from_millis(200), 1);
        let accept = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let (first, _) = conns.stream(true).await.unwrap();
        // In use: the next waits `connect_timeout`, then is busy.
        assert!(matches!(conns.stream(true).await, Err(Failure::Busy)));
        // Idle in the pool: a request that wants a new connection closes it to make room.
        conns.keep_stream(first);
        let (second, reused) = conns.stream(true).await.unwrap();
        assert!(!reused);

        // Requests waiting for a place are handed connections as they are given back, oldest
        // first, instead of failing after `connect_timeout` while newcomers take them.
        let conns = Connections::new(conns.authority.clone(), Duration::from_secs(5), 1);
        drop(second);
        let (held, _) = conns.stream(false).await.unwrap();
        let order = Arc::new(tokio::sync::Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for who in 0..3 {
            let (pool, order) = (conns.clone(), order.clone());
            waiting.push(tokio::spawn(async move {
                let (stream, reused) = pool.stream(false).await.unwrap();
                order.lock().await.push((who, reused));
                pool.keep_stream(stream);
            }));
            // Each queues before the next comes.
            while conns.waiters.count() < who + 1 {
                tokio::task::yield_now().await;
            }
        }
        conns.keep_stream(held);
        for w in waiting {
            w.await.unwrap();
        }
        assert_eq!(*order.lock().await, vec![(0, true), (1, true), (2, true)]);
        accept.abort();
    }

    #[tokio::test]
    async fn a_pooled_connection_the_upstream_closed_is_replaced_unseen() {
        let conns = Connections::new(one_shot_upstream(Duration::ZERO).await, Duration::from_secs(1), 256);
        for _ in 0..5 {
            assert_eq!(get(&conns).await, "ok");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
