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
use std::time::{Duration, Instant};

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
use super::stream::{SharedStream, UpstreamStream};
use crate::body::LimitedBody;

/// Idle connections kept per upstream; past this, a finished connection is closed.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed instead of reused: upstream servers close idle
/// keep-alive connections after a while (nginx: 75 s), and reusing one at that moment fails.
const IDLE_FOR: Duration = Duration::from_secs(50);
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
}

struct IdleStream {
    stream: UpstreamStream,
    since: Instant,
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

struct Idle {
    link: Link,
    since: Instant,
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
        })
    }

    /// The cap on connections open to this upstream.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// A kept-alive socket for the fast path that the upstream has not closed and has sent
    /// nothing more on, if one is left.
    pub fn take_stream(&self) -> Option<UpstreamStream> {
        while let Some(IdleStream { stream, since }) = self.streams.pop() {
            if since.elapsed() < IDLE_FOR && is_quiet(&*stream) {
                return Some(stream);
            }
        }
        None
    }

    /// Gives back a socket whose last response was read to its end.
    pub fn keep_stream(&self, stream: UpstreamStream) {
        let _ = self.streams.push(IdleStream { stream, since: Instant::now() });
    }

    /// A place for one more connection under the cap. When every place is taken, an idle
    /// connection (of either transport) gives its place up; when none is idle, the request
    /// waits for a place up to `connect_timeout` (then `Failure::Busy`: 503 `upstream.busy`).
    async fn slot(&self) -> Result<OwnedSemaphorePermit, Failure> {
        loop {
            match self.slots.clone().try_acquire_owned() {
                Ok(slot) => return Ok(slot),
                Err(TryAcquireError::Closed) => return Err(Failure::Busy),
                Err(TryAcquireError::NoPermits) => {}
            }
            // Closing an idle connection frees its place at once.
            if self.streams.pop().is_none() && self.idle.pop().is_none() {
                break;
            }
        }
        match tokio::time::timeout(self.connect_timeout, self.slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => Ok(slot),
            _ => Err(Failure::Busy),
        }
    }

    /// A new socket to the upstream, with its place under the cap.
    pub async fn open_stream(&self) -> Result<UpstreamStream, Failure> {
        let slot = self.slot().await?;
        Ok(UpstreamStream::new(self.connect_socket().await?, slot))
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
            let checked_out = if fresh_only { None } else { self.checkout().await };
            let (mut link, reused) = match checked_out {
                Some(link) => (link, true),
                None => match self.connect().await {
                    Ok(link) => (link, false),
                    Err(f) => return Err((f, Some(Box::new(req)))),
                },
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

    /// A pooled connection ready for a request, if one is left.
    async fn checkout(&self) -> Option<Link> {
        while let Some(Idle { mut link, since }) = self.idle.pop() {
            if since.elapsed() >= IDLE_FOR {
                continue;
            }
            // Usually ready at once; a connection still taking in the end of its last response
            // gets a moment, and one that ended while idle is dropped.
            let ready = match poll_fn(|cx| Poll::Ready(link.poll_ready(cx))).await {
                Poll::Ready(ready) => ready,
                Poll::Pending => {
                    tokio::time::timeout(SETTLE_FOR, poll_fn(|cx| link.poll_ready(cx))).await == Ok(true)
                }
            };
            // The reactor may not have seen the upstream's close yet; the kernel has.
            if ready && is_quiet(&*link.probe) {
                return Some(link);
            }
        }
        None
    }

    /// Closes idle connections that have ended or been idle too long, so an upstream that
    /// closed them is not left with half-closed sockets until the next request comes.
    pub fn sweep(&self) {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for _ in 0..self.idle.len() {
            let Some(Idle { mut link, since }) = self.idle.pop() else { break };
            if since.elapsed() < IDLE_FOR && link.drive(&mut cx) {
                let _ = self.idle.push(Idle { link, since });
            }
        }
        for _ in 0..self.streams.len() {
            let Some(IdleStream { stream, since }) = self.streams.pop() else { break };
            if since.elapsed() < IDLE_FOR && is_quiet(&*stream) {
                let _ = self.streams.push(IdleStream { stream, since });
            }
        }
    }

    async fn connect(&self) -> Result<Link, Failure> {
        let slot = self.slot().await?;
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
            let _ = self.pool.idle.push(Idle { link: self.link, since: Instant::now() });
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
            let slot = conns.slot().await.unwrap();
            (UpstreamStream::new(c.unwrap(), slot), s.unwrap().0)
        };
        let (quiet, _q) = pair().await;
        conns.keep_stream(quiet);
        assert!(conns.take_stream().is_some(), "an open, silent socket is reused");

        // Bytes that came after the last response, even with the reactor's readiness cleared
        // (as the fast path does after a read that emptied the socket): never handed out.
        let (chatty, mut up) = pair().await;
        up.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nSECRET").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = chatty
            .try_io(tokio::io::Interest::READABLE, || Err::<(), _>(std::io::ErrorKind::WouldBlock.into()));
        conns.keep_stream(chatty);
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
        let first = conns.open_stream().await.unwrap();
        // In use: the next waits `connect_timeout`, then is busy.
        assert!(matches!(conns.open_stream().await, Err(Failure::Busy)));
        // Idle in the pool: it is closed to make room.
        conns.keep_stream(first);
        assert!(conns.open_stream().await.is_ok());
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
