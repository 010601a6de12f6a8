//! What a client connection is doing, shared by the connection (`crate::conn`), both transports
//! and the tunnels: when it last moved a byte, whether a request head is pending, how many
//! requests are in flight; and so when it falls due for a timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;

/// How long a connection may wait: between requests (`idle`), and for the rest of a request
/// head once it has started or, on a new connection, for the first one (`head`).
/// head once it has started or, on a new connection, for the first one (`head`).
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) idle: Duration,
    pub(crate) head: Duration,
}

/// What an upgraded tunnel keeps of its connection, carried by the upgrade request (only
/// those, so no per-request allocation): its place under `max_connections`, and the activity
/// record its idle timeout reads (the tunnel's bytes still pass through the connection's IO
/// wrapper). The HTTP connection hands its socket over at the 101 and stops watching it.
#[derive(Clone)]
pub struct TunnelHold {
    pub(crate) _slot: Arc<OwnedSemaphorePermit>,
    pub(crate) activity: Arc<Activity>,
    pub(crate) idle: Duration,
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

/// Milliseconds on the coarse monotonic clock: the kernel's last tick (a few ms of resolution,
/// ample for timeouts of seconds), read without the TSC, at a fraction of `Instant::now`'s
/// cost. It is read several times per request (each read and write is activity).
pub(crate) fn now_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    (t.tv_sec as u64).saturating_mul(1000) + t.tv_nsec as u64 / 1_000_000
}

/// When a connection last moved a byte, since when it has been waiting for the rest of a
/// request head, how many requests it has in flight, and which of its HTTP/1 requests the framing
/// watch refuses.
pub(crate) struct Activity {
    pub(crate) last_ms: AtomicU64,
    /// When the pending head's first byte came ([`NO_HEAD`]: none pending); on a new connection,
    /// when it was accepted.
    pub(crate) head_ms: AtomicU64,
    pub(crate) in_flight: AtomicUsize,
    /// Responses whose head is out and whose body is still being written.
    pub(crate) responding: AtomicUsize,
    /// Requests handed to the service so far.
    pub(crate) requests: AtomicU64,
    /// One more than the index of the request to refuse; 0 for none.
    pub(crate) malformed: AtomicU64,
    /// The fast path is waiting for a request with nothing of it read: a drain may close now.
    pub(crate) between: AtomicBool,
    /// An HTTP/2 connection: only requests and response data count as activity (PING,
    /// SETTINGS and WINDOW_UPDATE frames do not keep it open).
    pub(crate) h2: AtomicBool,
}

pub(crate) const NO_HEAD: u64 = u64::MAX;

impl Activity {
    pub(crate) fn new() -> Self {
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

    pub(crate) fn touch(&self) -> u64 {
        let now = now_ms();
        self.last_ms.store(now, Ordering::Relaxed);
        now
    }

    /// Bytes moved on the connection: activity for HTTP/1; for HTTP/2 only requests and
    /// response data are (see `h2`), so control frames alone let it reach its idle timeout.
    pub(crate) fn moved(&self) -> u64 {
        if self.h2.load(Ordering::Relaxed) { now_ms() } else { self.touch() }
    }

    /// Notes whether, after the bytes just read at `now`, part of a head is waiting for the rest.
    pub(crate) fn head_pending(&self, pending: bool, now: u64) {
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

    /// The fast path's note, after parsing what it has read, of whether part of a head is
    /// waiting for the rest (as of its last read: it reads its own heads, not the watch).
    pub(crate) fn head_read(&self, pending: bool) {
        self.head_pending(pending, self.last_ms.load(Ordering::Relaxed));
    }

    /// Counts a request handed to the service; true when the watch refuses it. HTTP/1 hands
    /// requests over one at a time, in the order their heads arrived.
    pub(crate) fn next_is_malformed(&self) -> bool {
        let index = self.requests.fetch_add(1, Ordering::Relaxed);
        self.malformed.load(Ordering::Relaxed) == index + 1
    }

    /// Counts a request the fast path serves. It frames its own requests (the watch sleeps
    /// until hyper's path takes over, then numbers requests from this count), and hands any it
    /// would refuse to hyper's path before counting them.
    pub(crate) fn count_request(&self) {
        // Only the connection's own task counts while the fast path serves it.
        let n = self.requests.load(Ordering::Relaxed);
        self.requests.store(n + 1, Ordering::Relaxed);
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
    pub(crate) fn due_ms(&self, limits: Limits) -> Option<(u64, &'static str)> {
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
    pub(crate) fn quiet_due_ms(&self, idle: Duration) -> u64 {
        self.last_ms.load(Ordering::Relaxed).saturating_add(idle.as_millis() as u64)
    }

    /// When to look again: when the connection falls due, and at least every half head timeout,
    /// so a head that starts in between is cut close to its deadline.
    pub(crate) fn next_check(&self, limits: Limits) -> Instant {
        let now = now_ms();
        let mut at = now + (limits.head.as_millis() as u64 / 2).max(1);
        if let Some((due, _)) = self.due_ms(limits) {
            at = at.min(due);
        }
        Instant::now() + Duration::from_millis(at.max(now) - now)
    }

    /// Why the connection should close now, if it should: a head not finished in time, or no
    /// byte either way for the idle timeout. Never while a request is in flight.
    pub(crate) fn expired(&self, limits: Limits) -> Option<&'static str> {
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
pub(crate) struct Responding(pub(crate) Arc<Activity>);

impl Drop for Responding {
    fn drop(&mut self) {
        self.0.responding.fetch_sub(1, Ordering::Relaxed);
        self.0.retime_head();
    }
}

impl Activity {
    /// A pipelined head that arrived while a request was served is timed from now.
    pub(crate) fn retime_head(&self) {
        let now = self.touch();
        if self.head_ms.load(Ordering::Relaxed) != NO_HEAD {
            self.head_ms.store(now, Ordering::Relaxed);
        }
    }
}
