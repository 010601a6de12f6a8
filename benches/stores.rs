//! Store throughput per backend and the memory store's cost per live session: a small load
//! program rather than criterion, because throughput under concurrency (group commit in the file
//! store, pipelining over Redis connections) is the figure that matters, not one call's latency.
//!
//! `cargo bench --bench stores` (Redis at `BO_GATEWAY_TEST_REDIS`, default
//! `redis://127.0.0.1:6379`; skipped when it does not answer). Figures: `benches/README.md`.

/// The tests' Redis helpers (shared URL, key cleanup without FLUSH).
#[allow(dead_code)]
#[path = "../tests/support/redis.rs"]
mod redis_support;

#[path = "common/sessions.rs"]
mod sessions;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bo_gateway::auth::refresh::RefreshToken;
use bo_gateway::auth::tokens::{random_token, token_hash};
use bo_gateway::config::StoreConfig;
use bo_gateway::store::{self, MemoryStore, Store, TokenHash};
use sessions::{NOW, new_session, refresh};

/// Counts live heap bytes, so bytes per session is measured rather than estimated.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// `total` OTTs issued beforehand, then verified (consumed) by `tasks` concurrent tasks.
async fn ott_verify(store: &Arc<dyn Store>, tasks: usize, total: usize) -> f64 {
    let hashes: Arc<Vec<TokenHash>> = Arc::new((0..total).map(|_| token_hash(&random_token(32))).collect());
    for h in hashes.iter() {
        store.put_ott(h, "alice", NOW + 30).await.unwrap();
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (store, hashes, next) = (store.clone(), hashes.clone(), next.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(h) = hashes.get(i) else { return };
                assert!(store.consume_ott(h, NOW).await.unwrap().is_some());
            }
        });
    }
    set.join_all().await;
    total as f64 / started.elapsed().as_secs_f64()
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|p| p.parse::<usize>().ok()).unwrap_or(0) * 4096
}

async fn bytes_per_session(n: usize) {
    let store = MemoryStore::new();
    let (heap0, rss0) = (LIVE.load(Ordering::Relaxed), rss_bytes());
    for _ in 0..n {
        store
            .create_session(new_session(&RefreshToken::first(&random_token(16)), "alice".into()))
            .await
            .unwrap();
    }
    let (heap1, rss1) = (LIVE.load(Ordering::Relaxed), rss_bytes());
    assert_eq!(store.session_count(), n);
    println!(
        "memory store, {n} live sessions: {:.0} heap bytes/session, {:.0} RSS bytes/session",
        (heap1 - heap0) as f64 / n as f64,
        rss1.saturating_sub(rss0) as f64 / n as f64
    );
}

async fn redis_store() -> Option<(Arc<dyn Store>, String, String)> {
    let url = redis_support::shared_url();
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).ok()?;
    let prefix = format!("bo-gw-bench:{}:", u64::from_le_bytes(b));
    let cfg = StoreConfig {
        kind: "redis".into(),
        url: url.clone(),
        key_prefix: prefix.clone(),
        ..Default::default()
    };
    let store = store::open(&cfg).await.ok()?;
    if store.ping().await.is_err() {
        println!("redis: no Redis at {url}; skipped");
        return None;
    }
    Some((store, url, prefix))
}

async fn run(name: &str, store: &Arc<dyn Store>, sizes: [(usize, usize); 2]) {
    for (tasks, total) in sizes {
        let r = refresh(store, tasks, total, |_| "alice".into()).await;
        let o = ott_verify(store, tasks, total).await;
        println!("{name:>6} | {tasks:>3} tasks | refresh {r:>9.0}/s | ott verify {o:>9.0}/s");
    }
}

fn main() {
    // `cargo bench` passes `--bench`; anything else names a filter we do not support.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let memory: Arc<dyn Store> = Arc::new(MemoryStore::new());
        run("memory", &memory, [(1, 200_000), (64, 400_000)]).await;
        let dir = tempfile::tempdir().unwrap();
        let cfg =
            StoreConfig { kind: "file".into(), path: dir.path().join("bench.redb"), ..Default::default() };
        let file = store::open(&cfg).await.unwrap();
        run("file", &file, [(1, 1_000), (64, 20_000)]).await;
        if let Some((redis, url, prefix)) = redis_store().await {
            run("redis", &redis, [(1, 10_000), (64, 100_000)]).await;
            redis_support::cleanup(&url, &prefix).await;
        }
        bytes_per_session(1_000_000).await;
    });
}
