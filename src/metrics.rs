//! Prometheus metrics (`GET /metrics` on the admin listener). The hot path only touches
//! atomics: per-route counters and histograms are resolved once per runtime snapshot, never
//! looked up by name per request, and no metric takes a lock. What other modules keep (the
//! token cache, upstream health, the audit counters) is handed in as [`Readings`] when scraped:
//! this module imports none of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use http::Method;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the latency buckets: 0.5 ms to 10 s.
const BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A lock-free histogram (prometheus-client's own takes a mutex on every observation).
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS.iter().position(|b| secs <= *b).unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut cumulative = 0;
        let mut out = Vec::with_capacity(BUCKETS.len() + 1);
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            out.push((BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), cumulative));
        }
        (self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6, cumulative, out)
    }
}

const METHODS: [&str; 8] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn method_index(m: &Method) -> usize {
    match *m {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::PATCH => 4,
        Method::DELETE => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// Requests and latencies of one route (or of the gateway's own endpoints).
#[derive(Default)]
pub struct RouteStats {
    requests: [[AtomicU64; 5]; 8],
    pub latency: Histogram,
    pub upstream_latency: Histogram,
}

impl RouteStats {
    pub fn record(&self, method: &Method, status: u16, took: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[method_index(method)][class].fetch_add(1, Ordering::Relaxed);
        self.latency.observe(took);
    }
}

/// Every error reason ([`crate::error::GatewayError::reason`]: the SPEC §3 codes, with
/// `token.expired` for `1.1.1.11`), plus "ok": the label values of outcome counters.
pub const OUTCOMES: [&str; 18] = [
    "ok",
    "1.2.0.11",
    "2.0.2.4",
    "2.147.1.27",
    "token.missing",
    "token.invalid",
    "token.expired",
    "token.reused",
    "request.malformed",
    "request.too_large",
    "route.none",
    "method.not_allowed",
    "forbidden",
    "credentials.unavailable",
    "upstream.unavailable",
    "upstream.timeout",
    "store.unavailable",
    "internal",
];

/// Counters by outcome (index into [`OUTCOMES`]).
#[derive(Default)]
pub struct Outcomes([AtomicU64; OUTCOMES.len()]);

impl Outcomes {
    pub fn add(&self, outcome: &str) {
        let i = OUTCOMES.iter().position(|o| *o == outcome).unwrap_or(OUTCOMES.len() - 1);
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// The store operations timed by the metered store.
pub const STORE_OPS: [&str; 18] = [
    "create_session",
    "rotate_refresh",
    "revoke_session",
    "session",
    "put_ott",
    "consume_ott",
    "settings",
    "put_settings",
    "login_failures",
    "reserve_attempt",
    "release_attempt",
    "clear_login_failures",
    "ping",
    "purge_expired",
    "live_revocations",
    "append_audit",
    "audit_events",
    "other",
];

#[derive(Default)]
pub struct StoreStats {
    pub latency: [Histogram; STORE_OPS.len()],
    pub errors: [AtomicU64; STORE_OPS.len()],
}

#[derive(Default)]
pub struct Metrics {
    routes: DashMap<Arc<str>, Arc<RouteStats>>,
    /// Requests the gateway answers itself (auth endpoints, health, JWKS, no route).
    pub gateway: RouteStats,
    pub auth: Outcomes,
    pub logins: Outcomes,
    pub refreshes: Outcomes,
    pub otts_issued: AtomicU64,
    /// Passwords checked against the credentials source (after the attempt limits passed).
    pub password_checks: AtomicU64,
    pub otts_verified: Outcomes,
    pub open_connections: AtomicI64,
    /// Connections the fast path handed to hyper's path (`crate::fastpath`).
    pub fast_path_handoffs: AtomicU64,
    pub store: StoreStats,
    /// Sessions ended through the admin API (SPEC §7).
    pub admin_sessions_ended: AtomicU64,
}

impl Metrics {
    /// The stats of route `name`, created on first use and kept across reloads.
    pub fn route(&self, name: &Arc<str>) -> Arc<RouteStats> {
        self.routes.entry(name.clone()).or_default().clone()
    }
}

/// What the collector reads beyond [`Metrics`], taken when `/metrics` is scraped.
#[derive(Debug, Default)]
pub struct Readings {
    pub token_cache_hits: u64,
    pub token_cache_misses: u64,
    pub token_cache_entries: usize,
    /// Each upstream: route, URL, in rotation.
    pub upstreams: Vec<(Arc<str>, Arc<str>, bool)>,
    /// Audit events by type.
    pub audit_events: Vec<(&'static str, u64)>,
    pub audit_store_failures: u64,
    pub audit_file_failures: u64,
    /// Audit events waiting for the writer.
    pub audit_queued: u64,
    pub log_lines_dropped: u64,
}

/// Renders the registry in the Prometheus text format (version 0.0.4).
pub fn render(metrics: &Arc<Metrics>, readings: Readings) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(GatewayCollector { m: metrics.clone(), r: readings }));
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

struct GatewayCollector {
    m: Arc<Metrics>,
    r: Readings,
}

impl std::fmt::Debug for GatewayCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayCollector").field("readings", &self.r).finish_non_exhaustive()
    }
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Vec<(&str, &str)>, u64)],
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        m.encode_family(labels)?.encode_counter::<NoLabelSet, _, u64>(v, None)?;
    }
    Ok(())
}

fn gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Vec<(&str, &str)>, i64)],
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        m.encode_family(labels)?.encode_gauge(v)?;
    }
    Ok(())
}

fn histograms(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Vec<(&str, &str)>, &Histogram)],
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in rows {
        let (sum, count, buckets) = h.snapshot();
        m.encode_family(labels)?.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
    }
    Ok(())
}

fn outcome_rows<'a>(key: &'a str, o: &'a Outcomes) -> Vec<(Vec<(&'a str, &'a str)>, u64)> {
    OUTCOMES.iter().zip(o.0.iter()).map(|(name, v)| (vec![(key, *name)], v.load(Ordering::Relaxed))).collect()
}

impl Collector for GatewayCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let (m, r) = (&self.m, &self.r);
        let routes: Vec<(Arc<str>, Arc<RouteStats>)> =
            m.routes.iter().map(|r| (r.key().clone(), r.value().clone())).collect();
        let mut all: Vec<(&str, &RouteStats)> = vec![("-gateway", &m.gateway)];
        all.extend(routes.iter().map(|(n, s)| (n.as_ref(), s.as_ref())));

        let mut rows = Vec::new();
        for (name, s) in &all {
            for (mi, by_class) in s.requests.iter().enumerate() {
                for (ci, v) in by_class.iter().enumerate() {
                    let v = v.load(Ordering::Relaxed);
                    if v > 0 {
                        rows.push((
                            vec![("route", *name), ("method", METHODS[mi]), ("class", CLASSES[ci])],
                            v,
                        ));
                    }
                }
            }
        }
        counter(&mut e, "bo_gateway_requests", "Requests by route, method and status class.", &rows)?;
        let lat: Vec<_> = all.iter().map(|(n, s)| (vec![("route", *n)], &s.latency)).collect();
        histograms(
            &mut e,
            "bo_gateway_request_duration_seconds",
            "Time to response headers, by route.",
            &lat,
        )?;
        let up: Vec<_> =
            routes.iter().map(|(n, s)| (vec![("route", n.as_ref())], &s.upstream_latency)).collect();
        histograms(
            &mut e,
            "bo_gateway_upstream_duration_seconds",
            "Upstream time to response headers, by route.",
            &up,
        )?;

        counter(
            &mut e,
            "bo_gateway_auth",
            "Bearer checks by outcome (ok or error code).",
            &outcome_rows("outcome", &m.auth),
        )?;
        counter(&mut e, "bo_gateway_logins", "Logins by outcome.", &outcome_rows("outcome", &m.logins))?;
        counter(
            &mut e,
            "bo_gateway_refreshes",
            "Token refreshes by outcome.",
            &outcome_rows("outcome", &m.refreshes),
        )?;
        counter(
            &mut e,
            "bo_gateway_password_checks",
            "Passwords checked against the credentials source (users file or BO).",
            &[(vec![], m.password_checks.load(Ordering::Relaxed))],
        )?;
        counter(
            &mut e,
            "bo_gateway_ott_issued",
            "One-time tokens issued.",
            &[(vec![], m.otts_issued.load(Ordering::Relaxed))],
        )?;
        let verified = vec![
            (vec![("valid", "true")], m.otts_verified.0[0].load(Ordering::Relaxed)),
            (
                vec![("valid", "false")],
                m.otts_verified.0[1..].iter().map(|v| v.load(Ordering::Relaxed)).sum(),
            ),
        ];
        counter(&mut e, "bo_gateway_ott_verified", "One-time token verifications.", &verified)?;

        counter(
            &mut e,
            "bo_gateway_token_cache_hits",
            "Bearer checks answered from the cache.",
            &[(vec![], r.token_cache_hits)],
        )?;
        counter(
            &mut e,
            "bo_gateway_token_cache_misses",
            "Bearer checks that verified a signature.",
            &[(vec![], r.token_cache_misses)],
        )?;
        gauge(
            &mut e,
            "bo_gateway_token_cache_entries",
            "Verified tokens in the cache.",
            &[(vec![], r.token_cache_entries as i64)],
        )?;

        let health: Vec<_> = r
            .upstreams
            .iter()
            .map(|(route, url, up)| {
                (vec![("route", route.as_ref()), ("upstream", url.as_ref())], i64::from(*up))
            })
            .collect();
        gauge(&mut e, "bo_gateway_upstream_healthy", "1 if the upstream is in rotation.", &health)?;
        gauge(
            &mut e,
            "bo_gateway_open_connections",
            "Client connections open on the main listeners.",
            &[(vec![], m.open_connections.load(Ordering::Relaxed))],
        )?;
        counter(
            &mut e,
            "bo_gateway_fast_path_handoffs",
            "Connections the HTTP/1.1 fast path handed to the general path (a request it does not take).",
            &[(vec![], m.fast_path_handoffs.load(Ordering::Relaxed))],
        )?;

        let by_type: Vec<_> = r.audit_events.iter().map(|(t, v)| (vec![("type", *t)], *v)).collect();
        counter(&mut e, "bo_gateway_audit_events", "Audit events by type.", &by_type)?;
        counter(
            &mut e,
            "bo_gateway_audit_write_failures",
            "Audit events a sink failed to take (the request went on).",
            &[
                (vec![("sink", "store")], r.audit_store_failures),
                (vec![("sink", "file")], r.audit_file_failures),
            ],
        )?;
        gauge(
            &mut e,
            "bo_gateway_audit_queued",
            "Audit events waiting for the writer (file and store); never dropped.",
            &[(vec![], i64::try_from(r.audit_queued).unwrap_or(i64::MAX))],
        )?;
        counter(
            &mut e,
            "bo_gateway_admin_sessions_ended",
            "Sessions ended by an administrator (admin API).",
            &[(vec![], m.admin_sessions_ended.load(Ordering::Relaxed))],
        )?;
        counter(
            &mut e,
            "bo_gateway_log_lines_dropped",
            "Access log lines dropped because the log sink was stalled and the log queue full.",
            &[(vec![], r.log_lines_dropped)],
        )?;

        let store_lat: Vec<_> =
            STORE_OPS.iter().zip(m.store.latency.iter()).map(|(op, h)| (vec![("op", *op)], h)).collect();
        histograms(&mut e, "bo_gateway_store_duration_seconds", "Store operation latency.", &store_lat)?;
        let store_err: Vec<_> = STORE_OPS
            .iter()
            .zip(m.store.errors.iter())
            .map(|(op, v)| (vec![("op", *op)], v.load(Ordering::Relaxed)))
            .collect();
        counter(&mut e, "bo_gateway_store_errors", "Store operations that failed.", &store_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_are_rendered_without_a_gateway() {
        let m = Arc::new(Metrics::default());
        m.auth.add("token.expired");
        let readings = Readings {
            token_cache_hits: 7,
            upstreams: vec![("bo".into(), "http://10.0.0.1:80".into(), false)],
            audit_events: vec![("login", 3)],
            audit_file_failures: 2,
            ..Default::default()
        };
        let text = render(&m, readings).unwrap();
        for line in [
            "bo_gateway_auth_total{outcome=\"token.expired\"} 1",
            "bo_gateway_token_cache_hits_total 7",
            "bo_gateway_upstream_healthy{route=\"bo\",upstream=\"http://10.0.0.1:80\"} 0",
            "bo_gateway_audit_events_total{type=\"login\"} 3",
            "bo_gateway_audit_write_failures_total{sink=\"file\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }
}
