//! Redis processes of a test's own (never the shared server): a Sentinel-managed master with
//! replicas, and a Redis Cluster made with `redis-cli --cluster create`. Every process listens on
//! a free loopback port, keeps nothing on disk beyond its folder, and is killed on drop.
//!
//! Without `redis-server`/`redis-cli` the constructors return `None` with a SKIPPED line, unless
//! `BO_GATEWAY_REQUIRE_REDIS_PROCS` is set (as `.ci/run` does): then they panic, so CI never
//! passes by skipping.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Sentinel's master name in the generated configuration.
pub const MASTER_NAME: &str = "bo";
/// How long a set-up or failover may take before the harness gives up.
const SETTLE: Duration = Duration::from_secs(30);

/// True when `redis-server` and `redis-cli` can run; otherwise a SKIPPED hint (or a panic when
/// `BO_GATEWAY_REQUIRE_REDIS_PROCS` is set).
pub fn installed() -> bool {
    let runs = |bin: &str| Command::new(bin).arg("--version").output().is_ok_and(|o| o.status.success());
    if runs(&server_bin()) && runs(&cli_bin()) {
        return true;
    }
    if std::env::var_os("BO_GATEWAY_REQUIRE_REDIS_PROCS").is_some() {
        panic!("redis-server/redis-cli not installed but BO_GATEWAY_REQUIRE_REDIS_PROCS is set");
    }
    eprintln!(
        "SKIPPED: redis-server or redis-cli not installed (apt-get install redis-server); \
         set BO_GATEWAY_REQUIRE_REDIS_PROCS=1 to make this a failure"
    );
    false
}

fn which(name: &str) -> String {
    let usr = format!("/usr/bin/{name}");
    if Path::new(&usr).exists() { usr } else { name.to_string() }
}

fn server_bin() -> String {
    which("redis-server")
}

fn cli_bin() -> String {
    which("redis-cli")
}

/// A port nobody listens on now (bound and released; a race with another process is possible
/// but the harness notices a server that never answers).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One `redis-server` process (a data node or a sentinel).
pub struct Proc {
    pub port: u16,
    args: Vec<String>,
    child: Option<Child>,
}

impl Proc {
    fn spawn(port: u16, args: Vec<String>) -> Self {
        let mut p = Self { port, args, child: None };
        p.start();
        p
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "redis on port {} already running", self.port);
        let child = Command::new(server_bin())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server ({e})"));
        self.child = Some(child);
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL: the process gets no chance to hand anything over.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the process again with its first arguments (same port, same folder: a cluster node
    /// rejoins with its nodes file, a sentinel-managed one is turned into a replica).
    pub async fn restart(&mut self) {
        self.start();
        wait_for(&format!("redis on port {} to answer", self.port), || async { self.ping().await }).await;
    }

    async fn ping(&self) -> bool {
        query::<String>(self.port, &["PING"]).await.is_some()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One command to the node on `port`, bounded by a second; `None` on any failure.
pub async fn query<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> Option<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let fut = async {
        let mut c = client.get_multiplexed_async_connection().await.ok()?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async::<T>(&mut c).await.ok()
    };
    tokio::time::timeout(Duration::from_secs(1), fut).await.ok().flatten()
}

/// The `field:value` lines of an INFO section.
async fn info(port: u16, section: &str) -> Option<String> {
    query::<String>(port, &["INFO", section]).await
}

fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':')).map(str::trim)
}

/// Polls `ready` every 50 ms until it holds; panics after [`SETTLE`].
async fn wait_for<F, Fut>(what: &str, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + SETTLE;
    while !ready().await {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn data_args(port: u16, dir: &Path, extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        // A replica syncs at once (the default waits 5 s for more replicas to share one
        // transfer), so a test can kill its master right after set-up.
        "--repl-diskless-sync-delay",
        "0",
        "--daemonize",
        "no",
        "--dir",
        &dir.display().to_string(),
        "--logfile",
        &dir.join(format!("redis-{port}.log")).display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend_from_slice(extra);
    args
}

/// One standalone server, for comparisons with a cluster.
pub struct Single {
    pub dir: tempfile::TempDir,
    pub server: Proc,
}

impl Single {
    pub async fn start() -> Option<Self> {
        if !installed() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let server = Proc::spawn(port, data_args(port, dir.path(), &[]));
        wait_for("redis-server to answer", || server.ping()).await;
        Some(Self { dir, server })
    }
}

/// A master, `replicas` replicas of it and three sentinels (quorum 2) watching it under
/// [`MASTER_NAME`], tuned to fail over within a few seconds (down after 1 s).
pub struct SentinelSet {
    pub dir: tempfile::TempDir,
    /// The data nodes; the first was the master at start.
    pub servers: Vec<Proc>,
    pub sentinels: Vec<Proc>,
}

impl SentinelSet {
    pub async fn start(replicas: usize) -> Option<Self> {
        if !installed() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let master_port = free_port();
        let mut servers = vec![Proc::spawn(master_port, data_args(master_port, dir.path(), &[]))];
        for _ in 0..replicas {
            let port = free_port();
            let extra = ["--replicaof".to_string(), "127.0.0.1".into(), master_port.to_string()];
            servers.push(Proc::spawn(port, data_args(port, dir.path(), &extra)));
        }
        for s in &servers {
            wait_for("a data node to answer", || s.ping()).await;
        }
        for s in &servers[1..] {
            wait_for("a replica's link to its master", || async {
                info(s.port, "replication")
                    .await
                    .is_some_and(|i| info_field(&i, "master_link_status") == Some("up"))
            })
            .await;
        }
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let conf = dir.path().join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndaemonize no\nlogfile \"{log}\"\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 4000\n\
                     sentinel parallel-syncs {MASTER_NAME} 2\n",
                    log = dir.path().join(format!("sentinel-{i}.log")).display()
                ),
            )
            .unwrap();
            sentinels.push(Proc::spawn(port, vec![conf.display().to_string(), "--sentinel".into()]));
        }
        let set = Self { dir, servers, sentinels };
        // Ready when every sentinel knows the other two and every replica: only then can they
        // agree on a failover.
        for s in &set.sentinels {
            wait_for("sentinels to find each other and the replicas", || async {
                let Some(m) = query::<Vec<String>>(s.port, &["SENTINEL", "MASTER", MASTER_NAME]).await else {
                    return false;
                };
                let field = |k: &str| m.iter().position(|x| x == k).and_then(|i| m.get(i + 1)).cloned();
                field("num-other-sentinels").as_deref() == Some("2")
                    && field("num-slaves").and_then(|n| n.parse::<usize>().ok()) == Some(replicas)
            })
            .await;
        }
        Some(set)
    }

    /// `["127.0.0.1:PORT", ...]` of the sentinels, for `store.sentinels`.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels.iter().map(Proc::addr).collect()
    }

    /// The TOML array of the sentinels' addresses.
    pub fn sentinels_toml(&self) -> String {
        toml_list(&self.sentinel_addrs())
    }

    /// The master's port as the first sentinel that answers sees it.
    pub async fn master_port(&self) -> Option<u16> {
        for s in &self.sentinels {
            if let Some((_, port)) =
                query::<(String, String)>(s.port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME]).await
            {
                return port.parse().ok();
            }
        }
        None
    }

    /// The data node on `port`.
    pub fn server(&mut self, port: u16) -> &mut Proc {
        self.servers.iter_mut().find(|s| s.port == port).expect("no such data node")
    }

    /// SIGKILLs the current master; returns its port.
    pub async fn kill_master(&mut self) -> u16 {
        let port = self.master_port().await.expect("no sentinel answers");
        self.server(port).kill();
        port
    }

    /// Waits until the sentinels name a master other than `old` and that node says it is a
    /// master; returns its port.
    pub async fn wait_promoted(&self, old: u16) -> u16 {
        let deadline = Instant::now() + SETTLE;
        loop {
            if let Some(p) = self.master_port().await.filter(|p| *p != old) {
                if info(p, "replication").await.is_some_and(|i| info_field(&i, "role") == Some("master")) {
                    return p;
                }
            }
            assert!(Instant::now() < deadline, "no sentinel failover within {SETTLE:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the master on `port` has at least `n` replicas whose link is up.
    pub async fn wait_replicas(&self, port: u16, n: usize) {
        wait_for("replicas to attach to the new master", || async {
            info(port, "replication")
                .await
                .and_then(|i| info_field(&i, "connected_slaves").and_then(|c| c.parse::<usize>().ok()))
                .is_some_and(|c| c >= n)
        })
        .await;
    }
}

/// A Redis Cluster of three masters with `replicas` replicas each, node timeout 1 s.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Proc>,
    /// The masters right after creation.
    first_masters: Vec<u16>,
}

impl Cluster {
    pub async fn start(replicas: usize) -> Option<Self> {
        if !installed() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for _ in 0..3 * (1 + replicas) {
            let (port, bus) = (free_port(), free_port());
            let extra: Vec<String> = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &format!("nodes-{port}.conf"),
                "--cluster-node-timeout",
                "1000",
                "--cluster-port",
                &bus.to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            nodes.push(Proc::spawn(port, data_args(port, dir.path(), &extra)));
        }
        for n in &nodes {
            wait_for("a cluster node to answer", || n.ping()).await;
        }
        let addrs: Vec<String> = nodes.iter().map(Proc::addr).collect();
        let cli = cli_bin();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(cli)
                .args(["--cluster", "create"])
                .args(&addrs)
                .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cluster = Self { dir, nodes, first_masters: Vec::new() };
        cluster.wait_ok().await;
        // A replica that never finished its first sync cannot take over (its data counts as
        // too old), so wait for every replica's link.
        for n in &cluster.nodes {
            wait_for("cluster replicas to sync", || async {
                info(n.port, "replication").await.is_some_and(|i| {
                    info_field(&i, "role") == Some("master")
                        || info_field(&i, "master_link_status") == Some("up")
                })
            })
            .await;
        }
        cluster.first_masters = cluster.master_ports().await;
        assert_eq!(cluster.first_masters.len(), 3, "a new cluster without three masters");
        Some(cluster)
    }

    /// Waits until every running node says `cluster_state:ok` and sees all of its peers.
    pub async fn wait_ok(&self) {
        let total = self.nodes.len();
        for n in self.nodes.iter().filter(|n| n.is_running()) {
            wait_for("the cluster to be ok", || async {
                let ok = query::<String>(n.port, &["CLUSTER", "INFO"])
                    .await
                    .is_some_and(|i| info_field(&i, "cluster_state") == Some("ok"));
                let known =
                    query::<String>(n.port, &["CLUSTER", "NODES"]).await.map_or(0, |s| s.lines().count());
                ok && known == total
            })
            .await;
        }
    }

    /// Every node's address, for `store.cluster`.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(Proc::addr).collect()
    }

    /// The TOML array of every node's address.
    pub fn addrs_toml(&self) -> String {
        toml_list(&self.addrs())
    }

    /// The ports of the nodes that are masters owning slots now, as a running node sees it.
    pub async fn master_ports(&self) -> Vec<u16> {
        for n in self.nodes.iter().filter(|n| n.is_running()) {
            if let Some(text) = query::<String>(n.port, &["CLUSTER", "NODES"]).await {
                return text
                    .lines()
                    .filter(|l| {
                        let f: Vec<&str> = l.split(' ').collect();
                        f.len() > 8 && f[2].contains("master") && !f[2].contains("fail")
                    })
                    .filter_map(|l| l.split(' ').nth(1)?.split(['@', ':']).nth(1)?.parse().ok())
                    .collect();
            }
        }
        Vec::new()
    }

    /// The port of the master that serves `key` now.
    pub async fn master_of(&self, key: &str) -> u16 {
        let n = self.nodes.iter().find(|n| n.is_running()).expect("a running node");
        let slot: i64 = query(n.port, &["CLUSTER", "KEYSLOT", key]).await.expect("CLUSTER KEYSLOT");
        let slots: Vec<redis::Value> = query(n.port, &["CLUSTER", "SLOTS"]).await.expect("CLUSTER SLOTS");
        for range in slots {
            let redis::Value::Array(parts) = range else { continue };
            let (Some(redis::Value::Int(lo)), Some(redis::Value::Int(hi)), Some(redis::Value::Array(master))) =
                (parts.first(), parts.get(1), parts.get(2))
            else {
                continue;
            };
            if (*lo..=*hi).contains(&slot) {
                if let Some(redis::Value::Int(port)) = master.get(1) {
                    return *port as u16;
                }
            }
        }
        panic!("no master serves slot {slot}");
    }

    /// The ports of the replicas of the master on `port`.
    pub async fn replicas_of(&self, port: u16) -> Vec<u16> {
        let id: String = query(port, &["CLUSTER", "MYID"]).await.expect("CLUSTER MYID");
        let text: String = query(port, &["CLUSTER", "NODES"]).await.expect("CLUSTER NODES");
        text.lines()
            .filter(|l| l.split(' ').nth(3) == Some(id.as_str()))
            .filter_map(|l| l.split(' ').nth(1)?.split(['@', ':']).nth(1)?.parse().ok())
            .collect()
    }

    pub fn node(&mut self, port: u16) -> &mut Proc {
        self.nodes.iter_mut().find(|n| n.port == port).expect("no such node")
    }

    /// Waits until the cluster is ok again with three masters none of which is `old` (the dead
    /// master's replica took its slots); returns the port of the master `old`'s replica became.
    pub async fn wait_failover(&self, old: u16) -> u16 {
        let deadline = Instant::now() + SETTLE;
        loop {
            let port = self.nodes.iter().find(|n| n.is_running()).expect("a running node").port;
            let ok = query::<String>(port, &["CLUSTER", "INFO"])
                .await
                .is_some_and(|i| info_field(&i, "cluster_state") == Some("ok"));
            let masters = self.master_ports().await;
            if ok && masters.len() == 3 && !masters.contains(&old) {
                // The master that was a replica at the start.
                if let Some(new) = masters.iter().find(|p| !self.first_masters.contains(p)) {
                    return *new;
                }
            }
            if Instant::now() > deadline {
                let nodes = query::<String>(port, &["CLUSTER", "NODES"]).await.unwrap_or_default();
                panic!("no cluster failover within {SETTLE:?} (ok: {ok}, masters {masters:?}):\n{nodes}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Cuts `replicas` off their master on `master` and keeps them off (a wrong `masterauth` fails
/// their re-sync), so that from now on writes reach the master only: what a failover can lose.
pub async fn cut_off(master: u16, replicas: &[u16]) {
    for r in replicas {
        let _: String =
            query(*r, &["CONFIG", "SET", "masterauth", "not-the-password"]).await.expect("CONFIG SET");
    }
    let _: i64 = query(master, &["CLIENT", "KILL", "TYPE", "replica"]).await.expect("CLIENT KILL");
    for r in replicas {
        wait_for("a replica to lose its master", || async {
            info(*r, "replication")
                .await
                .is_some_and(|i| info_field(&i, "master_link_status") == Some("down"))
        })
        .await;
    }
}

/// Undoes [`cut_off`]: the replicas may sync with whichever master they are told to follow.
pub async fn reconnect(replicas: &[u16]) {
    for r in replicas {
        let _: Option<String> = query(*r, &["CONFIG", "SET", "masterauth", ""]).await;
    }
}

fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|a| format!("\"{a}\"")).collect();
    format!("[{}]", quoted.join(", "))
}
