//! The verified-token cache and the revoked-session set, both consulted on every Bearer check.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use std::hash::{BuildHasherDefault, Hasher};

use dashmap::DashMap;

use super::tokens::Identity;

/// Verified tokens keyed by a keyed BLAKE3 hash of the token: a hit skips the signature check.
/// The key is random per process, so nobody can aim a token at another token's slot.
pub struct TokenCache {
    map: DashMap<[u8; 32], Arc<Identity>, BuildHasherDefault<SlotHasher>>,
    capacity: AtomicUsize,
    hash_key: [u8; 32],
    hits: AtomicU64,
    misses: AtomicU64,
}

impl TokenCache {
    /// `capacity` 0 turns the cache off (every request verifies its signature).
    pub fn new(capacity: usize) -> Self {
        let mut hash_key = [0u8; 32];
        // Without OS randomness the gateway cannot issue tokens either; a fixed key only weakens
        // collision resistance against a chosen key, not the 256-bit hash itself.
        let _ = aws_lc_rs::rand::fill(&mut hash_key);
        Self {
            map: DashMap::default(),
            capacity: AtomicUsize::new(capacity),
            hash_key,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Hits and misses since start (a miss is a signature verification).
    pub fn stats(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }

    pub fn count(&self, hit: bool) {
        let c = if hit { &self.hits } else { &self.misses };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }

    pub fn set_capacity(&self, capacity: usize) {
        self.capacity.store(capacity, Ordering::Relaxed);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The cache slot of `token`, or `None` when the cache is off.
    pub fn key(&self, token: &str) -> Option<[u8; 32]> {
        (self.capacity() > 0).then(|| *blake3::keyed_hash(&self.hash_key, token.as_bytes()).as_bytes())
    }

    pub fn get(&self, key: &[u8; 32]) -> Option<Arc<Identity>> {
        self.map.get(key).map(|e| e.value().clone())
    }

    pub fn remove(&self, key: &[u8; 32]) {
        self.map.remove(key);
    }

    pub fn insert(&self, key: [u8; 32], identity: Arc<Identity>, now: u64) {
        if self.map.len() >= self.capacity() {
            self.make_room(now);
        }
        self.map.insert(key, identity);
    }

    /// Drops expired entries; if the cache is still full, drops an arbitrary eighth of it so
    /// inserts stay cheap. Evicted tokens are simply verified again on their next use.
    fn make_room(&self, now: u64) {
        self.purge_expired(now);
        if self.map.len() < self.capacity() {
            return;
        }
        let victims: Vec<[u8; 32]> =
            self.map.iter().take((self.capacity() / 8).max(1)).map(|e| *e.key()).collect();
        for k in victims {
            self.map.remove(&k);
        }
    }

    pub fn purge_expired(&self, now: u64) {
        self.map.retain(|_, id| id.exp >= now);
    }

    pub fn clear(&self) {
        self.map.clear();
    }
}

/// Hashes a cache slot by its first eight bytes: the slot is already a keyed hash, uniform and
/// unguessable, so hashing it again (SipHash, the default) would only cost time.
#[derive(Default)]
pub struct SlotHasher(u64);

impl Hasher for SlotHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Called once with the 32 slot bytes (and a length prefix, which is folded in too).
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        self.0 = self.0.rotate_left(17) ^ u64::from_le_bytes(word);
    }
}

/// Sessions revoked (logout, refresh reuse) whose access tokens may still be unexpired.
/// Each entry lives until the last access token of its session has expired.
#[derive(Default)]
pub struct Revocations {
    map: DashMap<Box<str>, u64>,
    count: AtomicUsize,
}

impl Revocations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn revoke(&self, session: &str, until: u64) {
        let mut slot = self.map.entry(session.into()).or_insert_with(|| {
            self.count.fetch_add(1, Ordering::Relaxed);
            0
        });
        *slot = (*slot).max(until);
    }

    pub fn is_revoked(&self, session: &str, now: u64) -> bool {
        // The common case (no live revocations) costs one atomic load.
        if self.count.load(Ordering::Relaxed) == 0 {
            return false;
        }
        self.map.get(session).is_some_and(|until| *until >= now)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn purge_expired(&self, now: u64) {
        // Decrement per removed entry (under its shard lock), never overwrite: a concurrent
        // revoke must not be counted away, or `is_revoked` would skip the map.
        self.map.retain(|_, until| {
            let keep = *until >= now;
            if !keep {
                self.count.fetch_sub(1, Ordering::Relaxed);
            }
            keep
        });
    }
}
