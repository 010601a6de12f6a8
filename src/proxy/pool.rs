//! Upstream connections: opened on demand, kept alive and reused (HTTP/1.1), one idle queue
//! per upstream, shared by both transports (each speaks HTTP/1.1 on them as bytes: the fast
//! path, and `super::exchange` for hyper's path). A request pops a socket from a lock-free
//! queue and gives it back when its response has been read to the end: no task, channel hop or
//! wake-up between the request and its connection.

use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use http::uri::Authority;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use super::Failure;
use super::room::Waiters;
use super::stream::UpstreamStream;
use crate::activity::now_ms;

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
/// The connections to one upstream.
pub struct Connections {
    authority: Authority,
    connect_timeout: Duration,
    /// Idle sockets.
    streams: ArrayQueue<IdleStream>,
    /// One permit per connection open to the upstream, in use or idle (the route's
    /// `max_connections`).
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
    Handed(IdleStream),
    Slot(OwnedSemaphorePermit),
    /// Queued, or handed nothing: look at the idle queue again.
    Again,
}

impl Connections {
    pub fn new(authority: Authority, connect_timeout: Duration, max_connections: usize) -> Arc<Self> {
        Arc::new(Self {
            authority,
            connect_timeout,
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

    /// A socket and whether it was pooled: a kept-alive one the upstream has
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
                Waited::Handed(IdleStream { stream, since }) if !fresh && fit_for_reuse(since, &stream) => {
                    return Ok((stream, true));
                }
                // Unfit, or a new connection is wanted: closing it frees its place.
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
        self.give_back(IdleStream { stream, since: now_ms() });
    }

    /// A finished connection: to the longest-waiting request, else to the idle queue (closed
    /// when that is full).
    fn give_back(&self, item: IdleStream) {
        let Some(item) = self.waiters.hand_over(item) else { return };
        drop(self.streams.push(item));
        // A request that queued while this was put back may have looked before it was there
        // (see `Waiters::join`).
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        if self.waiters.any() {
            if let Some(back) = self.streams.pop().and_then(|i| self.waiters.hand_over(i)) {
                drop(self.streams.push(back));
            }
        }
    }

    /// A free place under the cap, if there is one now: a place no connection holds, or one
    /// an idle connection gives up by closing.
    fn free_slot(&self) -> Result<Option<OwnedSemaphorePermit>, Failure> {
        loop {
            match self.slots.clone().try_acquire_owned() {
                Ok(slot) => return Ok(Some(slot)),
                Err(TryAcquireError::Closed) => return Err(Failure::Busy),
                Err(TryAcquireError::NoPermits) => {}
            }
            if self.streams.pop().is_none() {
                return Ok(None);
            }
        }
    }

    /// Waits in turn for a connection handed over or a place freed, until `deadline`. The
    /// first call only queues: the caller then looks once more (nothing given back in between
    /// is missed).
    async fn wait(
        &self,
        queued: &mut Option<tokio::sync::oneshot::Receiver<IdleStream>>,
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

    /// Closes idle connections that have ended or been idle too long, so an upstream that
    /// closed them is not left with half-closed sockets until the next request comes.
    pub fn sweep(&self) {
        for _ in 0..self.streams.len() {
            let Some(IdleStream { stream, since }) = self.streams.pop() else { break };
            if idle_since(since) < IDLE_FOR && is_quiet(&*stream) {
                let _ = self.streams.push(IdleStream { stream, since });
            }
        }
    }
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

    async fn get(conns: &Arc<Connections>) -> bytes::Bytes {
        let head = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";
        let resend = |f: &Failure, reused: bool| reused && matches!(f, Failure::Closed(_));
        let plain = super::super::exchange::Outgoing::PLAIN;
        let resp = super::super::exchange::send(conns, head, plain, None, resend).await.unwrap();
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
        assert_eq!(conns.streams.len(), 1, "a response read to the end gives its connection back");
        conns.sweep();
        assert_eq!(conns.streams.len(), 1, "still open upstream: kept");
        tokio::time::sleep(Duration::from_millis(400)).await;
        conns.sweep();
        assert_eq!(conns.streams.len(), 0, "closed by the upstream while idle: swept");
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
