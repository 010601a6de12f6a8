//! Binding, accepting, TLS, connection limits, idle timeouts and the graceful drain.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::framing::{Finding, FramingWatch};
use crate::gateway::Gateway;
use crate::server::{self, ConnInfo, Listener};

/// The connections of a set of listeners, and the signal that asks them to finish: on it, each
/// connection completes its in-flight requests and closes (HTTP/1: after the current response;
/// HTTP/2: GOAWAY).
#[derive(Default)]
pub struct Drain {
    signal: CancellationToken,
    live: AtomicUsize,
    gone: Notify,
}

impl Drain {
    /// Asks every connection to finish, then waits until none is left.
    pub async fn drain(&self) {
        self.signal.cancel();
        loop {
            let notified = self.gone.notified();
            if self.live.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    fn enter(self: &Arc<Self>) -> Live {
        self.live.fetch_add(1, Ordering::AcqRel);
        Live(self.clone())
    }
}

struct Live(Arc<Drain>);

impl Drop for Live {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.gone.notify_waiters();
        }
    }
}

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Accept {
    pub listener: TcpListener,
    /// Whether connections start with a TLS handshake (the certificate comes from the runtime
    /// snapshot current at accept time, so a reload changes it without rebinding).
    pub tls: bool,
    pub kind: Listener,
    /// Shared by the listeners of one kind: past its permits, new connections are refused.
    pub slots: Arc<Semaphore>,
}

/// The HTTP settings of a snapshot: built per connection, so a reload applies to new ones.
fn http_builder(rt: &crate::runtime::Runtime) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(rt.header_read_timeout)
        .max_buf_size(rt.max_header_bytes)
        .max_headers(rt.max_headers)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(rt.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(rt.idle_timeout));
    builder
}

/// Accepts connections until `stop` fires; each connection is counted in `conns` so the caller
/// can drain them.
pub async fn accept_loop(accept: Accept, gw: Arc<Gateway>, stop: CancellationToken, conns: Arc<Drain>) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = accept.listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = accept.slots.clone().try_acquire_owned() else {
            // Refusing costs nothing; serving would let a flood exhaust memory.
            tracing::debug!(%peer, "connection limit reached; refused");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let rt = gw.runtime();
        let builder = http_builder(&rt);
        let acceptor = if accept.tls { rt.tls.clone().map(TlsAcceptor::from) } else { None };
        let idle = rt.idle_timeout;
        let max_head = rt.max_header_bytes;
        drop(rt);
        let conn = Conn {
            peer,
            kind: accept.kind,
            gw: gw.clone(),
            idle,
            max_head,
            drain: conns.clone(),
            live: conns.enter(),
        };
        let wants_tls = accept.tls;
        tokio::spawn(async move {
            let _slot = slot;
            match (wants_tls, acceptor) {
                (true, Some(acceptor)) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => conn.serve(tls_stream, true, &builder).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
                (true, None) => tracing::warn!(%peer, "no TLS configuration; connection dropped"),
                (false, _) => conn.serve(stream, false, &builder).await,
            }
        });
    }
}

struct Conn {
    peer: SocketAddr,
    kind: Listener,
    gw: Arc<Gateway>,
    idle: Duration,
    max_head: usize,
    drain: Arc<Drain>,
    live: Live,
}

impl Conn {
    async fn serve<IO>(self, io: IO, tls: bool, builder: &auto::Builder<TokioExecutor>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn { peer, kind, gw, idle, max_head, drain, live: _live } = self;
        let _open = (kind == Listener::Main).then(|| OpenConnection::new(gw.metrics.clone()));
        let activity = Arc::new(Activity::new());
        let info = ConnInfo::new(peer, tls);
        let act = activity.clone();
        let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            let gw = gw.clone();
            let info = info.clone();
            let busy = act.enter();
            if act.next_is_malformed() {
                req.extensions_mut().insert(server::AmbiguousFraming);
            }
            async move {
                let resp = server::handle(gw, info, kind, req).await;
                drop(busy);
                resp
            }
        });
        let watch = FramingWatch::new(max_head);
        let io = ActivityIo { inner: io, activity: activity.clone(), watch };
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut draining = false;
        loop {
            let deadline = activity.idle_deadline(idle);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = drain.signal.cancelled(), if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    if activity.is_idle(idle) {
                        // No request in flight and no byte either way: drop the connection.
                        tracing::debug!(%peer, "idle timeout");
                        return;
                    }
                }
            }
        }
    }
}

/// Counts a main-listener connection in the open-connections gauge while it lives.
struct OpenConnection(Arc<crate::metrics::Metrics>);

impl OpenConnection {
    fn new(m: Arc<crate::metrics::Metrics>) -> Self {
        m.open_connections.fetch_add(1, Ordering::Relaxed);
        Self(m)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// When a connection last moved a byte, how many requests it has in flight, and which of its
/// HTTP/1 requests the framing watch refuses.
struct Activity {
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    /// Requests handed to the service so far.
    requests: AtomicU64,
    /// One more than the index of the request to refuse; 0 for none.
    malformed: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            last_ms: AtomicU64::new(now_ms()),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.last_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Counts a request handed to the service; true when the watch refuses it. HTTP/1 hands
    /// requests over one at a time, in the order their heads arrived.
    fn next_is_malformed(&self) -> bool {
        let index = self.requests.fetch_add(1, Ordering::Relaxed);
        self.malformed.load(Ordering::Relaxed) == index + 1
    }

    fn enter(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    fn idle_deadline(&self, idle: Duration) -> Instant {
        epoch() + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle
    }

    fn is_idle(&self, idle: Duration) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
            && now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed)) >= idle.as_millis() as u64
    }
}

/// A request in flight on its connection; the connection is not idle until it is dropped.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// The connection's IO, noting the time of every successful read or write and showing what the
/// client sends to the framing watch.
struct ActivityIo<T> {
    inner: T,
    activity: Arc<Activity>,
    watch: FramingWatch,
}

impl<T: AsyncRead + Unpin> AsyncRead for ActivityIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
            if !self.watch.is_off() {
                let this = &mut *self;
                if let Finding::Ambiguous(i) = this.watch.feed(&buf.filled()[before..]) {
                    this.activity.malformed.store(i + 1, Ordering::Relaxed);
                }
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ActivityIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
