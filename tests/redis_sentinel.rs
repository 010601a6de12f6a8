//! `store.sentinels` (issue 17): the store finds the master through Sentinel and, after the
//! master is killed and a replica promoted, finds the new one without a restart; its revocation
//! feed subscribes on the new master too. Own `redis-server` processes, never the shared one.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bo_gateway::auth::refresh::RefreshToken;
use bo_gateway::config::StoreConfig;
use bo_gateway::store::{self, ConnectorSettings, NewSession, Rotation, Store};
use support::redis_procs::{MASTER_NAME, SentinelSet, query};

fn cfg(set: &SentinelSet, acks: u32) -> StoreConfig {
    StoreConfig {
        kind: "redis".into(),
        sentinels: set.sentinel_addrs(),
        master_name: MASTER_NAME.into(),
        min_replica_acks: acks,
        key_prefix: "sentinel-test:".into(),
        ..Default::default()
    }
}

fn new_session(first: &RefreshToken, now: u64) -> NewSession {
    support::sessions::new_session(first, now, "sentinel/1")
}

async fn rotate(s: &Arc<dyn Store>, t: &RefreshToken, now: u64) -> (Result<Rotation, String>, RefreshToken) {
    let next = t.successor();
    let rec = t.successor_record(&next, now + 100, now + 20).unwrap();
    (s.rotate_refresh(&t.presented(), &rec, 0, now).await.map_err(|e| e.to_string()), next)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failover_is_followed_without_a_restart() {
    let Some(mut set) = SentinelSet::start(1).await else { return };
    // Acknowledged by the replica before the kill: the promoted replica has all of it.
    let acked = store::open(&cfg(&set, 1)).await.unwrap();
    let other = store::open(&cfg(&set, 0)).await.unwrap();
    let mut feed = other.revocation_feed().unwrap();
    let now = 1_000;
    let t0 = RefreshToken::first("f1");
    let deadline = Instant::now() + Duration::from_secs(10);
    while acked.create_session(new_session(&t0, now)).await.is_err() {
        assert!(Instant::now() < deadline, "no master found through sentinel");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (r, t1) = rotate(&acked, &t0, now).await;
    assert!(matches!(r, Ok(Rotation::Rotated(_))), "{r:?}");
    acked.put_ott(&[5; 32], "alice", now + 60).await.unwrap();
    assert_eq!(acked.consume_ott(&[5; 32], now).await.unwrap().as_deref(), Some("alice"));

    let old = set.kill_master().await;
    let killed = Instant::now();
    let new = set.wait_promoted(old).await;
    assert_ne!(new, old);

    // The same store objects, no restart: the next calls reach the new master.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (r, t2) = loop {
        let (r, t2) = rotate(&other, &t1, now).await;
        match r {
            Ok(r) => break (r, t2),
            Err(e) => assert!(Instant::now() < deadline, "still failing after the promotion: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("first rotation after the kill: {:?} after it", killed.elapsed());
    assert!(matches!(r, Rotation::Rotated(_)), "the rotation made before the kill survived: {r:?}");
    // A spent token does not come back: generation 0 is theft, not a fresh start.
    let (r, _) = rotate(&other, &t0, now).await;
    assert!(matches!(r, Ok(Rotation::Reused { .. })), "{r:?}");
    assert_eq!(other.consume_ott(&[5; 32], now).await.unwrap(), None, "a used OTT stays used");
    let _ = t2;

    // The feed subscribed again on the new master: a revocation made now reaches it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    loop {
        n += 1;
        let id = format!("g{n}");
        let _ = acked.create_session(new_session(&RefreshToken::first(&id), now)).await;
        let _ = other.create_session(new_session(&RefreshToken::first(&id), now)).await;
        let _ = other.revoke_session(&id).await;
        let got = tokio::time::timeout(Duration::from_millis(300), async {
            loop {
                match feed.recv().await {
                    Ok((sid, _)) if sid == id => return true,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return false,
                }
            }
        })
        .await;
        if got == Ok(true) {
            break;
        }
        assert!(Instant::now() < deadline, "the feed never heard the new master");
    }

    // The old master comes back as a replica of the new one; calls keep going to the master.
    set.server(old).restart().await;
    set.wait_replicas(new, 1).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let info: Option<String> = query(old, &["INFO", "replication"]).await;
        if info.is_some_and(|i| i.contains("master_link_status:up")) {
            break;
        }
        assert!(Instant::now() < deadline, "the old master never synced as a replica");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A replica that has just synced may take a moment to acknowledge; settings are idempotent.
    let settings = ConnectorSettings {
        access_token_life_time: 60,
        refresh_token_life_time: 600,
        one_time_token_life_time: 10,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = acked.put_settings(settings).await {
        assert!(Instant::now() < deadline, "the old master never acknowledged as a replica: {e}");
    }
    let t = RefreshToken::first("after");
    other.create_session(new_session(&t, now)).await.unwrap();
    let r = rotate(&acked, &t, now).await.0;
    assert!(matches!(r, Ok(Rotation::Rotated(_))), "acknowledged by the old master, now a replica: {r:?}");
}

/// A master name Sentinel does not know: the store opens (unready), and calls fail quickly with
/// `StoreError`, never hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_master_name_is_unavailable_not_a_hang() {
    let Some(set) = SentinelSet::start(0).await else { return };
    let mut c = cfg(&set, 0);
    c.master_name = "nobody".into();
    let s = store::open(&c).await.unwrap();
    let t = Instant::now();
    assert!(s.ping().await.is_err());
    assert!(s.session("x").await.is_err());
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
}
