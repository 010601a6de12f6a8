//! Binding, accepting, TLS, connection limits, idle timeouts and the graceful drain.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use crate::tls::TlsAcceptor;
use bytes::{Buf, Bytes, BytesMut};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::body::GatewayBody;
use crate::fastpath;
use crate::framing::{Finding, FramingWatch, Unreadable};
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
        let _ = stream.set_nodelay(true);
        let rt = gw.runtime();
        let builder = http_builder(&rt);
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
        tokio::spawn(async move {
            match (wants_tls, acceptor) {
                (true, Some(acceptor)) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            conn.serve(tls_stream, true, h2, &builder).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
                (true, None) => tracing::warn!(%peer, "no TLS configuration; connection dropped"),
                (false, _) => conn.serve(stream, false, false, &builder).await,
            }
        });
    }
}

/// How long a connection may wait: between requests (`idle`), and for the rest of a request
/// head once it has started or, on a new connection, for the first one (`head`).
#[derive(Clone, Copy)]
struct Limits {
    idle: Duration,
    head: Duration,
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
    /// start: HTTP/2, the admin listener) with hyper, which gets the bytes read so far.
    async fn serve<IO>(self, io: IO, tls: bool, h2: bool, builder: &auto::Builder<TokioExecutor>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn { slot, peer, kind, gw, limits, max_head, drain, live: _live, fast, max_headers } = self;
        let _open = (kind == Listener::Main).then(|| OpenConnection::new(gw.metrics.clone()));
        let activity = Arc::new(Activity::new());
        let info = ConnInfo::new(peer, tls);
        let watch = FramingWatch::new(max_head, max_headers);
        activity.h2.store(h2, Ordering::Relaxed);
        let mut io = ActivityIo::new(io, activity.clone(), watch, gw.clone());
        io.hyper = !fast || h2;
        let mut buf = BytesMut::new();
        let mut draining = false;
        if fast && !h2 {
            let lane = fastpath::Lane {
                gw: &gw,
                info: &info,
                activity: &activity,
                drain: &drain.signal,
                max_head,
                max_headers,
            };
            let served = fastpath::serve(&mut io, &mut buf, &lane);
            tokio::pin!(served);
            loop {
                let deadline = activity.next_check(limits);
                tokio::select! {
                    outcome = served.as_mut() => match outcome {
                        fastpath::Outcome::Close => return,
                        fastpath::Outcome::Handoff => {
                            gw.metrics.fast_path_handoffs.fetch_add(1, Ordering::Relaxed);
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
            async move {
                let resp = server::handle(gw, info, kind, req).await;
                let responding = Some(busy.responding());
                resp.map(|r| r.map(|inner| TrackedBody { inner, responding }))
            }
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

/// What an upgraded tunnel keeps of its connection, carried by the upgrade request (only
/// those, so no per-request allocation): its place under `max_connections`, and the activity
/// record its idle timeout reads (the tunnel's bytes still pass through the connection's IO
/// wrapper). The HTTP connection hands its socket over at the 101 and stops watching it.
#[derive(Clone)]
pub struct TunnelHold {
    _slot: Arc<OwnedSemaphorePermit>,
    activity: Arc<Activity>,
    idle: Duration,
}

impl TunnelHold {
    /// Resolves once no byte has moved either way for the idle timeout.
    pub async fn idle(&self) {
        loop {
            let (now, due) = (now_ms(), self.activity.quiet_due_ms(self.idle));
            if now >= due {
                return;
            }
            tokio::time::sleep(Duration::from_millis(due - now)).await;
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

/// When a connection last moved a byte, since when it has been waiting for the rest of a
/// request head, how many requests it has in flight, and which of its HTTP/1 requests the framing
/// watch refuses.
pub(crate) struct Activity {
    last_ms: AtomicU64,
    /// When the pending head's first byte came ([`NO_HEAD`]: none pending); on a new connection,
    /// when it was accepted.
    head_ms: AtomicU64,
    in_flight: AtomicUsize,
    /// Responses whose head is out and whose body is still being written.
    responding: AtomicUsize,
    /// Requests handed to the service so far.
    requests: AtomicU64,
    /// One more than the index of the request to refuse; 0 for none.
    malformed: AtomicU64,
    /// The fast path is waiting for a request with nothing of it read: a drain may close now.
    between: AtomicBool,
    /// An HTTP/2 connection: only requests and response data count as activity (PING,
    /// SETTINGS and WINDOW_UPDATE frames do not keep it open).
    h2: AtomicBool,
}

const NO_HEAD: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        let now = now_ms();
        Self {
            last_ms: AtomicU64::new(now),
            head_ms: AtomicU64::new(now),
            in_flight: AtomicUsize::new(0),
            responding: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            between: AtomicBool::new(false),
            h2: AtomicBool::new(false),
        }
    }

    fn touch(&self) -> u64 {
        let now = now_ms();
        self.last_ms.store(now, Ordering::Relaxed);
        now
    }

    /// Bytes moved on the connection: activity for HTTP/1; for HTTP/2 only requests and
    /// response data are (see `h2`), so control frames alone let it reach its idle timeout.
    fn moved(&self) -> u64 {
        if self.h2.load(Ordering::Relaxed) { now_ms() } else { self.touch() }
    }

    /// Notes whether, after the bytes just read at `now`, part of a head is waiting for the rest.
    fn head_pending(&self, pending: bool, now: u64) {
        let since = self.head_ms.load(Ordering::Relaxed);
        let next = match (pending, since) {
            (false, _) => NO_HEAD,
            (true, NO_HEAD) => now,
            (true, started) => started,
        };
        if next != since {
            self.head_ms.store(next, Ordering::Relaxed);
        }
    }

    /// Counts a request handed to the service; true when the watch refuses it. HTTP/1 hands
    /// requests over one at a time, in the order their heads arrived.
    fn next_is_malformed(&self) -> bool {
        let index = self.requests.fetch_add(1, Ordering::Relaxed);
        self.malformed.load(Ordering::Relaxed) == index + 1
    }

    /// Counts a request the fast path is about to serve; false (and not counted) when the
    /// watch refuses it, which hyper's path then does.
    pub(crate) fn claim_request(&self) -> bool {
        let index = self.requests.load(Ordering::Relaxed);
        if self.malformed.load(Ordering::Relaxed) == index + 1 {
            return false;
        }
        self.requests.store(index + 1, Ordering::Relaxed);
        true
    }

    pub(crate) fn set_between_requests(&self, between: bool) {
        self.between.store(between, Ordering::Relaxed);
    }

    pub(crate) fn enter(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// When (in `now_ms` time) the connection falls due, and which timeout that is: the pending
    /// head's deadline or the idle one, whichever comes first. `None` while a request is in
    /// flight, which neither timeout interrupts.
    fn due_ms(&self, limits: Limits) -> Option<(u64, &'static str)> {
        if self.in_flight.load(Ordering::Relaxed) != 0 {
            return None;
        }
        let idle = (self.quiet_due_ms(limits.idle), "idle timeout");
        if self.responding.load(Ordering::Relaxed) != 0 {
            // A response body on its way: a head pipelined behind it is not late yet.
            return Some(idle);
        }
        Some(match self.head_ms.load(Ordering::Relaxed) {
            NO_HEAD => idle,
            since => idle.min((since.saturating_add(limits.head.as_millis() as u64), "header read timeout")),
        })
    }

    /// When the connection will have moved no byte either way for `idle`.
    fn quiet_due_ms(&self, idle: Duration) -> u64 {
        self.last_ms.load(Ordering::Relaxed).saturating_add(idle.as_millis() as u64)
    }

    /// When to look again: when the connection falls due, and at least every half head timeout,
    /// so a head that starts in between is cut close to its deadline.
    fn next_check(&self, limits: Limits) -> Instant {
        let now = now_ms();
        let mut at = now + (limits.head.as_millis() as u64 / 2).max(1);
        if let Some((due, _)) = self.due_ms(limits) {
            at = at.min(due);
        }
        epoch() + Duration::from_millis(at.max(now))
    }

    /// Why the connection should close now, if it should: a head not finished in time, or no
    /// byte either way for the idle timeout. Never while a request is in flight.
    fn expired(&self, limits: Limits) -> Option<&'static str> {
        self.due_ms(limits).filter(|&(due, _)| now_ms() >= due).map(|(_, why)| why)
    }
}

/// A request in flight on its connection, until its response head is out: no timeout applies.
pub(crate) struct Busy(Arc<Activity>);

impl Busy {
    /// The response head is out: from now a body that stops moving for the idle timeout ends
    /// the connection, while the header read timeout waits for the body's end.
    pub(crate) fn responding(self) -> Responding {
        self.0.responding.fetch_add(1, Ordering::Relaxed);
        Responding(self.0.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.retime_head();
    }
}

/// A response whose body is being written (see [`Busy::responding`]).
pub(crate) struct Responding(Arc<Activity>);

impl Drop for Responding {
    fn drop(&mut self) {
        self.0.responding.fetch_sub(1, Ordering::Relaxed);
        self.0.retime_head();
    }
}

impl Activity {
    /// A pipelined head that arrived while a request was served is timed from now.
    fn retime_head(&self) {
        let now = self.touch();
        if self.head_ms.load(Ordering::Relaxed) != NO_HEAD {
            self.head_ms.store(now, Ordering::Relaxed);
        }
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

/// The connection's IO, noting the time of every successful read or write and showing what the
/// client sends to the framing watch. `pre` holds bytes the fast path read (and the watch saw)
/// before handing the connection to hyper, which reads them first.
struct ActivityIo<T> {
    inner: T,
    activity: Arc<Activity>,
    watch: FramingWatch,
    /// Bytes read from the client and not yet given to hyper.
    pre: BytesMut,
    /// hyper reads from here (before, the fast path read its own heads).
    hyper: bool,
    /// Bytes read from the client, and the offset in them of the next byte hyper gets.
    read: u64,
    pos: u64,
    /// A head nobody can read, found by the watch: hyper gets nothing from its first byte on.
    refusal: Option<Refusal>,
    gw: Arc<Gateway>,
    /// hyper has written bytes it has not flushed yet.
    unflushed: bool,
}

/// The answer to a head nobody can read, written in its place (`ActivityIo::cut_off`).
struct Refusal {
    at: u64,
    why: Unreadable,
    out: Option<Bytes>,
}

impl<T> ActivityIo<T> {
    fn new(inner: T, activity: Arc<Activity>, watch: FramingWatch, gw: Arc<Gateway>) -> Self {
        Self {
            inner,
            activity,
            watch,
            pre: BytesMut::new(),
            hyper: true,
            read: 0,
            pos: 0,
            refusal: None,
            gw,
            unflushed: false,
        }
    }

    /// hyper serves the rest of the connection, starting with `pre` (read, not yet served).
    fn hand_to_hyper(&mut self, pre: BytesMut) {
        self.pos = self.read - pre.len() as u64;
        self.pre = pre;
        self.hyper = true;
    }

    /// How many bytes from `pos` on hyper may have: those before a head that is not complete
    /// yet (so hyper never judges a head by rules of its own) or that nobody can read.
    fn allowed(&self) -> usize {
        let mut end = u64::MAX;
        if let Some(r) = &self.refusal {
            end = end.min(r.at);
        }
        if let Some(start) = self.watch.pending_head_start() {
            end = end.min(start);
        }
        if end == u64::MAX {
            return usize::MAX;
        }
        usize::try_from(end.saturating_sub(self.pos)).unwrap_or(usize::MAX - 1)
    }

    /// Takes note of bytes read from the client: activity, and what the watch finds in them.
    fn observe(&mut self, data: &[u8]) {
        if self.read == 0 && data.starts_with(b"PRI * HTTP/2.0") {
            self.activity.h2.store(true, Ordering::Relaxed);
        }
        let now = self.activity.moved();
        self.read += data.len() as u64;
        if !self.watch.is_off() {
            match self.watch.feed(data) {
                Finding::Ambiguous(i) => self.activity.malformed.store(i + 1, Ordering::Relaxed),
                Finding::Unreadable { at, why } => self.refusal = Some(Refusal { at, why, out: None }),
                Finding::Fine => {}
            }
        }
        self.activity.head_pending(self.watch.head_pending(), now);
    }

    /// What hyper reads where a refused head begins. While a response is in flight or hyper's
    /// bytes are not all out: nothing yet (hyper reads again once it is done). Then the refusal
    /// is written in the head's place, the connection shut, and hyper reads the end.
    fn cut_off(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>
    where
        T: AsyncWrite + Unpin,
    {
        let busy = self.activity.in_flight.load(Ordering::Acquire) != 0
            || self.activity.responding.load(Ordering::Acquire) != 0;
        if busy || self.unflushed {
            return Poll::Pending;
        }
        if let Some(mut out) = self.refusal_bytes() {
            while !out.is_empty() {
                match Pin::new(&mut self.inner).poll_write(cx, &out) {
                    Poll::Ready(Ok(n)) if n > 0 => out.advance(n),
                    Poll::Ready(_) => break,
                    Poll::Pending => {
                        if let Some(r) = self.refusal.as_mut() {
                            r.out = Some(out);
                        }
                        return Poll::Pending;
                    }
                }
            }
            if let Some(r) = self.refusal.as_mut() {
                r.out = Some(Bytes::new());
            }
        }
        ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
        ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
        Poll::Ready(Ok(()))
    }

    /// The refusal's bytes, made once (SPEC §3 body, a new request id, `Connection: close`).
    fn refusal_bytes(&mut self) -> Option<Bytes> {
        let r = self.refusal.as_mut()?;
        if r.out.is_none() {
            let e = r.why.into_error();
            let request_id = self.gw.new_request_id();
            crate::gate::record::log_failure(&e, &request_id);
            let mut out = Vec::new();
            fastpath::write_own(&mut out, e.into_response(), request_id.as_bytes(), true, false);
            r.out = Some(Bytes::from(out));
        }
        r.out.clone()
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for ActivityIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.hyper {
            // The fast path reads its own heads (and answers those nobody can read).
            let before = buf.filled().len();
            let r = Pin::new(&mut this.inner).poll_read(cx, buf);
            let got = buf.filled().len() - before;
            if matches!(r, Poll::Ready(Ok(()))) && got > 0 {
                this.observe(&buf.filled()[before..]);
            }
            return r;
        }
        loop {
            let allowed = this.allowed();
            if !this.pre.is_empty() && allowed > 0 {
                let n = this.pre.len().min(buf.remaining()).min(allowed);
                buf.put_slice(&this.pre[..n]);
                this.pre.advance(n);
                this.pos += n as u64;
                return Poll::Ready(Ok(()));
            }
            if this.refusal.as_ref().is_some_and(|r| this.pos >= r.at) {
                return this.cut_off(cx);
            }
            if this.pre.is_empty() && allowed == usize::MAX {
                // The usual case: straight into hyper's buffer, and what of it hyper may not
                // have yet (a head not complete, or refused) is kept back.
                let before = buf.filled().len();
                ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                let got = buf.filled().len() - before;
                if got == 0 {
                    return Poll::Ready(Ok(()));
                }
                this.observe(&buf.filled()[before..]);
                let n = this.allowed().min(got);
                this.pre.extend_from_slice(&buf.filled()[before + n..]);
                buf.set_filled(before + n);
                this.pos += n as u64;
                if n > 0 {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            // Bytes are kept back: what comes next is kept behind them until hyper may have it.
            let mut chunk = [0u8; 4096];
            let mut more = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut more))?;
            if more.filled().is_empty() {
                // The client ended inside a head it never finished: hyper gets the end.
                this.pre.clear();
                return Poll::Ready(Ok(()));
            }
            this.observe(more.filled());
            this.pre.extend_from_slice(more.filled());
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ActivityIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved();
            self.unflushed = true;
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
            self.activity.moved();
            self.unflushed = true;
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(r, Poll::Ready(Ok(()))) && std::mem::take(&mut self.unflushed) && self.refusal.is_some() {
            // A refusal waits for hyper's bytes to be out: let hyper read again now.
            cx.waker().wake_by_ref();
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
