//! `store.kind = "memory"`: everything in process memory, lost on restart.
//!
//! Atomicity comes from DashMap's per-shard locks: each decision (present a refresh token, take
//! an OTT, end a session) is made while holding the one entry it is about; no method holds two
//! entry locks at once. Login counters sit behind one mutex, since a reservation spans two keys.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use dashmap::DashMap;

use super::session::{Decision, SessionState};
use super::*;

#[derive(Default)]
pub struct MemoryStore {
    sessions: DashMap<Box<str>, SessionRecord>,
    /// login → its sessions' ids; ids whose session was purged are dropped by the next purge.
    by_login: DashMap<Box<str>, Vec<Box<str>>>,
    /// (created, id) of every session held: the most recent sessions without a scan.
    by_created: tokio::sync::Mutex<BTreeSet<(u64, Box<str>)>>,
    otts: DashMap<TokenHash, OttRec>,
    /// Audit events, newest at the back, at most the `keep` last asked for.
    audit: tokio::sync::Mutex<std::collections::VecDeque<Box<str>>>,
    settings: arc_swap::ArcSwapOption<ConnectorSettings>,
    /// One lock for every counter: a reservation spans two keys (login, address) and must take
    /// both or neither; the critical section is a few map operations beside an argon2 check.
    failures: tokio::sync::Mutex<HashMap<Box<str>, FailureCount>>,
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
}

#[async_trait]
impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn create_session(&self, s: NewSession) -> Result<(), StoreError> {
        self.sessions.insert(s.id.as_str().into(), SessionRecord::new(&s));
        self.by_created.lock().await.insert((s.created_at, s.id.as_str().into()));
        self.by_login.entry(s.login.as_str().into()).or_default().push(s.id.into());
        Ok(())
    }

    async fn rotate_refresh(
        &self,
        presented: &Presented,
        next: &Successor,
        grace_secs: u64,
        now: u64,
    ) -> Result<Rotation, StoreError> {
        // The whole decision is made under the session's entry lock.
        let Some(mut rec) = self.sessions.get_mut(presented.session.as_str()) else {
            return Ok(Rotation::Unknown);
        };
        let decision = rec.present(presented, next, grace_secs, now);
        let info = || SessionInfo { id: presented.session.clone(), login: rec.login.clone() };
        Ok(match decision {
            Decision::Rotated => Rotation::Rotated(info()),
            Decision::Replayed(sealed) => Rotation::Replayed { session: info(), sealed },
            Decision::Theft => {
                Rotation::Reused { session: presented.session.clone(), revoked_until: rec.access_expires_max }
            }
            Decision::Unknown => Rotation::Unknown,
        })
    }

    async fn revoke_session(&self, session: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.sessions.get_mut(session).map(|mut s| {
            if s.state == SessionState::Live {
                s.state = SessionState::Ended;
            }
            s.access_expires_max
        }))
    }

    async fn session(&self, session: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.sessions.get(session).map(|s| s.clone()))
    }

    async fn sessions_of(&self, login: &str, now: u64) -> Result<Vec<String>, StoreError> {
        let ids = self.by_login.get(login).map(|ids| ids.clone()).unwrap_or_default();
        Ok(ids
            .into_iter()
            .filter(|id| self.sessions.get(id).is_some_and(|s| s.expires_at > now))
            .map(String::from)
            .collect())
    }

    async fn recent_sessions(&self, limit: usize, now: u64) -> Result<Vec<String>, StoreError> {
        let index = self.by_created.lock().await;
        Ok(index
            .iter()
            .rev()
            .filter(|(_, id)| self.sessions.get(id).is_some_and(|s| s.expires_at > now))
            .take(limit)
            .map(|(_, id)| id.to_string())
            .collect())
    }

    async fn append_audit(&self, event: &str, keep: usize) -> Result<(), StoreError> {
        let mut audit = self.audit.lock().await;
        audit.push_back(event.into());
        while audit.len() > keep {
            audit.pop_front();
        }
        Ok(())
    }

    async fn audit_events(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        Ok(self.audit.lock().await.iter().rev().take(limit).map(|e| e.to_string()).collect())
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
        Ok(self.failures.lock().await.get(key).copied().filter(|f| f.resets_at > now))
    }

    async fn reserve_attempt(
        &self,
        keys: &[(&str, u32)],
        window_secs: u64,
        now: u64,
    ) -> Result<Reservation, StoreError> {
        let mut map = self.failures.lock().await;
        for (key, max) in keys {
            if let Some(f) = map.get(*key).filter(|f| f.resets_at > now && f.count >= *max) {
                return Ok(Reservation::Refused { resets_at: f.resets_at });
            }
        }
        for (key, _) in keys {
            let f = map.entry((*key).into()).or_insert(FailureCount { count: 0, resets_at: 0 });
            if f.resets_at <= now {
                *f = FailureCount { count: 0, resets_at: now + window_secs };
            }
            f.count = f.count.saturating_add(1);
        }
        Ok(Reservation::Granted)
    }

    async fn release_attempt(&self, key: &str, now: u64) -> Result<(), StoreError> {
        if let Some(f) = self.failures.lock().await.get_mut(key).filter(|f| f.resets_at > now) {
            f.count = f.count.saturating_sub(1);
        }
        Ok(())
    }

    async fn clear_login_failures(&self, key: &str) -> Result<(), StoreError> {
        self.failures.lock().await.remove(key);
        Ok(())
    }

    async fn entries(&self) -> Result<usize, StoreError> {
        let index: usize = self.by_login.iter().map(|ids| ids.len()).sum();
        let by_created = self.by_created.lock().await.len();
        let audit = self.audit.lock().await.len();
        Ok(self.sessions.len()
            + index
            + by_created
            + audit
            + self.otts.len()
            + self.failures.lock().await.len())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn purge_expired(&self, now: u64) -> Result<usize, StoreError> {
        let before = self.sessions.len() + self.otts.len();
        self.sessions.retain(|_, s| !s.expired(now));
        self.by_login.retain(|_, ids| {
            ids.retain(|id| self.sessions.contains_key(id));
            !ids.is_empty()
        });
        self.by_created.lock().await.retain(|(_, id)| self.sessions.contains_key(id));
        self.otts.retain(|_, o| o.expires > now);
        let after = self.sessions.len() + self.otts.len();
        let mut failures = self.failures.lock().await;
        let counters = failures.len();
        failures.retain(|_, f| f.resets_at > now);
        Ok(before.saturating_sub(after) + counters - failures.len())
    }

    async fn live_revocations(&self, now: u64) -> Result<Vec<Revoked>, StoreError> {
        Ok(self
            .sessions
            .iter()
            .filter(|s| s.state != SessionState::Live && s.access_expires_max >= now)
            .map(|s| (s.key().to_string(), s.access_expires_max))
            .collect())
    }
}
