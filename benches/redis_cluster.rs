//! Issue 17 item 5: refresh and OTT (issue + verify) throughput of the Redis store on one server
//! beside a 3-master Redis Cluster, with and without `min_replica_acks = 1`, and the time from
//! SIGKILL of the master to the first successful login through a real gateway (Sentinel and
//! Cluster). Every Redis is a process of its own on free loopback ports (never the shared one).
//!
//! `cargo bench --bench redis_cluster` (needs `redis-server` and `redis-cli`; skipped without).
//! Figures: `benches/README.md`.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "common/sessions.rs"]
mod sessions;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bo_gateway::auth::tokens::{random_token, token_hash};
use bo_gateway::config::StoreConfig;
use bo_gateway::store::{self, Store};
use sessions::{NOW, refresh};
use support::redis_procs::{Cluster, MASTER_NAME, SentinelSet, Single, query};
use support::{Gateway, Setup, TRADER};

/// `total` OTTs each issued and then verified (consumed) by one of `tasks` concurrent tasks;
/// issue + verify pairs per second.
async fn ott(store: &Arc<dyn Store>, tasks: usize, total: usize) -> f64 {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (store, next) = (store.clone(), next.clone());
        set.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let h = token_hash(&random_token(32));
                store.put_ott(&h, "alice", NOW + 30).await.unwrap();
                assert!(store.consume_ott(&h, NOW).await.unwrap().is_some());
            }
        });
    }
    set.join_all().await;
    total as f64 / started.elapsed().as_secs_f64()
}

async fn throughput(name: &str, cfg: StoreConfig) {
    let store = store::open(&cfg).await.unwrap_or_else(|e| panic!("{name}: {e}"));
    for (tasks, total) in [(1, 5_000), (64, 50_000)] {
        let r = refresh(&store, tasks, total, |f| format!("user{}", f.session)).await;
        let o = ott(&store, tasks, total).await;
        println!("{name:<38} | {tasks:>3} tasks | refresh {r:>8.0}/s | ott issue+verify {o:>8.0}/s");
    }
}

fn redis_cfg(lines: impl FnOnce(&mut StoreConfig)) -> StoreConfig {
    let mut cfg = StoreConfig { kind: "redis".into(), key_prefix: "bo-bench:".into(), ..Default::default() };
    lines(&mut cfg);
    cfg
}

/// Logs in every 20 ms after killing the master: the time to the first 200 and to the first run
/// of ten 200s in a row (on a cluster a login may land on slots the dead master never served).
async fn kill_to_login(name: &str, store_lines: String, kill: impl AsyncFnOnce() -> u16) {
    let gw = Gateway::start(Setup {
        store: format!("kind = \"redis\"\n{store_lines}key_prefix = \"bo-bench:\"\n"),
        ..Default::default()
    })
    .await;
    for _ in 0..20 {
        gw.login(TRADER).await;
    }
    let old = kill().await;
    let killed = Instant::now();
    let (mut first, mut streak, mut failed) = (None, 0, 0);
    while streak < 10 && killed.elapsed() < Duration::from_secs(30) {
        if gw.try_login(TRADER.0, TRADER.1).await.status() == 200 {
            first.get_or_insert(killed.elapsed());
            streak += 1;
        } else {
            streak = 0;
            failed += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{name:<38} | master {old} killed | first login {:?} | ten in a row {:?} | {failed} failed",
        first.unwrap_or_default(),
        killed.elapsed()
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let Some(single) = Single::start().await else { return };
        throughput("single server", redis_cfg(|c| c.url = single.server.url())).await;
        drop(single);

        let cluster = Cluster::start(0).await.unwrap();
        throughput("cluster, 3 masters", redis_cfg(|c| c.cluster = cluster.addrs())).await;
        drop(cluster);

        let set = SentinelSet::start(1).await.unwrap();
        let master = set.master_port().await.unwrap();
        throughput(
            "single master + 1 replica, acks 1",
            redis_cfg(|c| {
                c.url = format!("redis://127.0.0.1:{master}");
                c.min_replica_acks = 1;
            }),
        )
        .await;
        drop(set);

        let cluster = Cluster::start(1).await.unwrap();
        throughput(
            "cluster, 3 masters + replicas, acks 1",
            redis_cfg(|c| {
                c.cluster = cluster.addrs();
                c.min_replica_acks = 1;
            }),
        )
        .await;
        drop(cluster);

        for round in 1..=3 {
            let mut set = SentinelSet::start(1).await.unwrap();
            let lines = format!("sentinels = {}\nmaster_name = \"{MASTER_NAME}\"\n", set.sentinels_toml());
            kill_to_login(&format!("sentinel, round {round}"), lines, async || set.kill_master().await).await;

            let mut cluster = Cluster::start(1).await.unwrap();
            let lines = format!("cluster = {}\n", cluster.addrs_toml());
            kill_to_login(&format!("cluster, round {round}"), lines, async || {
                // The master holding the most keys (the logins' sessions).
                let mut busiest = (0, -1);
                for port in cluster.master_ports().await {
                    let keys: i64 = query(port, &["DBSIZE"]).await.unwrap_or(0);
                    if keys > busiest.1 {
                        busiest = (port, keys);
                    }
                }
                cluster.node(busiest.0).kill();
                busiest.0
            })
            .await;
        }
    });
}
