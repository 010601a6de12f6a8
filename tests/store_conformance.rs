//! The store contract, written once against `trait Store` and run for every backend: memory,
//! file (redb in a temporary folder) and redis (the machine's Redis, under a unique key prefix).

mod support;

use std::sync::Arc;
use std::time::Duration;

use bo_gateway::auth::refresh::RefreshToken;
use bo_gateway::config::StoreConfig;
use bo_gateway::store::{
    self, ConnectorSettings, MemoryStore, NewSession, Reservation, Rotation, SessionInfo, SessionState,
    Store, TokenHash,
};
use support::redis as test_redis;
use support::redis_procs::{Cluster, SentinelSet};

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

fn session(first: &RefreshToken, now: u64) -> NewSession {
    support::sessions::new_session(first, now, "conformance/1")
}

/// A new session `id` in `store`; returns its first refresh token.
async fn start(store: &Arc<dyn Store>, id: &str, now: u64) -> RefreshToken {
    let first = RefreshToken::first(id);
    store.create_session(session(&first, now)).await.unwrap();
    first
}

/// Presents `t` (refresh until now + 100, access until now + `access`); returns the outcome and
/// the successor this call offered.
async fn present(
    store: &Arc<dyn Store>,
    t: &RefreshToken,
    grace: u64,
    now: u64,
    access: u64,
) -> (Rotation, RefreshToken) {
    let next = t.successor();
    let succ = t.successor_record(&next, now + 100, now + access).unwrap();
    (store.rotate_refresh(&t.presented(), &succ, grace, now).await.unwrap(), next)
}

fn rotated(id: &str) -> Rotation {
    Rotation::Rotated(SessionInfo { id: id.into(), login: "alice".into() })
}

async fn rotation_and_reuse(store: Arc<dyn Store>) {
    let now = 1_000;
    let t0 = start(&store, "s1", now).await;
    let (r, t1) = present(&store, &t0, 0, now, 20).await;
    assert_eq!(r, rotated("s1"));
    // t0 again, no grace: reuse; the session is revoked until its latest access token expires.
    let (r, _) = present(&store, &t0, 0, now, 30).await;
    assert_eq!(r, Rotation::Reused { session: "s1".into(), revoked_until: now + 20 });
    // The descendant is dead too, and presenting anything of it again is no new theft.
    assert_eq!(present(&store, &t1, 0, now, 30).await.0, Rotation::Unknown);
    assert_eq!(present(&store, &t0, 0, now, 30).await.0, Rotation::Unknown);
    assert_eq!(present(&store, &RefreshToken::first("nope"), 0, now, 30).await.0, Rotation::Unknown);
}

/// Knowing a session id (it is in every access token) is not enough: a token of that session
/// with another proof is unknown, not theft, and the session goes on.
async fn forged_tokens_are_unknown_not_theft(store: Arc<dyn Store>) {
    let now = 1_000;
    let t0 = start(&store, "s1f", now).await;
    let forged = RefreshToken::first("s1f");
    assert_eq!(present(&store, &forged, 10, now, 20).await.0, Rotation::Unknown);
    assert_eq!(present(&store, &forged.successor(), 10, now, 20).await.0, Rotation::Unknown);
    assert_eq!(present(&store, &t0, 10, now, 20).await.0, rotated("s1f"));
}

/// Any earlier generation, not only the last: the session keeps no record per spent token.
async fn any_earlier_generation_is_theft(store: Arc<dyn Store>) {
    let now = 1_000;
    let mut tokens = vec![start(&store, "s1g", now).await];
    for _ in 0..5 {
        let (r, next) = present(&store, tokens.last().unwrap(), 10, now, 20).await;
        assert_eq!(r, rotated("s1g"));
        tokens.push(next);
    }
    // Generation 2 of 5, inside the grace: too old for it.
    let (r, _) = present(&store, &tokens[2], 10, now, 20).await;
    assert_eq!(r, Rotation::Reused { session: "s1g".into(), revoked_until: now + 20 });
    assert_eq!(present(&store, &tokens[5], 10, now, 20).await.0, Rotation::Unknown);
}

async fn rotation_is_atomic(store: Arc<dyn Store>) {
    let now = 1_000;
    let t0 = start(&store, "s2", now).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (s, t) = (store.clone(), t0.clone());
        tasks.spawn(async move { present(&s, &t, 0, now, 20).await.0 });
    }
    let results = tasks.join_all().await;
    assert_eq!(results.iter().filter(|r| matches!(r, Rotation::Rotated(_))).count(), 1, "{results:?}");
}

/// SPEC §1 reuse grace: the previous token, again, within the grace and while its successor is
/// unspent, gets that same successor; nothing is revoked.
async fn reuse_grace(store: Arc<dyn Store>) {
    let now = 1_000;
    let t0 = start(&store, "s5", now).await;
    let (r, t1) = present(&store, &t0, 10, now, 20).await;
    assert_eq!(r, rotated("s5"));
    let (r, _) = present(&store, &t0, 10, now + 9, 40).await;
    let Rotation::Replayed { session, sealed } = r else { panic!("not replayed: {r:?}") };
    assert_eq!(session, SessionInfo { id: "s5".into(), login: "alice".into() });
    assert_eq!(t0.open(&sealed).as_ref(), Some(&t1), "the same successor");
    assert_eq!(t1.open(&sealed), None, "sealed under the predecessor only");
    let rec = store.session("s5").await.unwrap().unwrap();
    assert_eq!(rec.access_expires_max, now + 9 + 40, "the fresh access token is covered");
    assert_eq!(rec.generation, 1);
    // The successor still works; once it is spent, its predecessor is theft even in grace.
    let (r, _t2) = present(&store, &t1, 10, now + 9, 20).await;
    assert_eq!(r, rotated("s5"));
    let (r, _) = present(&store, &t0, 10, now + 9, 20).await;
    assert!(matches!(r, Rotation::Reused { .. }), "{r:?}");

    // Past the grace: theft.
    let u0 = start(&store, "s5b", now).await;
    assert_eq!(present(&store, &u0, 10, now, 20).await.0, rotated("s5b"));
    assert!(matches!(present(&store, &u0, 10, now + 10, 20).await.0, Rotation::Reused { .. }));
}

/// Concurrent refreshes with one token: one rotates, every other gets that same successor.
async fn concurrent_refresh_in_grace_shares_one_successor(store: Arc<dyn Store>) {
    let now = 1_000;
    let t0 = start(&store, "s5c", now).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (s, t) = (store.clone(), t0.clone());
        tasks.spawn(async move { present(&s, &t, 10, now, 20).await });
    }
    let results = tasks.join_all().await;
    let winners: Vec<_> = results.iter().filter(|(r, _)| matches!(r, Rotation::Rotated(_))).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let successor = &winners[0].1;
    for (r, _) in &results {
        match r {
            Rotation::Rotated(_) => {}
            Rotation::Replayed { sealed, .. } => assert_eq!(t0.open(sealed).as_ref(), Some(successor)),
            other => panic!("neither rotated nor replayed: {other:?}"),
        }
    }
    assert_eq!(store.session("s5c").await.unwrap().unwrap().generation, 1);
}

/// Logout (or an administrator) ends a session: its tokens are unknown, never theft.
async fn ended_sessions_are_not_theft(store: Arc<dyn Store>) {
    let now = 1_000;
    let t0 = start(&store, "s6", now).await;
    let (_, t1) = present(&store, &t0, 10, now, 20).await;
    assert_eq!(store.revoke_session("s6").await.unwrap(), Some(now + 20));
    assert_eq!(present(&store, &t1, 10, now, 20).await.0, Rotation::Unknown);
    assert_eq!(present(&store, &t0, 10, now, 20).await.0, Rotation::Unknown);
    assert_eq!(present(&store, &t0, 0, now + 50, 20).await.0, Rotation::Unknown);
    assert_eq!(store.live_revocations(now).await.unwrap(), vec![("s6".to_string(), now + 20)]);
}

/// Refreshing a session many times leaves the store exactly as large as one refresh did.
async fn sessions_are_bounded(store: Arc<dyn Store>) {
    let now = 1_000;
    let mut t = start(&store, "s7", now).await;
    let (_, next) = present(&store, &t, 10, now, 20).await;
    t = next;
    let entries = store.entries().await.unwrap();
    let sealed = store.session("s7").await.unwrap().unwrap().sealed.len();
    let rounds = if store.kind() == "file" { 200 } else { 1_000 };
    for i in 0..rounds {
        let (r, next) = present(&store, &t, 10, now + i, 20).await;
        assert_eq!(r, rotated("s7"));
        t = next;
    }
    assert_eq!(store.entries().await.unwrap(), entries, "no entry per refresh");
    let rec = store.session("s7").await.unwrap().unwrap();
    assert_eq!((rec.generation, rec.refresh_count), (rounds + 1, rounds + 1));
    assert_eq!(rec.sealed.len(), sealed, "the one sealed successor, no more");
}

/// What the session list of a later release reads: who, from where, since when, how often.
async fn session_records(store: Arc<dyn Store>) {
    let now = 1_000;
    let t0 = start(&store, "s8", now).await;
    let rec = store.session("s8").await.unwrap().unwrap();
    assert_eq!(
        (rec.login.as_str(), rec.client_address.as_str(), rec.user_agent.as_str()),
        ("alice", "192.0.2.7", "conformance/1")
    );
    assert_eq!(
        (rec.created_at, rec.last_refresh_at, rec.refresh_count, rec.expires_at),
        (now, now, 0, now + 100)
    );
    present(&store, &t0, 10, now + 5, 20).await;
    let rec = store.session("s8").await.unwrap().unwrap();
    assert_eq!(
        (rec.created_at, rec.last_refresh_at, rec.refresh_count, rec.expires_at),
        (now, now + 5, 1, now + 105)
    );
    assert_eq!(rec.state, SessionState::Live);
    assert_eq!(rec.key_hash, t0.proof_hash());
    assert_ne!(rec.current_hash, t0.secret_hash(), "spent");
    assert_eq!(store.session("nope").await.unwrap(), None);
}

/// The per-login index a session list starts from: follows rotations, drops expired sessions.
async fn sessions_are_indexed_by_login(store: Arc<dyn Store>) {
    let now = 1_000;
    let a = start(&store, "s9a", now).await;
    let mut short = session(&RefreshToken::first("s9c"), now);
    short.refresh_expires = now + 5;
    store.create_session(short).await.unwrap();
    let mut bob = session(&RefreshToken::first("s9b"), now);
    bob.login = "bob9".into();
    store.create_session(bob).await.unwrap();
    let of = |login: &'static str, at: u64| {
        let store = store.clone();
        async move {
            let mut ids = store.sessions_of(login, at).await.unwrap();
            ids.sort();
            ids
        }
    };
    assert_eq!(of("alice", now).await, ["s9a", "s9c"]);
    assert_eq!(of("alice", now + 10).await, ["s9a"], "expired sessions are not listed");
    assert_eq!(of("bob9", now).await, ["s9b"]);
    assert!(of("nobody", now).await.is_empty());
    // A rotation at now + 50 moves the expiry to now + 150: still listed at now + 120.
    assert_eq!(present(&store, &a, 10, now + 50, 20).await.0, rotated("s9a"));
    assert_eq!(of("alice", now + 120).await, ["s9a"]);
    store.purge_expired(now + 1_000).await.unwrap();
    assert!(of("alice", now + 1_000).await.is_empty());
}

/// The session list without a login: newest first, at most `limit`, expired ones left out,
/// whoever logged in.
async fn recent_sessions_newest_first(store: Arc<dyn Store>) {
    let now = 1_000;
    for (i, id) in ["r1", "r2", "r3", "r4"].iter().enumerate() {
        let mut s = session(&RefreshToken::first(id), now + i as u64);
        s.login = format!("user{i}");
        if *id == "r3" {
            s.refresh_expires = now + 20;
        }
        store.create_session(s).await.unwrap();
    }
    assert_eq!(store.recent_sessions(10, now + 5).await.unwrap(), ["r4", "r3", "r2", "r1"]);
    assert_eq!(store.recent_sessions(2, now + 5).await.unwrap(), ["r4", "r3"]);
    assert_eq!(store.recent_sessions(2, now + 30).await.unwrap(), ["r4", "r2"], "r3 expired");
    assert!(store.recent_sessions(0, now).await.unwrap().is_empty());
    // Ended sessions are still listed (the caller decides what to show); purged ones are not.
    store.revoke_session("r4").await.unwrap();
    assert_eq!(store.recent_sessions(1, now + 5).await.unwrap(), ["r4"]);
    store.purge_expired(now + 1_000).await.unwrap();
    assert!(store.recent_sessions(10, now + 1_000).await.unwrap().is_empty());
}

/// Audit events: newest first, bounded by `keep` whatever the number appended.
async fn audit_is_a_bounded_list(store: Arc<dyn Store>) {
    assert!(store.audit_events(10).await.unwrap().is_empty());
    for i in 0..12 {
        store.append_audit(&format!("{{\"n\":{i}}}"), 5).await.unwrap();
    }
    let got = store.audit_events(10).await.unwrap();
    assert_eq!(got, ["{\"n\":11}", "{\"n\":10}", "{\"n\":9}", "{\"n\":8}", "{\"n\":7}"]);
    assert_eq!(store.audit_events(2).await.unwrap(), ["{\"n\":11}", "{\"n\":10}"]);
    assert!(store.audit_events(0).await.unwrap().is_empty());
    let before = store.entries().await.unwrap();
    for i in 0..20 {
        store.append_audit(&format!("{{\"m\":{i}}}"), 5).await.unwrap();
    }
    assert!(store.entries().await.unwrap() <= before + 1, "the list does not grow past keep");
    assert_eq!(store.audit_events(1).await.unwrap(), ["{\"m\":19}"]);
}

async fn expiry(store: Arc<dyn Store>) {
    let now = 1_000;
    let t = start(&store, "s3", now).await;
    assert_eq!(present(&store, &t, 10, now + 100, 20).await.0, Rotation::Unknown);
    store.put_ott(&h(22), "alice", now + 5).await.unwrap();
    assert_eq!(store.consume_ott(&h(22), now + 5).await.unwrap(), None);
    store.put_ott(&h(23), "alice", now + 5).await.unwrap();
    let t = start(&store, "s3b", now).await;
    assert_eq!(store.revoke_session("s3b").await.unwrap(), Some(now + 10));
    assert_eq!(store.live_revocations(now + 10).await.unwrap(), vec![("s3b".to_string(), now + 10)]);
    // Everything above has expired by now + 1000: each backend drops at least the revocation.
    assert!(store.purge_expired(now + 1_000).await.unwrap() > 0);
    assert_eq!(store.live_revocations(now + 10).await.unwrap(), vec![], "purged");
    assert_eq!(store.consume_ott(&h(23), now + 1_000).await.unwrap(), None);
    assert_eq!(present(&store, &t, 10, now + 1_000, 20).await.0, Rotation::Unknown);
}

/// More entries than one purge step looks at (the file store purges in bounded steps): every
/// expired one goes, every live one stays.
async fn purge_keeps_the_live(store: Arc<dyn Store>) {
    let now = 1_000;
    let mut tasks = tokio::task::JoinSet::new();
    // Many at once, not all: 5,000 calls queued together can outlast a store call's time limit
    // on a busy machine.
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    for i in 0..5_000u32 {
        let s = store.clone();
        let gate = gate.clone();
        tasks.spawn(async move {
            let _turn = gate.acquire().await.unwrap();
            let mut hash = [7u8; 32];
            hash[..4].copy_from_slice(&i.to_le_bytes());
            let expires = if i % 1_000 == 0 { now + 500 } else { now + 5 };
            s.put_ott(&hash, "alice", expires).await.unwrap();
            let first = RefreshToken::first(&format!("p{i}"));
            let mut new = session(&first, now);
            new.refresh_expires = expires;
            new.access_expires = expires;
            s.create_session(new).await.unwrap();
            (i, first)
        });
    }
    let firsts: std::collections::HashMap<u32, RefreshToken> = tasks.join_all().await.into_iter().collect();
    store.purge_expired(now + 100).await.unwrap();
    for i in [0u32, 1, 999, 1_000, 2_047, 2_048, 4_000, 4_999] {
        let mut hash = [7u8; 32];
        hash[..4].copy_from_slice(&i.to_le_bytes());
        let live = i % 1_000 == 0;
        let got = store.consume_ott(&hash, now + 100).await.unwrap();
        assert_eq!(got.is_some(), live, "ott {i}");
        if store.kind() != "redis" {
            // Redis drops keys by their TTL, not by purging.
            assert_eq!(store.session(&format!("p{i}")).await.unwrap().is_some(), live, "session {i}");
        }
        let (r, _) = present(&store, &firsts[&i], 10, now + 100, 500).await;
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
    let t = start(&store, "s4", now).await;
    assert_eq!(store.revoke_session("s4").await.unwrap(), Some(now + 10));
    assert_eq!(store.live_revocations(now).await.unwrap(), vec![("s4".to_string(), now + 10)]);
    assert_eq!(store.live_revocations(now + 11).await.unwrap(), vec![], "over once its tokens expire");
    assert_eq!(present(&store, &t, 10, now, 20).await.0, Rotation::Unknown, "a logged-out session refreshed");
    assert_eq!(store.session("s4").await.unwrap().unwrap().state, SessionState::Ended);
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
    let key = [("login:x", 5)];
    assert_eq!(store.login_failures("login:x", now).await.unwrap(), None);
    assert_eq!(store.reserve_attempt(&key, 60, now).await.unwrap(), Reservation::Granted);
    assert_eq!(store.reserve_attempt(&key, 60, now + 1).await.unwrap(), Reservation::Granted);
    let f = store.login_failures("login:x", now + 1).await.unwrap().unwrap();
    assert_eq!((f.count, f.resets_at), (2, now + 60));
    store.release_attempt("login:x", now + 2).await.unwrap();
    assert_eq!(store.login_failures("login:x", now + 2).await.unwrap().unwrap().count, 1, "given back");
    assert_eq!(store.login_failures("login:x", now + 61).await.unwrap(), None, "window passed");
    assert_eq!(store.reserve_attempt(&key, 60, now + 61).await.unwrap(), Reservation::Granted);
    let f = store.login_failures("login:x", now + 61).await.unwrap().unwrap();
    assert_eq!((f.count, f.resets_at), (1, now + 121), "a new window starts fresh");
    store.clear_login_failures("login:x").await.unwrap();
    assert_eq!(store.login_failures("login:x", now + 62).await.unwrap(), None);
    store.release_attempt("login:x", now + 62).await.unwrap();
    assert_eq!(store.login_failures("login:x", now + 62).await.unwrap(), None, "nothing to give back");
    store.ping().await.unwrap();
}

/// SPEC §1 login limits under concurrency: 150 attempts at once, 5 reach the password check.
/// A key at its limit refuses without counting anything against the others.
async fn reservations_hold_under_concurrency(store: Arc<dyn Store>) {
    let now = 1_000;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..150 {
        let s = store.clone();
        tasks.spawn(async move {
            let addr = format!("addr:{}", i % 3);
            s.reserve_attempt(&[("login:admin", 5), (addr.as_str(), 50)], 60, now).await.unwrap()
        });
    }
    let results = tasks.join_all().await;
    assert_eq!(results.iter().filter(|r| **r == Reservation::Granted).count(), 5, "{results:?}");
    assert!(results.contains(&Reservation::Refused { resets_at: now + 60 }));
    let mut counted = 0;
    for i in 0..3 {
        counted += store.login_failures(&format!("addr:{i}"), now).await.unwrap().map_or(0, |f| f.count);
    }
    assert_eq!(counted, 5, "refused attempts count against no key");
    assert_eq!(store.login_failures("login:admin", now).await.unwrap().unwrap().count, 5);

    // The address is at its limit: a fresh login is refused and not counted.
    let addr = [("login:a", 5), ("addr:z", 2)];
    assert_eq!(store.reserve_attempt(&addr, 60, now).await.unwrap(), Reservation::Granted);
    assert_eq!(
        store.reserve_attempt(&[("login:b", 5), ("addr:z", 2)], 60, now).await.unwrap(),
        Reservation::Granted
    );
    let refused = store.reserve_attempt(&[("login:c", 5), ("addr:z", 2)], 60, now + 3).await.unwrap();
    assert_eq!(refused, Reservation::Refused { resets_at: now + 60 });
    assert_eq!(store.login_failures("login:c", now + 3).await.unwrap(), None, "nothing counted");
    // A reservation given back makes room for exactly one more.
    store.release_attempt("addr:z", now + 4).await.unwrap();
    assert_eq!(
        store.reserve_attempt(&[("login:c", 5), ("addr:z", 2)], 60, now + 4).await.unwrap(),
        Reservation::Granted
    );
    assert!(matches!(
        store.reserve_attempt(&[("login:d", 5), ("addr:z", 2)], 60, now + 4).await.unwrap(),
        Reservation::Refused { .. }
    ));
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

/// Every case on one set of Redis processes of the test's own (a Sentinel-managed master and
/// replica, or a three-master Cluster), each case under a fresh key prefix: one start-up for all.
macro_rules! on_own_redis {
    ($name:ident, $start:expr, $cfg:expr, [$($case:ident),*]) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            let Some(procs) = $start.await else { return };
            let cfg: fn(&_) -> StoreConfig = $cfg;
            $(
                let mut c = cfg(&procs);
                c.key_prefix = test_redis::unique_prefix();
                let store = store::open(&c).await.unwrap();
                eprintln!("{}: {}", stringify!($name), stringify!($case));
                $case(store).await;
            )*
        }
    };
}

macro_rules! all_backends {
    ($($case:ident),*) => {
        conformance!(memory, memory, [$($case),*]);
        conformance!(file, file, [$($case),*]);
        conformance!(redis, redis, [$($case),*]);
        on_own_redis!(redis_sentinel_conformance, SentinelSet::start(1), sentinel_cfg, [$($case),*]);
        on_own_redis!(redis_cluster_conformance, Cluster::start(0), cluster_cfg, [$($case),*]);
    };
}

fn sentinel_cfg(set: &SentinelSet) -> StoreConfig {
    StoreConfig {
        kind: "redis".into(),
        sentinels: set.sentinel_addrs(),
        master_name: support::redis_procs::MASTER_NAME.into(),
        min_replica_acks: 1,
        ..Default::default()
    }
}

fn cluster_cfg(cluster: &Cluster) -> StoreConfig {
    StoreConfig { kind: "redis".into(), cluster: cluster.addrs(), ..Default::default() }
}

all_backends!(
    rotation_and_reuse,
    forged_tokens_are_unknown_not_theft,
    any_earlier_generation_is_theft,
    rotation_is_atomic,
    reuse_grace,
    concurrent_refresh_in_grace_shares_one_successor,
    ended_sessions_are_not_theft,
    sessions_are_bounded,
    session_records,
    sessions_are_indexed_by_login,
    recent_sessions_newest_first,
    audit_is_a_bounded_list,
    reservations_hold_under_concurrency,
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
    revocations_reach_other_replicas(cfg).await;
    test_redis::cleanup(&url, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_sentinel_revocations_reach_other_replicas() {
    let Some(set) = SentinelSet::start(1).await else { return };
    revocations_reach_other_replicas(sentinel_cfg(&set)).await;
}

/// On Cluster a PUBLISH reaches subscribers on every node, whichever node the two stores'
/// connections landed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cluster_revocations_reach_other_replicas() {
    let Some(cluster) = Cluster::start(0).await else { return };
    revocations_reach_other_replicas(cluster_cfg(&cluster)).await;
}

async fn revocations_reach_other_replicas(cfg: StoreConfig) {
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
        a.create_session(session(&RefreshToken::first(&id), now)).await.unwrap();
        a.revoke_session(&id).await.unwrap();
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(300), feed.recv()).await {
            break m;
        }
    };
    assert_eq!(got.1, now + 10);
    let started = std::time::Instant::now();
    a.create_session(session(&RefreshToken::first("last"), now)).await.unwrap();
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
}
