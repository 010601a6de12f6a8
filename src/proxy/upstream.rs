//! Upstream pools: the upstreams of one route, how one is chosen, and whether each is healthy.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::exchange::Outgoing;
use super::pool::Connections;
use crate::activity::now_ms;
use http::uri::Scheme;
use http::{HeaderValue, Uri};
use http_body_util::{BodyExt, Limited};

/// Consecutive connect failures after which an upstream is taken out of rotation for a while.
const EJECT_AFTER_FAILURES: u32 = 3;
const EJECT_FOR: Duration = Duration::from_secs(10);
/// Active checks: failures to go down, successes to come back.
const CHECK_FALL: u32 = 2;
const CHECK_RISE: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastRequests,
}

pub struct Upstream {
    pub url: Arc<str>,
    /// The upstream URL's own path, without a trailing slash ("" for none).
    pub base_path: String,
    pub host_header: HeaderValue,
    /// Its kept-alive connections.
    pub conns: Arc<Connections>,
    in_flight: AtomicUsize,
    connect_failures: AtomicU32,
    ejected_until_ms: AtomicU64,
    check_ok: AtomicBool,
    check_streak: AtomicU32,
}

impl Upstream {
    /// Parses `http://host:port[/base]`. Only plain HTTP upstreams are spoken to (SPEC §2).
    pub fn parse(url: &str, connect_timeout: Duration, max_connections: usize) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| format!("`{url}` needs a scheme (http://)"))?;
        if scheme != Scheme::HTTP {
            return Err(format!("`{url}`: only http:// upstreams are supported"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| format!("`{url}` needs a host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("`{url}`: credentials in upstream URLs are not supported"));
        }
        if uri.query().is_some() {
            return Err(format!("`{url}`: an upstream URL cannot have a query"));
        }
        let base_path = uri.path().trim_end_matches('/').to_string();
        let host_header = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
        let conns = Connections::new(authority, connect_timeout, max_connections);
        Ok(Self {
            url: url.into(),
            base_path,
            host_header,
            conns,
            in_flight: AtomicUsize::new(0),
            connect_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            check_ok: AtomicBool::new(true),
            check_streak: AtomicU32::new(0),
        })
    }

    pub fn is_healthy(&self) -> bool {
        // Not ejected (0) needs no clock.
        self.check_ok.load(Ordering::Relaxed)
            && match self.ejected_until_ms.load(Ordering::Relaxed) {
                0 => true,
                until => until <= now_ms(),
            }
    }

    /// Passive health: called after each attempt to connect.
    pub fn record_connect(&self, ok: bool) {
        if ok {
            if self.connect_failures.load(Ordering::Relaxed) != 0 {
                self.connect_failures.store(0, Ordering::Relaxed);
            }
            return;
        }
        let n = self.connect_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= EJECT_AFTER_FAILURES {
            self.ejected_until_ms.store(now_ms() + EJECT_FOR.as_millis() as u64, Ordering::Relaxed);
            tracing::warn!(upstream = %self.url, failures = n, "upstream ejected after connect failures");
        }
    }

    fn record_check(&self, ok: bool) {
        let was = self.check_ok.load(Ordering::Relaxed);
        if ok == was {
            self.check_streak.store(0, Ordering::Relaxed);
            return;
        }
        let streak = self.check_streak.fetch_add(1, Ordering::Relaxed) + 1;
        if streak >= if ok { CHECK_RISE } else { CHECK_FALL } {
            self.check_ok.store(ok, Ordering::Relaxed);
            self.check_streak.store(0, Ordering::Relaxed);
            if ok {
                self.ejected_until_ms.store(0, Ordering::Relaxed);
                self.connect_failures.store(0, Ordering::Relaxed);
            }
            tracing::warn!(upstream = %self.url, healthy = ok, "active health check changed state");
        }
    }

    /// Counts a request in flight for `least_requests`; the guard decrements on drop.
    pub fn start_request(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }
}

pub struct InFlight<'a>(&'a Upstream);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct UpstreamPool {
    pub route: String,
    pub upstreams: Vec<Upstream>,
    pub balance: Balance,
    next: AtomicUsize,
    pub health_path: Option<String>,
    pub health_interval: Duration,
}

impl UpstreamPool {
    pub fn new(
        route: String,
        upstreams: Vec<Upstream>,
        balance: Balance,
        health_path: Option<String>,
        health_interval: Duration,
    ) -> Self {
        Self { route, upstreams, balance, next: AtomicUsize::new(0), health_path, health_interval }
    }

    pub fn healthy_count(&self) -> usize {
        self.upstreams.iter().filter(|u| u.is_healthy()).count()
    }

    /// Chooses an upstream, skipping unhealthy ones; when none is healthy, tries them anyway
    /// (failing open beats refusing everything on a stale health view).
    pub fn pick(&self) -> &Upstream {
        let ups = &self.upstreams;
        if ups.len() == 1 {
            return &ups[0];
        }
        match self.balance {
            Balance::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..ups.len())
                    .map(|i| &ups[(start + i) % ups.len()])
                    .find(|u| u.is_healthy())
                    .unwrap_or(&ups[start % ups.len()])
            }
            Balance::LeastRequests => {
                // Scan from a rotating start so ties do not always favour the first upstream.
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..ups.len())
                    .map(|i| &ups[(start + i) % ups.len()])
                    .filter(|u| u.is_healthy())
                    .min_by_key(|u| u.in_flight.load(Ordering::Relaxed))
                    .unwrap_or(&ups[start % ups.len()])
            }
        }
    }
}

impl UpstreamPool {
    /// Another upstream than `not` for a retry: the next healthy one after it, else the next.
    pub fn pick_other(&self, not: &Upstream) -> &Upstream {
        let ups = &self.upstreams;
        let i = ups.iter().position(|u| std::ptr::eq(u, not)).unwrap_or(0);
        (1..ups.len())
            .map(|k| &ups[(i + k) % ups.len()])
            .find(|u| u.is_healthy())
            .unwrap_or(&ups[(i + 1) % ups.len()])
    }
}

/// A health check reads at most this much of the answer's body.
const HEALTH_BODY_LIMIT: usize = 64 * 1024;
/// Every this often, idle upstream connections that have ended are closed.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The background work of a pool while it is in use (until it is dropped, e.g. replaced by a
/// reload): the sweep of its idle connections and, when configured, its active health checks.
pub fn spawn_upkeep(pool: &Arc<UpstreamPool>) {
    let weak: Weak<UpstreamPool> = Arc::downgrade(pool);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(pool) = weak.upgrade() else { return };
            for up in &pool.upstreams {
                up.conns.sweep();
            }
        }
    });
    spawn_health_checks(pool);
}

fn spawn_health_checks(pool: &Arc<UpstreamPool>) {
    let Some(path) = pool.health_path.clone() else { return };
    let weak: Weak<UpstreamPool> = Arc::downgrade(pool);
    let interval = pool.health_interval;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(pool) = weak.upgrade() else { return };
            for up in &pool.upstreams {
                let mut head = Vec::with_capacity(256);
                head.extend_from_slice(b"GET ");
                head.extend_from_slice(up.base_path.as_bytes());
                head.extend_from_slice(path.as_bytes());
                head.extend_from_slice(b" HTTP/1.1\r\n");
                super::line(&mut head, b"host", up.host_header.as_bytes());
                head.extend_from_slice(b"\r\n");
                let timeout = interval.min(Duration::from_secs(5));
                let check = async {
                    // A probe that met a pooled connection the upstream had closed goes once
                    // more on a fresh one: that is no sign of ill health.
                    let stale =
                        |f: &super::Failure, reused: bool| reused && matches!(f, super::Failure::Closed(_));
                    let resp =
                        super::exchange::send(&up.conns, &head, Outgoing::PLAIN, None, stale).await.ok()?;
                    let good = resp.status().is_success() || resp.status().is_redirection();
                    // Read to the end so the connection goes back to the pool (bounded: a check
                    // is not a download).
                    let _ = Limited::new(resp.into_body(), HEALTH_BODY_LIMIT).collect().await;
                    Some(good)
                };
                let ok = matches!(tokio::time::timeout(timeout, check).await, Ok(Some(true)));
                up.record_check(ok);
            }
        }
    });
}
