//! `store.min_replica_acks` (issue 17): a state change is answered only once that many replicas
//! hold it, otherwise 503 `store.unavailable`; and what a client that retries then sees. Each
//! test runs its own `redis-server` processes (a master, and a replica it can detach with
//! `REPLICAOF NO ONE` and attach again), never the shared one.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bo_gateway::auth::refresh::RefreshToken;
use bo_gateway::config::StoreConfig;
use bo_gateway::store::{self, ConnectorSettings, NewSession, Reservation, Rotation, Store, StoreError};
use serde_json::json;
use support::redis::OwnRedis;
use support::redis_procs::Cluster;
use support::{Gateway, Setup, TRADER, error_code, route, upstream};

async fn query<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> T {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut c).await.unwrap()
}

async fn connected_replicas(master: &OwnRedis) -> usize {
    let info: String = query(master.port, &["INFO", "replication"]).await;
    info.lines()
        .find_map(|l| l.strip_prefix("connected_slaves:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

/// Makes `replica` a replica of `master` (or of no one) and waits until the master sees it so.
async fn attach(replica: &OwnRedis, master: Option<&OwnRedis>, watch: &OwnRedis) {
    let port = master.map(|m| m.port.to_string());
    let args = match &port {
        Some(p) => vec!["REPLICAOF", "127.0.0.1", p.as_str()],
        None => vec!["REPLICAOF", "NO", "ONE"],
    };
    // The replica loads the master's data from the socket: no dump.rdb in the working folder.
    let _: String = query(replica.port, &["CONFIG", "SET", "repl-diskless-load", "swapdb"]).await;
    let _: String = query(replica.port, &args).await;
    let want = usize::from(master.is_some());
    let deadline = Instant::now() + Duration::from_secs(15);
    while connected_replicas(watch).await != want {
        assert!(Instant::now() < deadline, "replica link never became {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if master.is_some() {
        // Linked and synced: the replica answers with the master's data.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let info: String = query(replica.port, &["INFO", "replication"]).await;
            if info.contains("master_link_status:up") && !info.contains("master_sync_in_progress:1") {
                break;
            }
            assert!(Instant::now() < deadline, "replica never synced");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn open(url: &str, acks: u32) -> Arc<dyn Store> {
    let cfg = StoreConfig {
        kind: "redis".into(),
        url: url.into(),
        min_replica_acks: acks,
        key_prefix: "acks:".into(),
        ..Default::default()
    };
    store::open(&cfg).await.unwrap()
}

fn new_session(first: &RefreshToken, now: u64) -> NewSession {
    support::sessions::new_session(first, now, "acks/1")
}

fn unavailable<T: std::fmt::Debug>(r: Result<T, StoreError>) {
    assert!(matches!(r, Err(StoreError::Unavailable(ref m)) if m.contains("acknowledged")), "{r:?}");
}

/// No replica, one ack required: every state change fails (it did happen on the master), reads
/// and presentations that change nothing answer as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_replica_every_state_change_is_unavailable() {
    let Some(master) = OwnRedis::start().await else { return };
    let plain = open(&master.url(), 0).await;
    let acked = open(&master.url(), 1).await;
    let now = 1_000;
    let t0 = RefreshToken::first("a1");
    unavailable(acked.create_session(new_session(&t0, now)).await);
    assert!(acked.session("a1").await.unwrap().is_some(), "written on the master all the same");
    let t1 = t0.successor();
    let next = t0.successor_record(&t1, now + 100, now + 20).unwrap();
    unavailable(acked.rotate_refresh(&t0.presented(), &next, 10, now).await);
    assert_eq!(acked.session("a1").await.unwrap().unwrap().generation, 1, "rotated on the master");
    // A token that changes nothing needs no replica.
    let stranger = RefreshToken::first("nobody");
    let r = acked.rotate_refresh(&stranger.presented(), &next, 10, now).await.unwrap();
    assert_eq!(r, Rotation::Unknown);
    unavailable(acked.revoke_session("a1").await);
    plain.put_ott(&[9; 32], "alice", now + 30).await.unwrap();
    unavailable(acked.consume_ott(&[9; 32], now).await);
    assert_eq!(acked.consume_ott(&[9; 32], now).await.unwrap(), None, "spent all the same");
    let settings = ConnectorSettings {
        access_token_life_time: 60,
        refresh_token_life_time: 600,
        one_time_token_life_time: 10,
    };
    unavailable(acked.put_settings(settings).await);
    unavailable(acked.reserve_attempt(&[("login:alice", 5), ("addr:x", 50)], 60, now).await);
    // Refusing an attempt changes nothing.
    for _ in 0..5 {
        let _ = acked.reserve_attempt(&[("login:bob", 1)], 60, now).await;
    }
    assert_eq!(
        acked.reserve_attempt(&[("login:bob", 1)], 60, now).await.unwrap(),
        Reservation::Refused { resets_at: now + 60 }
    );
    acked.ping().await.unwrap();

    // A WAIT holds its connection until it returns: reads never queue behind waiting writes.
    let mut writes = tokio::task::JoinSet::new();
    for _ in 0..48 {
        let s = acked.clone();
        writes.spawn(async move { s.put_settings(settings).await });
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    acked.ping().await.expect("a read while 48 writes wait for a replica");
    assert!(acked.session("a1").await.unwrap().is_some());
    for r in writes.join_all().await {
        assert!(r.is_err());
    }
}

/// With a replica attached, the same calls succeed, and what they wrote is on the replica by the
/// time they answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_replica_state_changes_succeed_and_are_on_the_replica() {
    let Some(master) = OwnRedis::start().await else { return };
    let Some(replica) = OwnRedis::start().await else { return };
    attach(&replica, Some(&master), &master).await;
    let acked = open(&master.url(), 1).await;
    let now = 1_000;
    let t0 = RefreshToken::first("b1");
    acked.create_session(new_session(&t0, now)).await.unwrap();
    let t1 = t0.successor();
    let next = t0.successor_record(&t1, now + 100, now + 20).unwrap();
    assert!(matches!(
        acked.rotate_refresh(&t0.presented(), &next, 10, now).await.unwrap(),
        Rotation::Rotated(_)
    ));
    let generation: String = query(replica.port, &["HGET", "acks:sess:{b1}", "gen"]).await;
    assert_eq!(generation, "1", "the replica holds the rotation");
    acked.put_ott(&[7; 32], "alice", now + 30).await.unwrap();
    assert_eq!(acked.consume_ott(&[7; 32], now).await.unwrap().as_deref(), Some("alice"));
    let ott: Option<String> = query(replica.port, &["GET", &format!("acks:ott:{}", "07".repeat(32))]).await;
    assert_eq!(ott, None, "the replica knows the OTT is spent");
    assert_eq!(acked.revoke_session("b1").await.unwrap(), Some(now + 20));
    let state: String = query(replica.port, &["HGET", "acks:sess:{b1}", "st"]).await;
    assert_eq!(state, "ended");
    assert_eq!(acked.reserve_attempt(&[("login:alice", 5)], 60, now).await.unwrap(), Reservation::Granted);
}

/// Through the gateway: while no replica acknowledges, login, refresh and OTT verification
/// answer 503 `store.unavailable`. A refresh retried (within `refresh_reuse_grace`) once the
/// replica is back gets the successor the unacknowledged rotation recorded: 200, the session
/// lives on, no theft. A retried OTT verification finds the OTT spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_after_an_unacknowledged_change() {
    let Some(master) = OwnRedis::start().await else { return };
    let Some(replica) = OwnRedis::start().await else { return };
    attach(&replica, Some(&master), &master).await;
    let up = upstream::start("bo").await;
    let gw = Gateway::start(Setup {
        store: format!("kind = \"redis\"\nurl = \"{}\"\nmin_replica_acks = 1\n", master.url()),
        tokens: "refresh_reuse_grace = \"30s\"".into(),
        routes: route("api", "/api", &up.url(), ""),
        ..Default::default()
    })
    .await;
    let pair = gw.login(TRADER).await;
    let access = pair["accessToken"].as_str().unwrap().to_string();
    let rt0 = pair["refreshToken"].as_str().unwrap().to_string();
    let ott = gw.issue_ott(&access).await;

    attach(&replica, None, &master).await;
    assert_eq!(error_code(gw.try_login(TRADER.0, TRADER.1).await).await, (503, "store.unavailable".into()));
    assert_eq!(error_code(gw.refresh(&rt0).await).await, (503, "store.unavailable".into()));
    let verify = gw.client.post(gw.url("/external/token/verify")).json(&json!({"token": ott["token"]}));
    assert_eq!(error_code(verify.send().await.unwrap()).await, (503, "store.unavailable".into()));
    // Cached tokens keep flowing.
    assert_eq!(gw.client.get(gw.url("/api/x")).bearer_auth(&access).send().await.unwrap().status(), 200);

    attach(&replica, Some(&master), &master).await;
    let r = gw.refresh(&rt0).await;
    assert_eq!(r.status(), 200, "the retry is the reuse grace's replay, not a theft");
    let retried: serde_json::Value = r.json().await.unwrap();
    let rt1 = retried["refreshToken"].as_str().unwrap();
    let again = gw.refresh(rt1).await;
    assert_eq!(again.status(), 200, "the successor handed to the retry is the session's current token");
    assert_eq!(
        gw.verify_ott(&ott["token"]).await,
        json!({"valid": false}),
        "a used OTT never verifies again"
    );
    gw.login(TRADER).await;
}

/// On Cluster, `WAIT` goes to the master that holds the key, on the connection that wrote it:
/// with the replica of one master gone, changes to keys of that master's slots are unavailable,
/// changes elsewhere are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_cluster_acks_are_counted_where_the_key_lives() {
    let Some(mut cluster) = Cluster::start(1).await else { return };
    let cfg = StoreConfig {
        kind: "redis".into(),
        cluster: cluster.addrs(),
        min_replica_acks: 1,
        key_prefix: "acks:".into(),
        ..Default::default()
    };
    let acked = store::open(&cfg).await.unwrap();
    let now = 1_000;
    let x = "x0";
    let master = cluster.master_of(&format!("acks:sess:{{{x}}}")).await;
    let mut n = 0;
    let y = loop {
        let y = format!("y{n}");
        if cluster.master_of(&format!("acks:sess:{{{y}}}")).await != master {
            break y;
        }
        n += 1;
    };
    let (tx, ty) = (RefreshToken::first(x), RefreshToken::first(&y));
    acked.create_session(new_session(&tx, now)).await.unwrap();
    let mut sy = new_session(&ty, now);
    sy.login = format!("{y}-login");
    acked.create_session(sy).await.unwrap();

    // Kill the replica of the master that holds x.
    let info: String = query(master, &["INFO", "replication"]).await;
    let replica: u16 = info
        .lines()
        .find_map(|l| l.strip_prefix("slave0:"))
        .and_then(|l| l.split(',').find_map(|f| f.strip_prefix("port="))?.parse().ok())
        .unwrap_or_else(|| panic!("the master's replica: {info}"));
    cluster.node(replica).kill();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let info: String = query(master, &["INFO", "replication"]).await;
        if info.contains("connected_slaves:0") {
            break;
        }
        assert!(Instant::now() < deadline, "the master still counts its killed replica");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let rotate = |t: &RefreshToken| {
        let next = t.successor();
        let rec = t.successor_record(&next, now + 100, now + 20).unwrap();
        let (s, p) = (acked.clone(), t.presented());
        async move { s.rotate_refresh(&p, &rec, 10, now).await }
    };
    unavailable(rotate(&tx).await);
    assert!(
        matches!(rotate(&ty).await.unwrap(), Rotation::Rotated(_)),
        "another master's replica acknowledges"
    );
    unavailable(acked.revoke_session(x).await);
    assert_eq!(acked.revoke_session(&y).await.unwrap(), Some(now + 20));
}
