//! The verified-token cache and the revoked-session set, both consulted on every Bearer check.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;

use super::tokens::Identity;

/// Verified tokens, keyed by the token's own bytes: a hit (an exact byte-for-byte match) skips
/// the signature check. The table hashes with foldhash, seeded at random per process, so nobody
/// can aim tokens at one bucket; the full comparison on lookup means a hash collision can only
/// ever cost a probe, never return another token's identity.
///
/// Each entry carries the generation of the key set that verified it, and a lookup with another
/// generation is a miss: a verification that began before a reload and finishes after it can
/// still insert, but what it inserts never counts for the new key set (SPEC §2: a key a reload
/// removed verifies nothing from the moment the reload completes, whatever is cached).
pub struct TokenCache {
    map: DashMap<Box<[u8]>, Entry, foldhash::quality::RandomState>,
    capacity: AtomicUsize,
    hits: AtomicU64,
    misses: AtomicU64,
}

struct Entry {
    identity: Arc<Identity>,
    generation: u64,
}

impl TokenCache {
    /// `capacity` 0 turns the cache off (every request verifies its signature).
    pub fn new(capacity: usize) -> Self {
        Self {
            map: DashMap::default(),
            capacity: AtomicUsize::new(capacity),
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

    /// Whether lookups are worth making (capacity 0 turns the cache off).
    pub fn enabled(&self) -> bool {
        self.capacity() > 0
    }

    /// The identity cached for `token` by the key set of `generation`; an entry of another
    /// generation is a miss.
    pub fn get(&self, token: &str, generation: u64) -> Option<Arc<Identity>> {
        let e = self.map.get(token.as_bytes())?;
        (e.generation == generation).then(|| e.identity.clone())
    }

    pub fn remove(&self, token: &str) {
        self.map.remove(token.as_bytes());
    }

    pub fn insert(&self, token: &str, identity: Arc<Identity>, generation: u64, now: u64) {
        if self.map.len() >= self.capacity() {
            self.make_room(now);
        }
        self.map.insert(token.as_bytes().into(), Entry { identity, generation });
    }

    /// Drops expired entries; if the cache is still full, drops an arbitrary eighth of it so
    /// inserts stay cheap. Evicted tokens are simply verified again on their next use.
    fn make_room(&self, now: u64) {
        self.purge_expired(now);
        if self.map.len() < self.capacity() {
            return;
        }
        let victims: Vec<Box<[u8]>> =
            self.map.iter().take((self.capacity() / 8).max(1)).map(|e| e.key().clone()).collect();
        for k in victims {
            self.map.remove(&k);
        }
    }

    pub fn purge_expired(&self, now: u64) {
        self.map.retain(|_, e| e.identity.exp >= now);
    }

    pub fn clear(&self) {
        self.map.clear();
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn identity(login: &str, exp: u64) -> Arc<Identity> {
        Arc::new(Identity {
            login: login.into(),
            roles: vec![],
            session: format!("s-{login}"),
            exp,
            login_header: HeaderValue::from_str(login).unwrap(),
            roles_header: HeaderValue::from_static(""),
            session_header: HeaderValue::from_static("s"),
        })
    }

    #[test]
    fn only_the_exact_token_hits() {
        let cache = TokenCache::new(100);
        let token = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl";
        cache.insert(token, identity("a", 10), 1, 0);
        assert_eq!(cache.get(token, 1).unwrap().login, "a");
        // One byte different anywhere (payload or signature), a prefix, an extension: misses.
        for other in [
            "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJiIn0.c2lnbmF0dXJl",
            "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJm",
            "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJ",
            "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJlA",
        ] {
            assert!(cache.get(other, 1).is_none(), "{other} hit");
        }
        cache.remove(token);
        assert!(cache.get(token, 1).is_none());
    }

    #[test]
    fn an_entry_counts_only_for_the_key_set_that_verified_it() {
        let cache = TokenCache::new(100);
        cache.insert("t", identity("a", 10), 7, 0);
        assert!(cache.get("t", 7).is_some());
        assert!(cache.get("t", 8).is_none(), "a newer key set must verify again");
        assert!(cache.get("t", 6).is_none());
        // A late insert by an old verification does not shadow the new key set's answer either.
        cache.insert("t", identity("a", 10), 6, 0);
        assert!(cache.get("t", 7).is_none());
    }

    #[test]
    fn a_full_cache_makes_room_expired_first() {
        let cache = TokenCache::new(8);
        for i in 0..8 {
            cache.insert(&format!("t{i}"), identity("a", if i < 4 { 5 } else { 100 }), 1, 0);
        }
        cache.insert("new", identity("b", 100), 1, 50);
        assert!(cache.len() <= 8);
        assert!(cache.get("new", 1).is_some());
        assert!((0..4).all(|i| cache.get(&format!("t{i}"), 1).is_none()), "expired entries purged first");
        assert!(
            (4..8).all(|i| cache.get(&format!("t{i}"), 1).is_some()),
            "live entries kept while there is room"
        );
    }
}
