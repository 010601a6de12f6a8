//! The store contract, written once against `trait Store` and run for every backend.

use std::sync::Arc;

use bo_gateway::store::{ConnectorSettings, MemoryStore, NewSession, Rotation, Store, TokenHash};

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
    assert!(store.purge_expired(now + 1_000).await.unwrap() > 0);
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
    ($module:ident, $make:expr) => {
        mod $module {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn rotation_and_reuse() {
                super::rotation_and_reuse($make).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn rotation_is_atomic() {
                super::rotation_is_atomic($make).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn expiry() {
                super::expiry($make).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn ott_single_use() {
                super::ott_single_use($make).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn revocation() {
                super::revocation($make).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn settings_and_counters() {
                super::settings_and_counters($make).await
            }
        }
    };
}

conformance!(memory, Arc::new(MemoryStore::new()) as Arc<dyn Store>);
