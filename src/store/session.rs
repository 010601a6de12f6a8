//! One record per session, of constant size however often the session refreshes, and the one
//! decision every store makes on it when a refresh token is presented.
//!
//! # Refresh tokens without one record per token
//!
//! A refresh token is `{session}.{generation}.{base64url(proof ‖ secret)}` (built in
//! `auth::refresh`): `proof` is 16 random bytes fixed for the session's life, `secret` 32 random
//! bytes new in every generation. The record keeps only SHA-256 digests: of the proof, of the
//! current generation's secret and of the previous generation's secret, plus the generation
//! number. So:
//!
//! - the current token is the one whose generation and secret match: it rotates;
//! - any other token whose proof matches was issued in this session (nobody else knows the
//!   proof): an earlier generation, or one forged by a holder of an earlier token. Either way the
//!   session's tokens have leaked, so it is theft and the session is revoked — except the
//!   immediately previous token presented again within the reuse grace while its successor is
//!   unspent (two tabs, a retried request), which gets that successor back;
//! - a token whose proof does not match, or whose session is unknown, expired or ended, is
//!   `Unknown`: knowing a session id (it is in every access token) is not enough to revoke it.
//!
//! Reuse of any earlier generation is therefore detected with three digests and a counter. The
//! store never holds a token, nor anything that mints one: digests cannot be reversed, and the
//! successor kept for the grace is sealed (AES-256-GCM) under a key derived from its
//! predecessor, which the store does not have.
//!
//! The record also carries what a session list needs (created, last refreshed, refresh count,
//! client address, user agent, expiry), and every store indexes sessions by login
//! (`Store::sessions_of`): one index entry per session, dropped with it.

use serde::{Deserialize, Serialize};

use super::{NewSession, Presented, Successor, TokenHash};

/// Whether a session may still refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionState {
    Live,
    /// Logout or an administrator: its tokens are `Unknown`, nothing is theft.
    Ended,
    /// Reuse detected: revoked; its tokens are `Unknown` from then on.
    Stolen,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub login: String,
    pub created_at: u64,
    pub last_refresh_at: u64,
    pub refresh_count: u64,
    pub client_address: String,
    pub user_agent: String,
    /// When the current refresh token expires (unix seconds).
    pub expires_at: u64,
    /// The latest `exp` of any access token issued in the session.
    pub access_expires_max: u64,
    pub state: SessionState,
    pub generation: u64,
    pub key_hash: TokenHash,
    pub current_hash: TokenHash,
    /// Generation − 1's secret digest; all zeros at generation 0 (no secret hashes to it).
    pub previous_hash: TokenHash,
    /// When generation − 1 was spent.
    pub previous_spent_at: u64,
    /// The current token sealed under a key derived from generation − 1 (empty at generation 0).
    pub sealed: Vec<u8>,
}

/// What [`SessionRecord::present`] decided; the store turns it into a `Rotation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Rotated,
    Replayed(Vec<u8>),
    Theft,
    Unknown,
}

impl SessionRecord {
    pub fn new(s: &NewSession) -> Self {
        Self {
            login: s.login.clone(),
            created_at: s.created_at,
            last_refresh_at: s.created_at,
            refresh_count: 0,
            client_address: s.client_address.clone(),
            user_agent: s.user_agent.clone(),
            expires_at: s.refresh_expires,
            access_expires_max: s.access_expires,
            state: SessionState::Live,
            generation: 0,
            key_hash: s.key_hash,
            current_hash: s.secret_hash,
            previous_hash: [0; 32],
            previous_spent_at: 0,
            sealed: Vec::new(),
        }
    }

    /// The decision of the module comment, applied to `self`. The Redis store makes the same
    /// decision in `rotate.lua`; the conformance tests hold both to it.
    pub fn present(&mut self, p: &Presented, next: &Successor, grace_secs: u64, now: u64) -> Decision {
        if self.state != SessionState::Live || self.expires_at <= now || p.key_hash != self.key_hash {
            return Decision::Unknown;
        }
        if p.generation == self.generation && p.secret_hash == self.current_hash {
            self.previous_hash = self.current_hash;
            self.previous_spent_at = now;
            self.current_hash = next.secret_hash;
            self.sealed = next.sealed.clone();
            self.generation += 1;
            self.expires_at = next.refresh_expires;
            self.access_expires_max = self.access_expires_max.max(next.access_expires);
            self.last_refresh_at = now;
            self.refresh_count += 1;
            return Decision::Rotated;
        }
        let in_grace = grace_secs > 0 && now.saturating_sub(self.previous_spent_at) < grace_secs;
        if in_grace
            && p.generation.checked_add(1) == Some(self.generation)
            && p.secret_hash == self.previous_hash
        {
            self.access_expires_max = self.access_expires_max.max(next.access_expires);
            return Decision::Replayed(self.sealed.clone());
        }
        self.state = SessionState::Stolen;
        Decision::Theft
    }

    /// Whether the store may drop it: its refresh token and every access token issued in it
    /// have expired (revocations are kept apart, for as long as they matter).
    pub fn expired(&self, now: u64) -> bool {
        self.expires_at <= now && self.access_expires_max <= now
    }
}
