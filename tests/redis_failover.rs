//! Issue 17 item 4: the Redis master dies (SIGKILL) under a load of logins, refreshes and one-time
//! token verifications spread over two gateway replicas, and Redis fails over by itself (Sentinel
//! promotes a replica; a Cluster promotes the dead master's replica).
//!
//! Always: no 5xx other than 503 `store.unavailable`, no request hangs past [`HANG`], tokens
//! already verified keep being served by both replicas throughout, and logins, refreshes and OTTs
//! work again on both replicas without restarting them. With `min_replica_acks = 1` also: no
//! refresh token that was answered as rotated ever rotates to a different successor (before or
//! after the failover), and no OTT that verified once verifies again.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::redis_procs::{self, Cluster, MASTER_NAME, SentinelSet};
use support::{Gateway, Setup, TRADER, route, upstream};
use tokio::sync::Mutex;

/// Longest any request may take. A store call is bounded by 1.5 s (`OP_TIMEOUT`) and a login
/// makes a few of them; the rest is slack for a shared 2-core machine running a debug build.
const HANG: Duration = Duration::from_secs(10);
/// Load before the kill, so there are spent tokens and used OTTs for the failover to lose.
const WARM_UP: Duration = Duration::from_secs(2);
/// Load kept up after the first login that succeeds after the kill.
const AFTER_RECOVERY: Duration = Duration::from_secs(2);
/// The load stops by itself this long after the kill, recovered or not.
const LOAD_LIMIT: Duration = Duration::from_secs(25);
const WORKERS: usize = 4;
/// How long the master runs without its replicas before it dies: longer than the store's `WAIT`
/// (500 ms), so with `min_replica_acks = 1` the writes of that time are refused, and with 0 they
/// are answered and then lost.
const GAP: Duration = Duration::from_millis(800);

/// One failover at a time: each starts up to ten processes on a shared 2-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The Redis deployment under the gateways.
enum Deployment {
    Sentinel(SentinelSet),
    Cluster(Cluster),
}

impl Deployment {
    fn store_lines(&self) -> String {
        match self {
            Self::Sentinel(s) => {
                format!("sentinels = {}\nmaster_name = \"{MASTER_NAME}\"\n", s.sentinels_toml())
            }
            Self::Cluster(c) => format!("cluster = {}\n", c.addrs_toml()),
        }
    }

    /// SIGKILLs the master that matters (Sentinel: the master; Cluster: the master holding the
    /// most keys, i.e. most of the sessions and OTTs under load) after [`GAP`] with its replicas
    /// cut off, so that writes it alone holds die with it; returns its port.
    async fn kill_master(&mut self) -> u16 {
        let (master, replicas) = match self {
            Self::Sentinel(s) => {
                let master = s.master_port().await.expect("no sentinel answers");
                (master, s.servers.iter().map(|p| p.port).filter(|p| *p != master).collect::<Vec<_>>())
            }
            Self::Cluster(c) => {
                let mut busiest = (0, -1);
                for port in c.master_ports().await {
                    let keys: i64 = redis_procs::query(port, &["DBSIZE"]).await.unwrap_or(0);
                    if keys > busiest.1 {
                        busiest = (port, keys);
                    }
                }
                (busiest.0, c.replicas_of(busiest.0).await)
            }
        };
        redis_procs::cut_off(master, &replicas).await;
        tokio::time::sleep(GAP).await;
        match self {
            Self::Sentinel(s) => s.server(master).kill(),
            Self::Cluster(c) => c.node(master).kill(),
        }
        redis_procs::reconnect(&replicas).await;
        master
    }

    /// Waits until Redis has failed over from `old`; returns the new master's port.
    async fn wait_failed_over(&self, old: u16) -> u16 {
        match self {
            Self::Sentinel(s) => s.wait_promoted(old).await,
            Self::Cluster(c) => c.wait_failover(old).await,
        }
    }

    fn log_dir(&self) -> std::path::PathBuf {
        match self {
            Self::Sentinel(s) => s.dir.path().to_path_buf(),
            Self::Cluster(c) => c.dir.path().to_path_buf(),
        }
    }
}

/// A gateway replica as the load sees it.
#[derive(Clone)]
struct Replica {
    name: &'static str,
    client: reqwest::Client,
    base: String,
}

impl Replica {
    fn of(name: &'static str, gw: &Gateway) -> Self {
        Self { name, client: gw.client.clone(), base: format!("https://{}", gw.https) }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// An answer: status and JSON body (`Null` when there is none).
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["errors"][0].as_str().unwrap_or("")
    }

    fn s(&self, key: &str) -> String {
        self.body[key].as_str().unwrap_or_default().to_string()
    }
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    /// (operation, status) → count.
    answers: BTreeMap<(&'static str, u16), usize>,
    /// Everything that breaks an availability promise; the test fails if not empty.
    broken: Vec<String>,
    /// State the failover lost (a spent refresh token or a used OTT accepted again): the test
    /// fails if not empty with `min_replica_acks = 1`; with 0 it is only reported.
    lost: Vec<String>,
    /// Spent refresh token → the successor it was answered with.
    successor: HashMap<String, String>,
    /// OTTs that verified (valid) once.
    used_otts: Vec<String>,
    /// First verifications of an OTT answered 200 but `valid: false`: its issuance was lost
    /// (allowed: nothing was spent).
    lost_otts: usize,
    first_login_after_kill: Option<Duration>,
    slowest: Duration,
}

struct Load {
    replicas: [Replica; 2],
    tally: Mutex<Tally>,
    stop: AtomicBool,
    killed_at: Mutex<Option<Instant>>,
}

impl Load {
    async fn broken(&self, what: String) {
        eprintln!("BROKEN: {what}");
        self.tally.lock().await.broken.push(what);
    }

    async fn lost(&self, what: String) {
        eprintln!("LOST: {what}");
        self.tally.lock().await.lost.push(what);
    }

    /// Sends `req` bounded by [`HANG`]; records the status. `None`: it hung or failed to send
    /// (both recorded as broken).
    async fn send(&self, op: &'static str, on: &Replica, req: reqwest::RequestBuilder) -> Option<Answer> {
        let t = Instant::now();
        let sent = tokio::time::timeout(HANG, async {
            let r = req.send().await?;
            let status = r.status().as_u16();
            let body = r.json::<Value>().await.unwrap_or(Value::Null);
            Ok::<_, reqwest::Error>(Answer { status, body })
        })
        .await;
        let took = t.elapsed();
        let answer = match sent {
            Err(_) => {
                self.broken(format!("{op} on {} hung past {HANG:?}", on.name)).await;
                return None;
            }
            Ok(Err(e)) => {
                self.broken(format!("{op} on {}: {e}", on.name)).await;
                return None;
            }
            Ok(Ok(a)) => a,
        };
        {
            let mut t = self.tally.lock().await;
            *t.answers.entry((op, answer.status)).or_default() += 1;
            t.slowest = t.slowest.max(took);
        }
        if answer.status >= 500 && (answer.status, answer.code()) != (503, "store.unavailable") {
            self.broken(format!("{op} on {}: {} {}", on.name, answer.status, answer.body)).await;
        }
        Some(answer)
    }

    async fn login(&self, on: &Replica) -> Option<(String, String)> {
        let body = serde_json::json!({"login": TRADER.0, "password": TRADER.1});
        let a = self.send("login", on, on.client.post(on.url("/auth/token")).json(&body)).await?;
        match a.status {
            200 => {
                if let Some(at) = *self.killed_at.lock().await {
                    let mut t = self.tally.lock().await;
                    t.first_login_after_kill.get_or_insert(at.elapsed());
                }
                Some((a.s("accessToken"), a.s("refreshToken")))
            }
            503 => None,
            _ => {
                self.broken(format!("login on {}: {} {}", on.name, a.status, a.body)).await;
                None
            }
        }
    }

    /// Refreshes `rt`; the new pair, or `Keep` (503: try the same token again later) or `Lost`
    /// (401: the session is gone, which the failover must not cause; recorded as lost).
    async fn refresh(&self, on: &Replica, rt: &str) -> Refreshed {
        let req = on.client.get(on.url("/auth/token/refresh")).header("token", rt);
        let Some(a) = self.send("refresh", on, req).await else { return Refreshed::Keep };
        match a.status {
            200 => {
                let next = a.s("refreshToken");
                let mut t = self.tally.lock().await;
                match t.successor.get(rt) {
                    Some(first) if *first != next => {
                        drop(t);
                        self.lost(format!("a spent refresh token rotated again on {}", on.name)).await;
                    }
                    Some(_) => {}
                    None => {
                        t.successor.insert(rt.to_string(), next.clone());
                    }
                }
                Refreshed::Pair(a.s("accessToken"), next)
            }
            503 => Refreshed::Keep,
            // The worker's current token, answered by a 200 earlier: with the grace longer than
            // the test, only a lost write (the login or rotation that issued it) refuses it.
            401 => {
                self.lost(format!("a current refresh token refused on {}: {}", on.name, a.code())).await;
                Refreshed::Lost
            }
            _ => {
                self.broken(format!("refresh on {}: {} {}", on.name, a.status, a.body)).await;
                Refreshed::Lost
            }
        }
    }

    /// Issues an OTT on `on` and verifies it on `other`, then once more on `on`. `false`: the
    /// access token no longer works (its session was ended).
    /// Verifies `pending` (the OTT issued at the worker's previous turn, so that some are issued
    /// before the kill and used after) on `other` and once more on `on`, then issues the next on
    /// `on`. `false`: the access token no longer works (its session was ended).
    async fn ott(&self, on: &Replica, other: &Replica, access: &str, pending: &mut Option<String>) -> bool {
        if let Some(ott) = pending.take() {
            self.verify_twice(&ott, [other, on]).await;
        }
        let req = on.client.post(on.url("/external/token")).bearer_auth(access);
        let Some(a) = self.send("ott issue", on, req).await else { return true };
        match a.status {
            200 => *pending = Some(a.s("token")),
            401 => return false,
            503 => {}
            _ => self.broken(format!("ott issue on {}: {} {}", on.name, a.status, a.body)).await,
        }
        true
    }

    /// Verifies `ott` on each replica in turn: valid at most once.
    async fn verify_twice(&self, ott: &str, on: [&Replica; 2]) {
        let mut verified = false;
        for (i, r) in on.into_iter().enumerate() {
            let req = r.client.post(r.url("/external/token/verify")).json(&serde_json::json!({"token": ott}));
            let Some(v) = self.send("ott verify", r, req).await else { continue };
            match (v.status, v.body["valid"].as_bool()) {
                (200, Some(true)) if verified => {
                    self.lost(format!("an OTT verified twice (on {})", r.name)).await
                }
                (200, Some(true)) => {
                    verified = true;
                    self.tally.lock().await.used_otts.push(ott.to_string());
                }
                (200, Some(false)) if i == 0 => self.tally.lock().await.lost_otts += 1,
                (200, Some(false)) | (503, _) => {}
                _ => self.broken(format!("ott verify on {}: {} {}", r.name, v.status, v.body)).await,
            }
        }
    }

    async fn call(&self, on: &Replica, access: &str) -> Option<u16> {
        let req = on.client.get(on.url("/api/x")).bearer_auth(access);
        Some(self.send("api", on, req).await?.status)
    }
}

enum Refreshed {
    Pair(String, String),
    Keep,
    Lost,
}

/// One client: logs in, then refreshes, verifies OTTs and calls the API in turn, on alternating
/// replicas, and logs in afresh every few rounds, until told to stop.
async fn worker(load: Arc<Load>, w: usize) {
    let mut session: Option<(String, String)> = None;
    let mut pending = None;
    let mut i = w;
    while !load.stop.load(Ordering::Relaxed) {
        i += 1;
        let (on, other) = (&load.replicas[i % 2], &load.replicas[(i + 1) % 2]);
        match &session {
            // A new session now and then (the old one kept if the login fails).
            Some(_) if i % 10 == 0 => {
                if let Some(fresh) = load.login(on).await {
                    session = Some(fresh);
                }
            }
            None => session = load.login(on).await,
            Some((access, rt)) => match i % 3 {
                0 => match load.refresh(on, rt).await {
                    Refreshed::Pair(a, r) => session = Some((a, r)),
                    Refreshed::Keep => {}
                    Refreshed::Lost => session = None,
                },
                1 => {
                    if !load.ott(on, other, access, &mut pending).await {
                        session = None;
                    }
                }
                _ => match load.call(on, access).await {
                    Some(200) | None => {}
                    Some(401) => session = None,
                    Some(s) => load.broken(format!("api call on {}: {s}", on.name)).await,
                },
            },
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Tokens both replicas verified before the kill, called on both until told to stop: every call
/// must be 200, whatever Redis is doing.
async fn cached_caller(load: Arc<Load>, tokens: Vec<String>) -> usize {
    let mut calls = 0;
    while !load.stop.load(Ordering::Relaxed) {
        for t in &tokens {
            for r in &load.replicas {
                match load.call(r, t).await {
                    Some(200) | None => calls += 1,
                    Some(s) => {
                        load.broken(format!("a cached token got {s} on {} during the failover", r.name)).await
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    calls
}

/// Retries `what` on `on` until it answers 200 or `limit` passes.
async fn until_ok(
    load: &Load,
    op: &'static str,
    on: &Replica,
    limit: Duration,
    what: impl Fn() -> reqwest::RequestBuilder,
) -> Answer {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(a) = load.send(op, on, what()).await {
            if a.status == 200 || Instant::now() > deadline {
                return a;
            }
        }
        assert!(Instant::now() < deadline, "{op} on {} never succeeded again", on.name);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An access token from a login, once the store takes writes (503 before: at most 20 s).
async fn first_access_token(gw: &Gateway) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = gw.try_login(TRADER.0, TRADER.1).await;
        let status = r.status().as_u16();
        if status == 200 {
            let v: Value = r.json().await.unwrap();
            return v["accessToken"].as_str().unwrap().to_string();
        }
        assert_eq!(status, 503, "a login before the failover");
        assert!(Instant::now() < deadline, "the store did not take writes within 20 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn failover_under_load(mut redis: Deployment, acks: u32) {
    let label = match &redis {
        Deployment::Sentinel(_) => "sentinel",
        Deployment::Cluster(_) => "cluster",
    };
    let up = upstream::start("bo").await;
    let keys = tempfile::tempdir().unwrap();
    let setup = Setup {
        store: format!(
            "kind = \"redis\"\n{}key_prefix = \"{}\"\nmin_replica_acks = {acks}\n",
            redis.store_lines(),
            support::redis::unique_prefix()
        ),
        key_dir: Some(keys.path().to_path_buf()),
        // A grace longer than the test: a client retrying after a 503 is never taken for a
        // thief, so a refused current token can only mean a lost write.
        tokens: "refresh_reuse_grace = \"5m\"\n".into(),
        // A login whose attempt was counted but whose give-back failed in the outage counts as a
        // failure (auth::login::give_back); at the default 5 a client retrying through the
        // failover is locked out for the window. Out of this test's scope: limits out of reach.
        login_limits: "failures_per_login = 100000\nfailures_per_address = 100000\n".into(),
        routes: route("api", "/api", &up.url(), ""),
        ..Default::default()
    };
    // One after the other: the first creates the shared signing key, the second loads it.
    let a = Gateway::start(setup.clone()).await;
    let b = Gateway::start(setup).await;
    let load = Arc::new(Load {
        replicas: [Replica::of("A", &a), Replica::of("B", &b)],
        tally: Mutex::default(),
        stop: AtomicBool::new(false),
        killed_at: Mutex::new(None),
    });

    // Sessions nobody refreshes or ends, their access tokens verified by both replicas. The
    // first logins wait until the deployment acknowledges writes: a replica that has synced
    // may take a moment more to be counted by `WAIT` (503 `store.unavailable` until then).
    let mut cached = Vec::new();
    for _ in 0..2 {
        cached.push(first_access_token(&a).await);
    }
    for t in &cached {
        for r in &load.replicas {
            assert_eq!(load.call(r, t).await, Some(200), "a fresh token on {}", r.name);
        }
    }

    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let load = load.clone();
        tasks.spawn(async move {
            worker(load, w).await;
            0
        });
    }
    tasks.spawn(cached_caller(load.clone(), cached));

    tokio::time::sleep(WARM_UP).await;
    let spent_before: Vec<String> = load.tally.lock().await.successor.keys().cloned().collect();
    let otts_before = load.tally.lock().await.used_otts.len();
    let old = redis.kill_master().await;
    let killed = Instant::now();
    *load.killed_at.lock().await = Some(killed);
    let new = redis.wait_failed_over(old).await;
    let promoted = killed.elapsed();
    eprintln!("{label} acks={acks}: master {old} killed, {new} promoted after {promoted:?}");

    // Until a login succeeds after the kill (plus a little), or the limit.
    loop {
        let recovered = load.tally.lock().await.first_login_after_kill;
        match recovered {
            Some(t) if killed.elapsed() > t + AFTER_RECOVERY => break,
            _ if killed.elapsed() > LOAD_LIMIT => break,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    load.stop.store(true, Ordering::Relaxed);
    let cached_calls: usize = tasks.join_all().await.into_iter().sum();

    let t = load.tally.lock().await;
    eprintln!(
        "{label} acks={acks}: kill → first successful login {:?}; answers {:?}; slowest {:?}; \
         {} spent refresh tokens ({} before the kill), {} used OTTs ({otts_before} before), {} \
         OTT issuances lost, {cached_calls} cached-token calls; logs in {}",
        t.first_login_after_kill,
        t.answers,
        t.slowest,
        t.successor.len(),
        spent_before.len(),
        t.used_otts.len(),
        t.lost_otts,
        redis.log_dir().display()
    );
    assert!(t.broken.is_empty(), "{label} acks={acks}: {} broken promises: {:#?}", t.broken.len(), t.broken);
    assert!(t.first_login_after_kill.is_some(), "no login succeeded within {LOAD_LIMIT:?} of the kill");
    assert!(
        !spent_before.is_empty() && otts_before > 0,
        "the warm-up spent nothing: the test proves nothing"
    );
    assert!(cached_calls > 0);
    let (successor, used_otts) = (t.successor.clone(), t.used_otts.clone());
    drop(t);

    // Both replicas serve logins, refreshes and OTTs again, without a restart.
    for r in &load.replicas {
        let body = serde_json::json!({"login": TRADER.0, "password": TRADER.1});
        let pair = until_ok(&load, "login", r, Duration::from_secs(10), || {
            r.client.post(r.url("/auth/token")).json(&body)
        })
        .await;
        let rt = pair.s("refreshToken");
        let next = until_ok(&load, "refresh", r, Duration::from_secs(5), || {
            r.client.get(r.url("/auth/token/refresh")).header("token", &rt)
        })
        .await;
        assert_ne!(next.s("refreshToken"), rt);
        let access = next.s("accessToken");
        let ott = until_ok(&load, "ott issue", r, Duration::from_secs(5), || {
            r.client.post(r.url("/external/token")).bearer_auth(&access)
        })
        .await
        .s("token");
        let verify =
            || r.client.post(r.url("/external/token/verify")).json(&serde_json::json!({"token": ott}));
        let first = load.send("ott verify", r, verify()).await.expect("answered");
        assert_eq!((first.status, first.body["valid"].as_bool()), (200, Some(true)), "{}", first.body);
        let again = load.send("ott verify", r, verify()).await.expect("answered");
        assert_eq!((again.status, again.body["valid"].as_bool()), (200, Some(false)), "{}", again.body);
    }

    // No rotation answered 200 was lost: a spent token is refused, or (inside the reuse grace,
    // its successor unspent) answered with the very successor it got before. No used OTT
    // verifies again.
    for (i, (rt, first)) in successor.iter().enumerate() {
        let r = &load.replicas[i % 2];
        let req = r.client.get(r.url("/auth/token/refresh")).header("token", rt);
        let a = load.send("spent retry", r, req).await.expect("answered");
        match a.status {
            401 => {}
            200 if a.s("refreshToken") == *first => {}
            200 => load.lost("a spent refresh token rotated again after the failover".into()).await,
            s => {
                load.broken(format!("a spent refresh token retried after the failover: {s} {}", a.body)).await
            }
        }
    }
    for (i, ott) in used_otts.iter().enumerate() {
        let r = &load.replicas[i % 2];
        let req = r.client.post(r.url("/external/token/verify")).json(&serde_json::json!({"token": ott}));
        let v = load.send("used ott retry", r, req).await.expect("answered");
        match (v.status, v.body["valid"].as_bool()) {
            (200, Some(false)) => {}
            (200, Some(true)) => load.lost("a used OTT verified again after the failover".into()).await,
            _ => load.broken(format!("a used OTT retried after the failover: {} {}", v.status, v.body)).await,
        }
    }
    let t = load.tally.lock().await;
    eprintln!(
        "{label} acks={acks}: {} spent refresh tokens and {} used OTTs retried; {} came back",
        successor.len(),
        used_otts.len(),
        t.lost.len()
    );
    assert!(t.broken.is_empty(), "{label} acks={acks}: {:#?}", t.broken);
    if acks > 0 {
        assert!(t.lost.is_empty(), "{label} acks={acks}: the failover lost state: {:#?}", t.lost);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_failover_under_load_with_acknowledged_writes_loses_nothing() {
    let _one = SERIAL.lock().await;
    // Two replicas: after the failover the promoted one still has a replica to acknowledge.
    let Some(set) = SentinelSet::start(2).await else { return };
    failover_under_load(Deployment::Sentinel(set), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_failover_under_load_without_acks_stays_available() {
    let _one = SERIAL.lock().await;
    let Some(set) = SentinelSet::start(1).await else { return };
    failover_under_load(Deployment::Sentinel(set), 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_failover_under_load_with_acknowledged_writes_loses_nothing() {
    let _one = SERIAL.lock().await;
    // Two replicas per master, for the same reason as above.
    let Some(cluster) = Cluster::start(2).await else { return };
    failover_under_load(Deployment::Cluster(cluster), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_failover_under_load_without_acks_stays_available() {
    let _one = SERIAL.lock().await;
    let Some(cluster) = Cluster::start(1).await else { return };
    failover_under_load(Deployment::Cluster(cluster), 0).await;
}
