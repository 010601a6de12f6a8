//! The client connection: binding, accepting, TLS, connection limits, timeouts, the graceful
//! drain, and choosing its transport (the fast path first for plain HTTP/1.1, then hyper with
//! the bytes read so far). What it reads goes through [`io::ActivityIo`].

mod io;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::tls::TlsAcceptor;
use io::ActivityIo;

use crate::activity::{Activity, Limits, Responding, TunnelHold};
use crate::body::GatewayBody;
use crate::fastpath;
use crate::framing::FramingWatch;
use crate::gateway::Gateway;
use crate::server::{self, ConnInfo, Listener};

/// The connections of a set of listeners, and the signal that asks them to finish: on it, each
/// connection completes its in-flight requests and closes (HTTP/1: after the current response;
/// HTTP/2: GOAWAY).
#[derive(Default)]
pub struct Drain {
    signal: CancellationToken,
    /// The signal, for a fast path asking per request (a load, not the token's lock).
    draining: AtomicBool,
    live: AtomicUsize,
    gone: Notify,
}

impl Drain {
    /// Asks every connection to finish, then waits until none is left.
    pub async fn drain(&self) {
        self.draining.store(true, Ordering::Release);
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
        // The header read timeout is the listener's own (see `Activity`): hyper's re-arms a
        // timer for every request head, and it also cuts kept-alive connections between requests.
        .header_read_timeout(None)
        .max_buf_size(rt.max_header_bytes)
        .max_headers(rt.max_headers)
        .keep_alive(true);
    // What one HTTP/2 connection can make the gateway hold stays within a few MB, whatever
    // windows the client grants and however little it reads (SPEC §2): at most
    // `h2_max_concurrent_streams` streams, each holding at most `H2_SEND_BUF` of response not
    // yet sent (only then is more read from its upstream); and the client may send at most
    // `H2_STREAM_WINDOW` per stream and `H2_CONN_WINDOW` in all before the gateway reads it.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(rt.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(rt.h2_max_concurrent_streams)
        .max_send_buf_size(H2_SEND_BUF)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .keep_alive_interval(Some(rt.idle_timeout));
    builder
}

/// Response bytes one HTTP/2 stream may hold before its client takes them.
const H2_SEND_BUF: usize = 16 * 1024;
/// Request bytes an HTTP/2 client may send ahead, per stream and per connection.
const H2_STREAM_WINDOW: u32 = 64 * 1024;
const H2_CONN_WINDOW: u32 = 1024 * 1024;

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
        // Inherited from the listener on Linux (`lifecycle::bind`).
        #[cfg(not(target_os = "linux"))]
        let _ = stream.set_nodelay(true);
        let rt = gw.runtime();
        let acceptor = if accept.tls { rt.tls.clone().map(TlsAcceptor::from) } else { None };
        let limits = Limits { idle: rt.idle_timeout, head: rt.header_read_timeout };
        let max_head = rt.max_header_bytes;
        let max_headers = rt.max_headers;
        let fast = rt.fast_path && accept.kind == Listener::Main;
        drop(rt);
        let conn = Conn {
            slot: Arc::new(slot),
            peer,
            kind: accept.kind,
            gw: gw.clone(),
            limits,
            max_head,
            drain: conns.clone(),
            live: conns.enter(),
            fast,
            max_headers,
        };
        let wants_tls = accept.tls;
        // The connection's future is several kilobytes (the handshake, both transports' state):
        // boxed, it is written once, where it runs, instead of being moved into the spawn, the
        // task and its stage (callgrind: 6,700 instructions of memcpy per new connection).
        tokio::spawn(async move {
            match (wants_tls, acceptor) {
                (true, Some(acceptor)) => Box::pin(serve_tls(conn, acceptor, stream)).await,
                (true, None) => tracing::warn!(%peer, "no TLS configuration; connection dropped"),
                (false, _) => Box::pin(conn.serve(stream, false, false)).await,
            }
        });
    }
}

/// The TLS handshake (bounded by `HANDSHAKE_TIMEOUT`), then the connection.
async fn serve_tls(conn: Conn, acceptor: TlsAcceptor, stream: tokio::net::TcpStream) {
    let peer = conn.peer;
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls_stream)) => {
            let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
            conn.serve(tls_stream, true, h2).await
        }
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

struct Conn {
    /// The connection's place under `max_connections`; an upgraded tunnel keeps holding it.
    slot: Arc<OwnedSemaphorePermit>,
    peer: SocketAddr,
    kind: Listener,
    gw: Arc<Gateway>,
    limits: Limits,
    max_head: usize,
    drain: Arc<Drain>,
    live: Live,
    /// Start on the fast path (`crate::fastpath`).
    fast: bool,
    max_headers: usize,
}

impl Conn {
    /// Serves the connection: on the fast path while its requests fit it, then (or from the
    /// start: HTTP/2, the admin listener) with hyper, which gets the bytes read so far. Each
    /// part's future is boxed when it starts: the task spawned per connection stays small
    /// (it is moved whole on spawn), and a fast-path connection never allocates hyper's.
    async fn serve<IO>(self, io: IO, tls: bool, h2: bool)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (peer, limits, drain) = (self.peer, self.limits, &self.drain);
        let _open = (self.kind == Listener::Main).then(|| OpenConnection::new(self.gw.metrics.clone()));
        let activity = Arc::new(Activity::new());
        let info = ConnInfo::new(peer, tls);
        let watch = FramingWatch::new(self.max_head, self.max_headers);
        activity.h2.store(h2, Ordering::Relaxed);
        let mut io = ActivityIo::new(io, activity.clone(), watch, self.gw.clone());
        io.hyper = !self.fast || h2;
        let mut buf = BytesMut::new();
        let mut draining = false;
        if self.fast && !h2 {
            let lane = fastpath::Lane {
                gw: &self.gw,
                info: &info,
                activity: &activity,
                draining: &drain.draining,
                max_head: self.max_head,
                max_headers: self.max_headers,
            };
            let mut served = Box::pin(fastpath::serve(&mut io, &mut buf, &lane));
            loop {
                let deadline = activity.next_check(limits);
                tokio::select! {
                    outcome = served.as_mut() => match outcome {
                        fastpath::Outcome::Close => return,
                        fastpath::Outcome::Handoff => {
                            self.gw.metrics.fast_path_handoffs.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    },
                    _ = drain.signal.cancelled(), if !draining => {
                        // Otherwise the fast path closes after the response it is on.
                        draining = true;
                        if activity.between.load(Ordering::Relaxed) {
                            return;
                        }
                    }
                    _ = tokio::time::sleep_until(deadline.into()) => {
                        if let Some(why) = activity.expired(limits) {
                            tracing::debug!(%peer, "{why}");
                            return;
                        }
                    }
                }
            }
        }
        let hyper = Hyper { conn: self, draining, activity, info };
        Box::pin(hyper.serve(io, buf)).await
    }
}

/// What serving a connection with hyper needs: the connection, and what its fast path (if
/// it had one) leaves.
struct Hyper {
    conn: Conn,
    /// The drain had begun before hyper took the connection.
    draining: bool,
    activity: Arc<Activity>,
    info: ConnInfo,
}

impl Hyper {
    async fn serve<IO>(self, mut io: ActivityIo<IO>, buf: BytesMut)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Hyper { conn, draining, activity, info } = self;
        // The drain counter (`live`) is held until the connection ends.
        let Conn { slot, peer, kind, gw, limits, max_head, max_headers, drain, live: _live, fast: _ } = conn;
        let builder = http_builder(&gw.runtime());
        let act = activity.clone();
        let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            let gw = gw.clone();
            let info = info.clone();
            let busy = act.enter();
            if act.next_is_malformed() {
                req.extensions_mut().insert(server::AmbiguousFraming);
            }
            if req.headers().contains_key(hyper::header::UPGRADE) {
                let hold = TunnelHold { _slot: slot.clone(), activity: act.clone(), idle: limits.idle };
                req.extensions_mut().insert(hold);
            }
            // Boxed: hyper moves a stream's future several times before its task runs, and
            // this one is kilobytes (measured: 9 % of HTTP/2 time in memmove).
            Box::pin(async move {
                let resp = server::handle(gw, info, kind, req).await;
                let responding = Some(busy.responding());
                resp.map(|r| r.map(|inner| TrackedBody { inner, responding }))
            })
        });
        io.hand_to_hyper(buf);
        let io = TokioIo::new(io);
        let watch = Watch { activity: &activity, limits, drain: &drain, draining, peer };
        if activity.requests.load(Ordering::Relaxed) > 0 {
            // A connection that has spoken HTTP/1.1 stays HTTP/1.1: hyper's auto builder would
            // look for an HTTP/2 preface again (and cannot be told not to with upgrades on).
            let conn = http1_builder(max_head, max_headers).serve_connection(io, service).with_upgrades();
            watch.run(conn, |c| c.graceful_shutdown()).await
        } else {
            let conn = builder.serve_connection_with_upgrades(io, service);
            watch.run(conn, |c| c.graceful_shutdown()).await
        }
    }
}

/// What watches a connection hyper serves: the drain signal and the connection's timeouts.
struct Watch<'a> {
    activity: &'a Activity,
    limits: Limits,
    drain: &'a Drain,
    /// The drain had begun before hyper took the connection.
    draining: bool,
    peer: SocketAddr,
}

impl Watch<'_> {
    /// Drives `conn` to its end: on a drain, `graceful` asks it to finish; past a timeout it is
    /// dropped (nothing in flight then, so no response is lost).
    async fn run<C, E>(self, conn: C, graceful: impl Fn(Pin<&mut C>))
    where
        C: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let Watch { activity, limits, drain, mut draining, peer } = self;
        tokio::pin!(conn);
        if draining {
            graceful(conn.as_mut());
        }
        loop {
            let deadline = activity.next_check(limits);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = drain.signal.cancelled(), if !draining => {
                    draining = true;
                    graceful(conn.as_mut());
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    if let Some(why) = activity.expired(limits) {
                        tracing::debug!(%peer, "{why}");
                        return;
                    }
                }
            }
        }
    }
}

/// hyper's HTTP/1-only server, set as the auto builder's HTTP/1 side (see [`http_builder`]).
fn http1_builder(max_head: usize, max_headers: usize) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(max_head)
        .max_headers(max_headers)
        .keep_alive(true);
    b
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

/// A response body on hyper's path, `Responding` until it ends or is dropped.
pub struct TrackedBody {
    inner: GatewayBody,
    responding: Option<Responding>,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = <GatewayBody as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None | Some(Err(_))) => self.responding = None,
            // Response data moving is activity on HTTP/2 (see `Activity::h2`).
            Poll::Ready(Some(Ok(_))) => {
                if let Some(r) = &self.responding {
                    if r.0.h2.load(Ordering::Relaxed) {
                        r.0.touch();
                    }
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
