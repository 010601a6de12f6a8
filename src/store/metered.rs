//! A `Store` decorator that times every operation and counts failures, whatever the backend.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::*;
use crate::metrics::{Metrics, STORE_OPS};

pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    async fn timed<T>(
        &self,
        op: &str,
        f: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let i = STORE_OPS.iter().position(|o| *o == op).unwrap_or(STORE_OPS.len() - 1);
        let start = Instant::now();
        let r = f.await;
        self.metrics.store.latency[i].observe(start.elapsed());
        if r.is_err() {
            self.metrics.store.errors[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
}

#[async_trait]
impl Store for MeteredStore {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn create_session(&self, session: NewSession) -> Result<(), StoreError> {
        self.timed("create_session", self.inner.create_session(session)).await
    }

    async fn rotate_refresh(
        &self,
        presented: &Presented,
        next: &Successor,
        grace_secs: u64,
        now: u64,
    ) -> Result<Rotation, StoreError> {
        self.timed("rotate_refresh", self.inner.rotate_refresh(presented, next, grace_secs, now)).await
    }

    async fn revoke_session(&self, session: &str) -> Result<Option<u64>, StoreError> {
        self.timed("revoke_session", self.inner.revoke_session(session)).await
    }

    async fn session(&self, session: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.timed("session", self.inner.session(session)).await
    }

    async fn sessions_of(&self, login: &str, now: u64) -> Result<Vec<String>, StoreError> {
        self.timed("session", self.inner.sessions_of(login, now)).await
    }

    async fn recent_sessions(&self, limit: usize, now: u64) -> Result<Vec<String>, StoreError> {
        self.timed("session", self.inner.recent_sessions(limit, now)).await
    }

    async fn append_audit(&self, event: &str, keep: usize) -> Result<(), StoreError> {
        self.timed("append_audit", self.inner.append_audit(event, keep)).await
    }

    async fn audit_events(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        self.timed("audit_events", self.inner.audit_events(limit)).await
    }

    async fn put_ott(&self, hash: &TokenHash, login: &str, expires: u64) -> Result<(), StoreError> {
        self.timed("put_ott", self.inner.put_ott(hash, login, expires)).await
    }

    async fn consume_ott(&self, hash: &TokenHash, now: u64) -> Result<Option<String>, StoreError> {
        self.timed("consume_ott", self.inner.consume_ott(hash, now)).await
    }

    async fn settings(&self) -> Result<Option<ConnectorSettings>, StoreError> {
        self.timed("settings", self.inner.settings()).await
    }

    async fn put_settings(&self, settings: ConnectorSettings) -> Result<(), StoreError> {
        self.timed("put_settings", self.inner.put_settings(settings)).await
    }

    async fn login_failures(&self, key: &str, now: u64) -> Result<Option<FailureCount>, StoreError> {
        self.timed("login_failures", self.inner.login_failures(key, now)).await
    }

    async fn reserve_attempt(
        &self,
        keys: &[(&str, u32)],
        window_secs: u64,
        now: u64,
    ) -> Result<Reservation, StoreError> {
        self.timed("reserve_attempt", self.inner.reserve_attempt(keys, window_secs, now)).await
    }

    async fn release_attempt(&self, key: &str, now: u64) -> Result<(), StoreError> {
        self.timed("release_attempt", self.inner.release_attempt(key, now)).await
    }

    async fn clear_login_failures(&self, key: &str) -> Result<(), StoreError> {
        self.timed("clear_login_failures", self.inner.clear_login_failures(key)).await
    }

    async fn entries(&self) -> Result<usize, StoreError> {
        self.timed("other", self.inner.entries()).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed("ping", self.inner.ping()).await
    }

    async fn purge_expired(&self, now: u64) -> Result<usize, StoreError> {
        self.timed("purge_expired", self.inner.purge_expired(now)).await
    }

    async fn live_revocations(&self, now: u64) -> Result<Vec<Revoked>, StoreError> {
        self.timed("live_revocations", self.inner.live_revocations(now)).await
    }

    // Forwarded, not defaulted: hiding the inner feed would leave other replicas' revocations
    // to the periodic resync alone.
    fn revocation_feed(&self) -> Option<tokio::sync::broadcast::Receiver<Revoked>> {
        self.inner.revocation_feed()
    }
}
