//! The state behind sessions: refresh tokens, one-time tokens, revocations, connector settings
//! and login-failure counters. The atomicity of each method is part of its contract; the
//! conformance tests (`tests/store_conformance.rs`) are written once against this trait.
//!
//! Revocations reach other replicas in two ways, and the gateway needs both: a store that is
//! shared ([`RedisStore`]) pushes each revocation as it happens through
//! [`Store::revocation_feed`] (Redis pub/sub: milliseconds), and the gateway re-reads every live
//! revocation with [`Store::live_revocations`] every 500 ms, so a message lost while the
//! subscriber was reconnecting cannot keep a revoked token alive for longer than that.
//! Revocations made by this process are also put straight into the gateway's own set by the
//! endpoint that made them.

mod file;
mod memory;
mod metered;
mod redis;
mod session;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::config::StoreConfig;
pub use file::FileStore;
pub use memory::MemoryStore;
pub use metered::MeteredStore;
pub use redis::RedisStore;
pub use redis::check as redis_target;
pub use session::{SessionRecord, SessionState};

/// A token as the store knows it: the SHA-256 of the opaque string. Plain tokens are never stored.
pub type TokenHash = [u8; 32];

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store cannot be opened as configured (start-up only).
    #[error("key `{key}`: {reason}")]
    Open { key: &'static str, reason: String },
}

/// A revoked session and the unix second until which its access tokens must be refused (the
/// latest `exp` issued in it, before leeway).
pub type Revoked = (String, u64);

/// Opens the store `cfg` describes. A `file` store that cannot be created, locked or written is
/// an error here, naming `store.path`; a `redis` store starts even while Redis is down (it is
/// then reported unready and reconnects by itself), but a malformed `store.url`, `sentinels` or
/// `cluster` is refused.
pub async fn open(cfg: &StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match cfg.kind.as_str() {
        "file" => Arc::new(FileStore::open(&cfg.path).await?),
        "redis" => Arc::new(RedisStore::open(cfg).await?),
        _ => Arc::new(MemoryStore::new()),
    })
}

/// A session the store knows, as returned by a successful rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: String,
    pub login: String,
}

/// Everything needed to start a session (see [`SessionRecord`] for what the fields become).
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub login: String,
    /// SHA-256 of the session's proof key, the part every refresh token of the session shares.
    pub key_hash: TokenHash,
    /// SHA-256 of generation 0's secret.
    pub secret_hash: TokenHash,
    /// Unix seconds.
    pub refresh_expires: u64,
    /// Unix seconds: the `exp` of the access token issued with it.
    pub access_expires: u64,
    /// Unix seconds.
    pub created_at: u64,
    pub client_address: String,
    /// At most [`MAX_USER_AGENT`] bytes.
    pub user_agent: String,
}

/// User agents are kept for the session list only, cut to this many bytes.
pub const MAX_USER_AGENT: usize = 256;

/// A refresh token as the store is shown it: which session and generation it claims, and the
/// SHA-256 of its two secret parts. The token itself never reaches the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    pub session: String,
    pub generation: u64,
    pub key_hash: TokenHash,
    pub secret_hash: TokenHash,
}

/// What a rotation records: the next generation's secret hash and the next token sealed under a
/// key derived from the presented one (what the reuse grace hands back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Successor {
    pub secret_hash: TokenHash,
    pub sealed: Vec<u8>,
    /// Unix seconds.
    pub refresh_expires: u64,
    /// Unix seconds: the `exp` of the access token issued with it.
    pub access_expires: u64,
}

/// The outcome of presenting a refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was the session's current one; it is now spent and the successor replaces it.
    Rotated(SessionInfo),
    /// The token is the session's previous one, spent less than the grace ago, and its successor
    /// is still unspent: nothing changes but the session's latest access-token `exp`; `sealed` is
    /// that successor as the rotation sealed it.
    Replayed { session: SessionInfo, sealed: Vec<u8> },
    /// The token belongs to the session but is neither its current one nor a replay in grace:
    /// the session is now revoked. `revoked_until` is the latest `exp` of any access token
    /// issued in it (unix seconds).
    Reused { session: String, revoked_until: u64 },
    /// Unknown, expired, forged, or its session was ended (logout, administrator, theft).
    Unknown,
}

/// The outcome of [`Store::reserve_attempt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// One attempt is counted against every key; the password may be checked.
    Granted,
    /// A key is at its limit: nothing was counted. `resets_at` is when that key's window ends.
    Refused { resets_at: u64 },
}

/// The connector settings of SPEC §1, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectorSettings {
    pub access_token_life_time: u64,
    pub refresh_token_life_time: u64,
    pub one_time_token_life_time: u64,
}

/// A failure counter: how many failures inside the current window, and when the window ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureCount {
    pub count: u32,
    /// Unix seconds.
    pub resets_at: u64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is ("memory", "file", "redis"), for readiness reports.
    fn kind(&self) -> &'static str;

    async fn create_session(&self, session: NewSession) -> Result<(), StoreError>;

    /// Decides what `presented` is worth, as [`SessionRecord::present`] says, and records it, in
    /// one atomic step: of any number of concurrent calls with the same token at most one
    /// returns `Rotated`; with `grace_secs` > 0 the others get `Replayed` with its successor.
    async fn rotate_refresh(
        &self,
        presented: &Presented,
        next: &Successor,
        grace_secs: u64,
        now: u64,
    ) -> Result<Rotation, StoreError>;

    /// Ends a session (logout, administrator): its refresh tokens are `Unknown` from now on.
    /// Returns the latest access-token `exp` issued in it (for the verified-token cache), or
    /// `None` if the session is unknown.
    async fn revoke_session(&self, session: &str) -> Result<Option<u64>, StoreError>;

    /// The session's record, if the store has one (expired or ended included, until purged).
    async fn session(&self, session: &str) -> Result<Option<SessionRecord>, StoreError>;

    /// The ids of `login`'s sessions whose refresh token has not expired at `now` (live, ended
    /// or stolen alike), from a per-login index: what a session list starts from.
    async fn sessions_of(&self, login: &str, now: u64) -> Result<Vec<String>, StoreError>;

    /// The ids of the `limit` most recently created sessions whose refresh token has not expired
    /// at `now`, newest first, from an index by creation time (every replica's sessions on a
    /// shared store): what a session list without a login shows.
    async fn recent_sessions(&self, limit: usize, now: u64) -> Result<Vec<String>, StoreError>;

    async fn put_ott(&self, hash: &TokenHash, login: &str, expires: u64) -> Result<(), StoreError>;

    /// Appends one audit event (a JSON object) and drops all but the newest `keep`, in one
    /// atomic step: on a shared store every replica's events are in one bounded list.
    async fn append_audit(&self, event: &str, keep: usize) -> Result<(), StoreError>;

    /// The newest `limit` audit events, newest first.
    async fn audit_events(&self, limit: usize) -> Result<Vec<String>, StoreError>;

    /// Removes the OTT and returns its login if it was live. Atomic: at most one caller gets it.
    async fn consume_ott(&self, hash: &TokenHash, now: u64) -> Result<Option<String>, StoreError>;

    async fn settings(&self) -> Result<Option<ConnectorSettings>, StoreError>;
    async fn put_settings(&self, settings: ConnectorSettings) -> Result<(), StoreError>;

    /// The current failure count for `key`, if its window is still open.
    async fn login_failures(&self, key: &str, now: u64) -> Result<Option<FailureCount>, StoreError>;
    /// Counts one attempt against every `(key, max)` if each is below its `max` inside its
    /// window (opening a window of `window_secs` where none is open), or against none. Atomic
    /// over all the keys: however many calls race, no key ever counts more than its `max`. An
    /// attempt counted stays counted (a failure) unless given back with [`Self::release_attempt`].
    async fn reserve_attempt(
        &self,
        keys: &[(&str, u32)],
        window_secs: u64,
        now: u64,
    ) -> Result<Reservation, StoreError>;
    /// Gives one reserved attempt back to `key` (never below zero).
    async fn release_attempt(&self, key: &str, now: u64) -> Result<(), StoreError>;
    async fn clear_login_failures(&self, key: &str) -> Result<(), StoreError>;

    /// How many entries (records, keys) the store holds in all: what shows that its state is
    /// bounded. Walks everything, so for tests and diagnostics, not request paths.
    async fn entries(&self) -> Result<usize, StoreError>;

    /// Cheap liveness probe for /readyz.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Drops entries whose time has passed. Returns how many were removed.
    async fn purge_expired(&self, now: u64) -> Result<usize, StoreError>;

    /// Every revoked session whose `revoked_until` is at or after `now`: what a gateway loads at
    /// start and re-reads periodically.
    async fn live_revocations(&self, now: u64) -> Result<Vec<Revoked>, StoreError>;

    /// Revocations made by other processes sharing this store, as they happen. `None` when no
    /// other process can revoke (memory, file).
    fn revocation_feed(&self) -> Option<broadcast::Receiver<Revoked>> {
        None
    }
}
