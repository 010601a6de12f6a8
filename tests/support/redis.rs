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
    /// Server arguments beyond port and persistence (TLS files).
    tls: Vec<String>,
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
        let mut r = Self { port, tls: Vec::new(), child: None };
        r.restart().await;
        Some(r)
    }

    /// A TLS-only server (`rediss://localhost:PORT`) whose certificate is signed by a fresh CA;
    /// returns it and the CA's PEM file (written into `dir`).
    pub async fn start_tls(dir: &std::path::Path) -> Option<(Self, std::path::PathBuf)> {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
        let mut r = Self::start().await?;
        r.stop();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(vec![]).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
        let cert = params.signed_by(&key, &issuer).unwrap();
        let (ca_file, cert_file, key_file) =
            (dir.join("redis-ca.pem"), dir.join("redis.crt"), dir.join("redis.key"));
        std::fs::write(&ca_file, ca.pem()).unwrap();
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let path = |p: &std::path::Path| p.display().to_string();
        r.tls = vec![
            "--tls-port".into(),
            r.port.to_string(),
            "--tls-cert-file".into(),
            path(&cert_file),
            "--tls-key-file".into(),
            path(&key_file),
            "--tls-ca-cert-file".into(),
            path(&ca_file),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        r.restart().await;
        Some((r, ca_file))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and waits until it answers.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let port = if self.tls.is_empty() { self.port.to_string() } else { "0".into() };
        let child = Command::new(redis_server())
            .args(["--port", &port, "--save", "", "--appendonly", "no"])
            .args(&self.tls)
            .args(["--bind", "127.0.0.1", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server ({e}); apt-get install redis-server"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers().await {
            assert!(Instant::now() < deadline, "redis-server on port {} never answered", self.port);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn answers(&self) -> bool {
        if self.tls.is_empty() {
            ping(&self.url()).await
        } else {
            // Without trusting the test CA in-process, an accepted connection is the best sign.
            tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok()
        }
    }

    /// SIGSTOP / SIGCONT: a Redis that keeps its connections open but never answers.
    pub fn pause(&self, paused: bool) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let sig = if paused { "-STOP" } else { "-CONT" };
        assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
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
