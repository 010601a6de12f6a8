//! `store.kind = "memory"`: everything in process memory, lost on restart.
//!
//! Atomicity comes from DashMap's per-shard locks: each decision (spend a refresh token, take an
//! OTT, revoke a session) is made while holding the one entry it is about. No method holds two
//! entry locks at once, so there is no lock ordering to get wrong.

use async_trait::async_trait;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use super::*;

#[derive(Default)]
pub struct MemoryStore {
    sessions: DashMap<Box<str>, SessionRec>,
    refresh: DashMap<TokenHash, RefreshRec>,
    otts: DashMap<TokenHash, OttRec>,
    settings: arc_swap::ArcSwapOption<ConnectorSettings>,
    failures: DashMap<Box<str>, FailureCount>,
}

struct SessionRec {
    login: Box<str>,
    current_refresh: TokenHash,
    refresh_expires: u64,
    access_expires_max: u64,
    revoked: bool,
}

struct RefreshRec {
    session: Box<str>,
    expires: u64,
    spent: bool,
}

struct OttRec {
    login: Box<str>,
    expires: u64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of sessions held (live or awaiting purge); for tests and benchmarks.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    fn revoke(&self, session: &str) -> Option<u64> {
        let (refresh, until) = {
            let mut s = self.sessions.get_mut(session)?;
            s.revoked = true;
            (s.current_refresh, s.access_expires_max)
        };
        if let Some(mut r) = self.refresh.get_mut(&refresh) {
            r.spent = true;
        }
        Some(until)
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn create_session(&self, s: NewSession) -> Result<(), StoreError> {
        let id: Box<str> = s.id.into();
        self.refresh.insert(
            s.refresh_hash,
            RefreshRec { session: id.clone(), expires: s.refresh_expires, spent: false },
        );
        self.sessions.insert(
            id,
            SessionRec {
                login: s.login.into(),
                current_refresh: s.refresh_hash,
                refresh_expires: s.refresh_expires,
                access_expires_max: s.access_expires,
                revoked: false,
            },
        );
        Ok(())
    }

    async fn rotate_refresh(
        &self,
        presented: &TokenHash,
        next: &TokenHash,
        refresh_expires: u64,
        access_expires: u64,
        now: u64,
    ) -> Result<Rotation, StoreError> {
        // Spend the presented token under its entry lock: this is the single decision point.
        let session: Box<str> = {
            let Some(mut rec) = self.refresh.get_mut(presented) else {
                return Ok(Rotation::Unknown);
            };
            if rec.expires <= now {
                return Ok(Rotation::Unknown);
            }
            if rec.spent {
                let session = rec.session.clone();
                drop(rec);
                return Ok(match self.revoke(&session) {
                    Some(until) => Rotation::Reused { session: session.into(), revoked_until: until },
                    None => Rotation::Unknown,
                });
            }
            rec.spent = true;
            rec.session.clone()
        };
        let login = {
            let Some(mut s) = self.sessions.get_mut(&session) else {
                return Ok(Rotation::Unknown);
            };
            if s.revoked {
                return Ok(Rotation::Unknown);
            }
            s.current_refresh = *next;
            s.refresh_expires = refresh_expires;
            s.access_expires_max = s.access_expires_max.max(access_expires);
            s.login.to_string()
        };
        // A revoke racing in here finds `next` not yet inserted; the session's revoked flag
        // still stops `next` at its first use.
        self.refresh
            .insert(*next, RefreshRec { session: session.clone(), expires: refresh_expires, spent: false });
        Ok(Rotation::Rotated(SessionInfo { id: session.into(), login }))
    }

    async fn revoke_session(&self, session: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.revoke(session))
    }

    async fn put_ott(&self, hash: &TokenHash, login: &str, expires: u64) -> Result<(), StoreError> {
        self.otts.insert(*hash, OttRec { login: login.into(), expires });
        Ok(())
    }

    async fn consume_ott(&self, hash: &TokenHash, now: u64) -> Result<Option<String>, StoreError> {
        Ok(self.otts.remove(hash).filter(|(_, o)| o.expires > now).map(|(_, o)| o.login.into()))
    }

    async fn settings(&self) -> Result<Option<ConnectorSettings>, StoreError> {
        Ok(self.settings.load().as_deref().copied())
    }

    async fn put_settings(&self, settings: ConnectorSettings) -> Result<(), StoreError> {
        self.settings.store(Some(std::sync::Arc::new(settings)));
        Ok(())
    }

    async fn login_failures(&self, key: &str, now: u64) -> Result<Option<FailureCount>, StoreError> {
        Ok(self.failures.get(key).map(|f| *f).filter(|f| f.resets_at > now))
    }

    async fn record_login_failure(
        &self,
        key: &str,
        window_secs: u64,
        now: u64,
    ) -> Result<FailureCount, StoreError> {
        let fresh = FailureCount { count: 1, resets_at: now + window_secs };
        Ok(match self.failures.entry(key.into()) {
            Entry::Vacant(v) => *v.insert(fresh),
            Entry::Occupied(mut o) => {
                let f = o.get_mut();
                if f.resets_at <= now {
                    *f = fresh;
                } else {
                    f.count = f.count.saturating_add(1);
                }
                *f
            }
        })
    }

    async fn clear_login_failures(&self, key: &str) -> Result<(), StoreError> {
        self.failures.remove(key);
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn purge_expired(&self, now: u64) -> Result<usize, StoreError> {
        let before = self.refresh.len() + self.sessions.len() + self.otts.len() + self.failures.len();
        self.refresh.retain(|_, r| r.expires > now);
        self.sessions.retain(|_, s| s.refresh_expires > now || s.access_expires_max > now);
        self.otts.retain(|_, o| o.expires > now);
        self.failures.retain(|_, f| f.resets_at > now);
        let after = self.refresh.len() + self.sessions.len() + self.otts.len() + self.failures.len();
        Ok(before.saturating_sub(after))
    }

    async fn live_revocations(&self, now: u64) -> Result<Vec<Revoked>, StoreError> {
        Ok(self
            .sessions
            .iter()
            .filter(|s| s.revoked && s.access_expires_max >= now)
            .map(|s| (s.key().to_string(), s.access_expires_max))
            .collect())
    }
}
