//! `Gateway`: the state shared by every connection: the current `Runtime` snapshot, the store,
//! the verified-token cache and revocations, and the draining flag.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use http::HeaderValue;
use tokio::sync::Semaphore;

use crate::auth::bearer::Bearer;
use crate::auth::cache::{Revocations, TokenCache};
use crate::auth::credentials::Standing;
use crate::auth::sessions::{Found, end_user};
use crate::auth::tokens;
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::store::{MeteredStore, Store};

pub struct Gateway {
    runtime: ArcSwap<Runtime>,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub cache: TokenCache,
    pub revocations: Revocations,
    pub audit: crate::audit::Audit,
    /// Bounds concurrent argon2 checks (see `credentials::hashing_limit`).
    pub hashing: Arc<Semaphore>,
    draining: AtomicBool,
    request_prefix: u64,
    request_seq: AtomicU64,
}

impl Gateway {
    pub fn new(runtime: Runtime, store: Arc<dyn Store>) -> Arc<Self> {
        let capacity = runtime.raw.tokens.cache_capacity;
        let mut prefix = [0u8; 8];
        let _ = aws_lc_rs::rand::fill(&mut prefix);
        let metrics = Arc::new(Metrics::default());
        let store: Arc<dyn Store> = Arc::new(MeteredStore::new(store, metrics.clone()));
        let gw = Arc::new(Self {
            runtime: ArcSwap::from_pointee(runtime),
            store: store.clone(),
            metrics,
            cache: TokenCache::new(capacity),
            revocations: Revocations::new(),
            audit: crate::audit::Audit::new(
                crate::audit::replica_name(u64::from_le_bytes(prefix)),
                store.clone(),
            ),
            hashing: crate::auth::credentials::hashing_limit(),
            draining: AtomicBool::new(false),
            request_prefix: u64::from_le_bytes(prefix),
            request_seq: AtomicU64::new(0),
        });
        gw.install(&gw.runtime());
        gw
    }

    /// Puts a new snapshot in service. Requests already running keep the one they loaded.
    /// Verified tokens are forgotten: the new snapshot's keys may no longer accept them.
    /// Users the new users file disables or removes have their sessions ended (SPEC §7), in the
    /// background: a slow store must not hold the reload up (their refreshes are refused from
    /// the swap on, as the new snapshot no longer accepts them).
    pub fn swap(self: &Arc<Self>, runtime: Runtime) {
        let gone = self.runtime().credentials.no_longer_accepted(&runtime.credentials);
        self.install(&runtime);
        self.cache.set_capacity(runtime.raw.tokens.cache_capacity);
        self.runtime.store(Arc::new(runtime));
        self.cache.clear();
        self.audit.reopen();
        if !gone.is_empty() {
            let gw = self.clone();
            tokio::spawn(async move { gw.end_sessions_of_users(&gone).await });
        }
    }

    async fn end_sessions_of_users(&self, users: &[(String, Standing)]) {
        let rt = self.runtime();
        let ctx = crate::audit::Context::default();
        for (login, standing) in users {
            // Failures are logged and audited there; the user's refreshes are refused anyway.
            let _ = end_user(self, &rt, login, *standing, Found::Reload, None, &ctx).await;
        }
    }

    /// Readies a snapshot for serving: binds each route to its (long-lived) metrics and starts
    /// the background upkeep of its pools.
    fn install(&self, rt: &Runtime) {
        for route in rt.routes.iter() {
            let _ = route.stats.set(self.metrics.route(&route.name));
            crate::proxy::spawn_upkeep(&route.pool);
        }
    }

    /// The current snapshot; a request keeps the one it started with.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// What the Bearer check (`auth::bearer`) reads: borrowed, so a request pays nothing for it.
    #[inline]
    pub fn bearer(&self) -> Bearer<'_> {
        Bearer {
            in_service: &self.runtime,
            cache: &self.cache,
            revocations: &self.revocations,
            outcomes: &self.metrics.auth,
        }
    }

    /// What `/metrics` reports beyond the counters in [`Metrics`] (`crate::metrics::render`).
    pub fn readings(&self) -> crate::metrics::Readings {
        let (token_cache_hits, token_cache_misses) = self.cache.stats();
        let rt = self.runtime();
        let upstreams = rt
            .routes
            .iter()
            .flat_map(|r| r.pool.upstreams.iter().map(|u| (r.name.clone(), u.url.clone(), u.is_healthy())))
            .collect();
        let counts = self.audit.counts.iter().map(|v| v.load(Ordering::Relaxed));
        crate::metrics::Readings {
            token_cache_hits,
            token_cache_misses,
            token_cache_entries: self.cache.len(),
            upstreams,
            audit_events: crate::audit::EVENT_TYPES.iter().copied().zip(counts).collect(),
            audit_store_failures: self.audit.store_failures.load(Ordering::Relaxed),
            audit_file_failures: self.audit.file_failures.load(Ordering::Relaxed),
            audit_queued: self.audit.queued.load(Ordering::Relaxed),
            log_lines_dropped: crate::logging::access_lines_dropped(),
        }
    }

    /// A fresh request id: a random per-process prefix and a counter, 32 hex digits.
    pub fn new_request_id(&self) -> HeaderValue {
        let seq = self.request_seq.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 32];
        let hexd = b"0123456789abcdef";
        for (i, v) in [self.request_prefix, seq].into_iter().enumerate() {
            for j in 0..16 {
                buf[i * 16 + j] = hexd[((v >> (60 - 4 * j)) & 0xf) as usize];
            }
        }
        HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("0"))
    }

    /// Keeps `revocations` in step with the store: everything live at start (a `file` store's
    /// revocations survive restarts), then, for a shared store, each revocation another replica
    /// publishes plus a full re-read every `resync` (a missed message delays a revocation by at
    /// most that). The hot path only ever reads the local set.
    pub fn spawn_revocation_sync(self: &Arc<Self>, resync: std::time::Duration) {
        let weak = Arc::downgrade(self);
        let feed = self.store.revocation_feed();
        tokio::spawn(async move {
            let Some(gw) = weak.upgrade() else { return };
            gw.resync_revocations().await;
            let Some(mut feed) = feed else { return };
            drop(gw);
            let mut tick = tokio::time::interval(resync);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                let msg = tokio::select! {
                    m = feed.recv() => Some(m),
                    _ = tick.tick() => None,
                };
                let Some(gw) = weak.upgrade() else { return };
                let leeway = gw.runtime().token_settings.leeway_secs;
                match msg {
                    Some(Ok((session, until))) => gw.revocations.revoke(&session, until + leeway),
                    Some(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return,
                    Some(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) | None => {
                        gw.resync_revocations().await
                    }
                }
            }
        });
    }

    async fn resync_revocations(&self) {
        let now = tokens::now_secs();
        let leeway = self.runtime().token_settings.leeway_secs;
        match self.store.live_revocations(now).await {
            Ok(live) => {
                for (session, until) in live {
                    self.revocations.revoke(&session, until + leeway);
                }
            }
            Err(e) => tracing::debug!(error = %e, "revocation resync failed"),
        }
    }

    /// Background upkeep: expired cache entries, revocations and store entries.
    pub fn spawn_housekeeping(self: &Arc<Self>, every: std::time::Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(gw) = weak.upgrade() else { return };
                let now = tokens::now_secs();
                gw.cache.purge_expired(now);
                gw.revocations.purge_expired(now);
                if let Err(e) = gw.store.purge_expired(now).await {
                    tracing::warn!(error = %e, "store purge failed");
                }
            }
        });
    }
}
