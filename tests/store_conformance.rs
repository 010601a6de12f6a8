//! The store contract, written once against `trait Store` and run for every backend: memory,
//! file (redb in a temporary folder) and redis (the machine's Redis, under a unique key prefix).

mod support;

use std::sync::Arc;
use std::time::Duration;

use bo_gateway::config::StoreConfig;
use bo_gateway::store::{self, ConnectorSettings, MemoryStore, NewSession, Rotation, Store, TokenHash};
use support::redis as test_redis;

/// A store under test and what to clean up after it.
struct Backend {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    redis: Option<(String, String)>,
}

impl Backend {
    async fn finish(self) {
        if let Some((url, prefix)) = &self.redis {
            test_redis::cleanup(url, prefix).await;
        }
    }
}

async fn memory() -> Option<Backend> {
    Some(Backend { store: Arc::new(MemoryStore::new()), _dir: None, redis: None })
}

async fn file() -> Option<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let cfg =
        StoreConfig { kind: "file".into(), path: dir.path().join("db/state.redb"), ..Default::default() };
    Some(Backend { store: store::open(&cfg).await.unwrap(), _dir: Some(dir), redis: None })
}

async fn redis() -> Option<Backend> {
    let url = test_redis::shared().await?;
    let prefix = test_redis::unique_prefix();
    let cfg = StoreConfig {
        kind: "redis".into(),
        url: url.clone(),
        key_prefix: prefix.clone(),
        ..Default::default()
    };
    Some(Backend { store: store::open(&cfg).await.unwrap(), _dir: None, redis: Some((url, prefix)) })
}

fn h(n: u8) -> TokenHash {
    [n; 32]
}

fn session(id: &str, refresh: TokenHash, now: u64) -> NewSession {
    NewSession {
        id: id.into(),
        login: "alice".into(),
        refresh_hash: refresh,
        refresh_expires: now + 100,
        access_expires: now + 10,
    }
}

async fn rotation_and_reuse(store: Arc<dyn Store>) {
    let now = 1_000;
    store.create_session(session("s1", h(1), now)).await.unwrap();
    let r = store.rotate_refresh(&h(1), &h(2), now + 100, now + 20, now).await.unwrap();
    assert_eq!(
        r,
        Rotation::Rotated(bo_gateway::store::SessionInfo { id: "s1".into(), login: "alice".into() })
    );
    // h(1) again: reuse, the session is revoked until its latest access token expires.
    let r = store.rotate_refresh(&h(1), &h(3), now + 100, now + 30, now).await.unwrap();
    assert_eq!(r, Rotation::Reused { session: "s1".into(), revoked_until: now + 20 });
    // The descendant is dead too.
    let r = store.rotate_refresh(&h(2), &h(4), now + 100, now + 30, now).await.unwrap();
    assert!(!matches!(r, Rotation::Rotated(_)), "{r:?}");
    assert_eq!(
        store.rotate_refresh(&h(99), &h(98), now + 100, now + 30, now).await.unwrap(),
        Rotation::Unknown
    );
}

async fn rotation_is_atomic(store: Arc<dyn Store>) {
    let now = 1_000;
    store.create_session(session("s2", h(10), now)).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32u8 {
        let s = store.clone();
        tasks.spawn(
            async move { s.rotate_refresh(&h(10), &h(100 + i), now + 100, now + 20, now).await.unwrap() },
        );
    }
    let results = tasks.join_all().await;
    assert_eq!(results.iter().filter(|r| matches!(r, Rotation::Rotated(_))).count(), 1, "{results:?}");
}

async fn expiry(store: Arc<dyn Store>) {
    let now = 1_000;
    store.create_session(session("s3", h(20), now)).await.unwrap();
    assert_eq!(
        store.rotate_refresh(&h(20), &h(21), now + 200, now + 20, now + 100).await.unwrap(),
        Rotation::Unknown
    );
    store.put_ott(&h(22), "alice", now + 5).await.unwrap();
    assert_eq!(store.consume_ott(&h(22), now + 5).await.unwrap(), None);
    store.put_ott(&h(23), "alice", now + 5).await.unwrap();
    store.create_session(session("s3b", h(24), now)).await.unwrap();
    assert_eq!(store.revoke_session("s3b").await.unwrap(), Some(now + 10));
    assert_eq!(store.live_revocations(now + 10).await.unwrap(), vec![("s3b".to_string(), now + 10)]);
    // Everything above has expired by now + 1000: each backend drops at least the revocation.
    assert!(store.purge_expired(now + 1_000).await.unwrap() > 0);
    assert_eq!(store.live_revocations(now + 10).await.unwrap(), vec![], "purged");
    assert_eq!(store.consume_ott(&h(23), now + 1_000).await.unwrap(), None);
    assert_eq!(
        store.rotate_refresh(&h(24), &h(25), now + 2_000, now + 1_100, now + 1_000).await.unwrap(),
        Rotation::Unknown
    );
}

/// More entries than one purge step looks at (the file store purges in bounded steps): every
/// expired one goes, every live one stays.
async fn purge_keeps_the_live(store: Arc<dyn Store>) {
    let now = 1_000;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..5_000u32 {
        let s = store.clone();
        tasks.spawn(async move {
            let mut hash = [7u8; 32];
            hash[..4].copy_from_slice(&i.to_le_bytes());
            let expires = if i % 1_000 == 0 { now + 500 } else { now + 5 };
            s.put_ott(&hash, "alice", expires).await.unwrap();
            let id = format!("p{i}");
            hash[4] = 8;
            let mut new = session(&id, hash, now);
            new.refresh_expires = expires;
            new.access_expires = expires;
            s.create_session(new).await.unwrap();
        });
    }
    tasks.join_all().await;
    store.purge_expired(now + 100).await.unwrap();
    for i in [0u32, 1, 999, 1_000, 2_047, 2_048, 4_000, 4_999] {
        let mut hash = [7u8; 32];
        hash[..4].copy_from_slice(&i.to_le_bytes());
        let live = i % 1_000 == 0;
        let got = store.consume_ott(&hash, now + 100).await.unwrap();
        assert_eq!(got.is_some(), live, "ott {i}");
        hash[4] = 8;
        let r = store.rotate_refresh(&hash, &h(200), now + 600, now + 600, now + 100).await.unwrap();
        assert_eq!(matches!(r, Rotation::Rotated(_)), live, "session {i}: {r:?}");
    }
}

async fn ott_single_use(store: Arc<dyn Store>) {
    let now = 1_000;
    store.put_ott(&h(30), "bob", now + 30).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let s = store.clone();
        tasks.spawn(async move { s.consume_ott(&h(30), now).await.unwrap() });
    }
    let got: Vec<_> = tasks.join_all().await.into_iter().flatten().collect();
    assert_eq!(got, vec!["bob".to_string()]);
}

async fn revocation(store: Arc<dyn Store>) {
    let now = 1_000;
    store.create_session(session("s4", h(40), now)).await.unwrap();
    assert_eq!(store.revoke_session("s4").await.unwrap(), Some(now + 10));
    assert_eq!(store.live_revocations(now).await.unwrap(), vec![("s4".to_string(), now + 10)]);
    assert_eq!(store.live_revocations(now + 11).await.unwrap(), vec![], "over once its tokens expire");
    let r = store.rotate_refresh(&h(40), &h(41), now + 100, now + 20, now).await.unwrap();
    assert!(!matches!(r, Rotation::Rotated(_)), "a logged-out session refreshed: {r:?}");
    assert_eq!(store.revoke_session("nope").await.unwrap(), None);
}

async fn settings_and_counters(store: Arc<dyn Store>) {
    assert_eq!(store.settings().await.unwrap(), None);
    let s = ConnectorSettings {
        access_token_life_time: 60,
        refresh_token_life_time: 600,
        one_time_token_life_time: 10,
    };
    store.put_settings(s).await.unwrap();
    assert_eq!(store.settings().await.unwrap(), Some(s));
    let now = 1_000;
    assert_eq!(store.login_failures("login:x", now).await.unwrap(), None);
    store.record_login_failure("login:x", 60, now).await.unwrap();
    let f = store.record_login_failure("login:x", 60, now + 1).await.unwrap();
    assert_eq!((f.count, f.resets_at), (2, now + 60));
    assert_eq!(store.login_failures("login:x", now + 61).await.unwrap(), None, "window passed");
    let f = store.record_login_failure("login:x", 60, now + 61).await.unwrap();
    assert_eq!(f.count, 1, "a new window starts fresh");
    store.clear_login_failures("login:x").await.unwrap();
    assert_eq!(store.login_failures("login:x", now + 62).await.unwrap(), None);
    store.ping().await.unwrap();
}

macro_rules! conformance {
    ($module:ident, $make:ident, [$($case:ident),*]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let Some(b) = super::$make().await else { return };
                    super::$case(b.store.clone()).await;
                    b.finish().await;
                }
            )*
        }
    };
}

macro_rules! all_backends {
    ($($case:ident),*) => {
        conformance!(memory, memory, [$($case),*]);
        conformance!(file, file, [$($case),*]);
        conformance!(redis, redis, [$($case),*]);
    };
}

all_backends!(
    rotation_and_reuse,
    rotation_is_atomic,
    expiry,
    purge_keeps_the_live,
    ott_single_use,
    revocation,
    settings_and_counters
);

/// Two stores on one Redis prefix stand for two replicas: a revocation made through one reaches
/// the other's feed (pub/sub) well within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_revocations_reach_other_replicas() {
    let Some(url) = test_redis::shared().await else { return };
    let prefix = test_redis::unique_prefix();
    let cfg = StoreConfig {
        kind: "redis".into(),
        url: url.clone(),
        key_prefix: prefix.clone(),
        ..Default::default()
    };
    let a = store::open(&cfg).await.unwrap();
    let b = store::open(&cfg).await.unwrap();
    let mut feed = b.revocation_feed().expect("redis has a feed");
    // The subscription is made in the background; wait until a probe message comes through.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let now = 1_000;
    let mut n = 0u8;
    let got = loop {
        assert!(std::time::Instant::now() < deadline, "no revocation reached the other store");
        n += 1;
        let id = format!("s{n}");
        a.create_session(session(&id, h(n), now)).await.unwrap();
        a.revoke_session(&id).await.unwrap();
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(300), feed.recv()).await {
            break m;
        }
    };
    assert_eq!(got.1, now + 10);
    let started = std::time::Instant::now();
    a.create_session(session("last", h(200), now)).await.unwrap();
    a.revoke_session("last").await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            let m = feed.recv().await.unwrap();
            if m.0 == "last" {
                return m;
            }
        }
    })
    .await
    .expect("within one second");
    assert_eq!(m, ("last".to_string(), now + 10));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(MemoryStore::new().revocation_feed().is_none(), "one process needs no feed");
    test_redis::cleanup(&url, &prefix).await;
}
