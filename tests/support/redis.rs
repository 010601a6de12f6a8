//! Redis for tests: the machine's shared server (found at `BO_GATEWAY_TEST_REDIS`, default
//! `redis://127.0.0.1:6379`), used politely under a unique key prefix and never flushed, and
//! private `redis-server` processes for tests that stop and restart Redis.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn shared_url() -> String {
    std::env::var("BO_GATEWAY_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The shared Redis URL if it answers PING. Without one: a panic under CI (`CI=true`), where a
/// skipped Redis test would hide a missing service; otherwise a hint on stderr and `None`.
pub async fn shared() -> Option<String> {
    let url = shared_url();
    if ping(&url).await {
        return Some(url);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("no Redis at {url} (BO_GATEWAY_TEST_REDIS); .ci/run starts one, see README");
    }
    eprintln!(
        "SKIPPED: no Redis at {url}. Run one with `apt-get install redis-server && redis-server \
         --daemonize yes --save '' --appendonly no`, or set BO_GATEWAY_TEST_REDIS."
    );
    None
}

pub async fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else { return false };
    let fut = async {
        let mut c = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut c).await
    };
    matches!(tokio::time::timeout(Duration::from_secs(2), fut).await, Ok(Ok(_)))
}

/// A key prefix no other test (or run) uses.
pub fn unique_prefix() -> String {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    format!("bo-gw-test:{}:", u64::from_le_bytes(b))
}

/// Deletes every key under `prefix` (SCAN + DEL; never FLUSHDB on a shared server).
pub async fn cleanup(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else { return };
    let Ok(mut c) = client.get_multiplexed_async_connection().await else { return };
    let mut cursor: u64 = 0;
    loop {
        let Ok((next, keys)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(500)
            .query_async(&mut c)
            .await
        else {
            return;
        };
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys).query_async(&mut c).await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// A private `redis-server` on a free port, killed (by its PID) on drop.
pub struct OwnRedis {
    pub port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    /// `None` (with a hint) when redis-server is not installed and this is not CI.
    pub async fn start() -> Option<Self> {
        if Command::new(redis_server()).arg("--version").output().is_err() {
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!("redis-server not installed; .ci/run installs it");
            }
            eprintln!("SKIPPED: redis-server not installed (apt-get install redis-server)");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut r = Self { port, child: None };
        r.restart().await;
        Some(r)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and waits until it answers.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(redis_server())
            .args(["--port", &self.port.to_string(), "--save", "", "--appendonly", "no"])
            .args(["--bind", "127.0.0.1", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server ({e}); apt-get install redis-server"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ping(&self.url()).await {
            assert!(Instant::now() < deadline, "redis-server on port {} never answered", self.port);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn redis_server() -> &'static str {
    if std::path::Path::new("/usr/bin/redis-server").exists() {
        "/usr/bin/redis-server"
    } else {
        "redis-server"
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
