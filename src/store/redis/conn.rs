//! Connections to wherever the data lives ([`Topology`]): a pool of reconnecting connections to
//! one server, the same to the master Sentinel names (remade when Sentinel names another), or one
//! slot-routing Cluster connection. [`Nodes::send`] runs a pipeline on the master holding a key,
//! on one connection, so a `WAIT` appended to it counts exactly that connection's writes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use ::redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use ::redis::{Client, Cmd, ConnectionAddr, Pipeline, RedisFuture, RedisResult, Value};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::target::{Target, Topology};
use super::{CONNECT_TIMEOUT, RESPONSE_TIMEOUT};

/// Multiplexed connections to one server; calls are spread over them round robin.
const POOL_SIZE: usize = 4;
/// Connections for writes followed by `WAIT` (with `min_replica_acks` > 0): Redis holds a
/// connection's later commands while a `WAIT` on it waits, so these never carry anything else.
const WAITERS: usize = 16;
/// How often Sentinel is asked who the master is when nothing failed (a failover that no call
/// noticed, e.g. the old master still up but demoted).
const SENTINEL_POLL: Duration = Duration::from_secs(2);
/// How often while no master can be confirmed (failover in progress).
const SENTINEL_RETRY: Duration = Duration::from_millis(200);
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// One connection, whichever kind.
#[derive(Clone)]
pub(super) enum Conn {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Server(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Server(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Server(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500))
}

/// A pool on one server; connections are made on first use and remade after a failure.
pub(super) struct Pool {
    client: Client,
    conns: Vec<ConnectionManager>,
    /// [`WAITERS`] of them when writes are waited for, else none.
    waiters: Vec<ConnectionManager>,
    next: AtomicUsize,
}

impl Pool {
    fn new(client: Client, waited: bool) -> RedisResult<Self> {
        let make = |n: usize| {
            (0..n)
                .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), manager_config()))
                .collect::<Result<Vec<_>, _>>()
        };
        let (conns, waiters) = (make(POOL_SIZE)?, make(if waited { WAITERS } else { 0 })?);
        Ok(Self { client, conns, waiters, next: AtomicUsize::new(0) })
    }

    fn pick(&self, waited: bool) -> ConnectionManager {
        let list = if waited && !self.waiters.is_empty() { &self.waiters } else { &self.conns };
        list[self.next.fetch_add(1, Ordering::Relaxed) % list.len()].clone()
    }
}

pub(super) enum Nodes {
    Server(Box<Pool>),
    Sentinel(Arc<Sentinel>),
    Cluster {
        conn: ClusterConnection,
        waiters: Vec<ClusterConnection>,
        next: AtomicUsize,
        seeds: ClusterSeeds,
    },
}

impl Nodes {
    /// Builds the connections without waiting for Redis (a gateway starts unready while it is
    /// down); Sentinel's watcher runs until `stop`.
    pub(super) async fn open(target: &Target, stop: &CancellationToken) -> RedisResult<Self> {
        Ok(match &target.topology {
            Topology::Url(url) => {
                let mut client = Client::open(url.as_str())?;
                if let Some(p) = &target.password {
                    let info = client.get_connection_info().clone();
                    let settings = info.redis_settings().clone().set_password(p);
                    client = Client::open(info.set_redis_settings(settings))?;
                }
                Self::Server(Box::new(Pool::new(client, target.acks > 0)?))
            }
            Topology::Sentinel { sentinels, master } => {
                let addrs = sentinels.iter().map(|(h, p)| ConnectionAddr::Tcp(h.clone(), *p));
                let mut b = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)?;
                if let Some(p) = &target.password {
                    b = b.set_client_to_redis_password(p);
                }
                let (first, asked) = tokio::sync::oneshot::channel();
                let s = Arc::new(Sentinel {
                    resolver: tokio::sync::Mutex::new(b.build()?),
                    name: master.clone(),
                    master: RwLock::new(None),
                    waited: target.acks > 0,
                    kick: Notify::new(),
                    switched: watch::Sender::new(0),
                });
                tokio::spawn(s.clone().watch(stop.clone(), first));
                // The first answer (or failure) before the store is used; later ones in the
                // background.
                let _ = asked.await;
                Self::Sentinel(s)
            }
            Topology::Cluster(nodes) => {
                let urls: Vec<String> =
                    nodes.iter().map(|(h, p)| format!("redis://{}/", host_port(h, *p))).collect();
                let seeds = ClusterSeeds { urls, password: target.password.clone() };
                let client: ClusterClient = seeds.builder().build()?;
                let config = ClusterConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(RESPONSE_TIMEOUT);
                // Each cluster connection holds one connection per node: fewer of them.
                let waiters = if target.acks > 0 { WAITERS / 4 } else { 0 };
                let waiters = (0..waiters)
                    .map(|_| client.get_pending_async_connection_with_config(config.clone()))
                    .collect();
                let conn = client.get_pending_async_connection_with_config(config);
                Self::Cluster { conn, waiters, next: AtomicUsize::new(0), seeds }
            }
        })
    }

    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster { .. })
    }

    /// A connection for commands that need no particular node (routed by their keys on Cluster).
    pub(super) fn conn(&self) -> Result<Conn, String> {
        self.pick(false)
    }

    /// `waited`: for a write followed by `WAIT`.
    fn pick(&self, waited: bool) -> Result<Conn, String> {
        Ok(match self {
            Self::Server(pool) => Conn::Server(pool.pick(waited)),
            Self::Sentinel(s) => Conn::Server(s.conn(waited)?),
            Self::Cluster { conn, waiters, next, .. } => Conn::Cluster(match waiters.len() {
                n if waited && n > 0 => waiters[next.fetch_add(1, Ordering::Relaxed) % n].clone(),
                _ => conn.clone(),
            }),
        })
    }

    /// Runs `pipe` (not atomic; MULTI/EXEC inside it if need be) on the master holding `key`, on
    /// one connection. Server errors come back as `Value::ServerError` items, not as `Err`.
    pub(super) async fn send(&self, key: &str, pipe: &Pipeline, waited: bool) -> RedisResult<Vec<Value>> {
        match self.pick(waited) {
            Ok(Conn::Server(mut c)) => c.req_packed_commands(pipe, 0, pipe.len()).await,
            Ok(Conn::Cluster(mut c)) => {
                let route = SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master));
                c.route_pipeline(pipe.clone(), 0, pipe.len(), route).await
            }
            Err(e) => Err(::redis::RedisError::from((::redis::ErrorKind::Io, "no redis master", e))),
        }
    }

    /// The masters to walk for a whole-keyspace command (`None`: the one server).
    pub(super) async fn masters(&self) -> RedisResult<Vec<Option<(String, u16)>>> {
        let Self::Cluster { conn, .. } = self else { return Ok(vec![None]) };
        let mut c = conn.clone();
        let slots: Vec<Value> = ::redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut c).await?;
        let mut out = Vec::new();
        for range in slots {
            let Value::Array(parts) = range else { continue };
            if let Some(Value::Array(master)) = parts.get(2) {
                if let (Some(host), Some(Value::Int(port))) = (master.first(), master.get(1)) {
                    let host: String = ::redis::from_redis_value(host.clone())?;
                    let node = Some((host, *port as u16));
                    if !out.contains(&node) {
                        out.push(node);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Runs `cmd` on the node `node` names (Cluster), or on the one server.
    pub(super) async fn on_node<T: ::redis::FromRedisValue>(
        &self,
        node: Option<&(String, u16)>,
        cmd: Cmd,
    ) -> RedisResult<T> {
        match (self.conn(), node) {
            (Ok(Conn::Cluster(mut c)), Some((host, port))) => {
                let route = SingleNodeRoutingInfo::ByAddress { host: host.clone(), port: *port };
                let v =
                    c.route_command(cmd, ::redis::cluster_routing::RoutingInfo::SingleNode(route)).await?;
                Ok(::redis::from_redis_value(v)?)
            }
            (Ok(mut c), _) => cmd.query_async(&mut c).await,
            (Err(e), _) => Err(::redis::RedisError::from((::redis::ErrorKind::Io, "no redis master", e))),
        }
    }

    /// A call failed: on Sentinel, ask again who the master is now.
    pub(super) fn failed(&self) {
        if let Self::Sentinel(s) = self {
            s.kick.notify_one();
        }
    }

    /// Where the revocation feed subscribes.
    pub(super) fn feed_source(&self) -> FeedSource {
        match self {
            Self::Server(pool) => FeedSource::Server(pool.client.clone()),
            Self::Sentinel(s) => FeedSource::Sentinel(s.clone()),
            Self::Cluster { seeds, .. } => FeedSource::Cluster(seeds.clone()),
        }
    }
}

fn host_port(h: &str, p: u16) -> String {
    if h.contains(':') { format!("[{h}]:{p}") } else { format!("{h}:{p}") }
}

pub(super) enum FeedSource {
    Server(Client),
    Sentinel(Arc<Sentinel>),
    Cluster(ClusterSeeds),
}

/// The nodes a Cluster client starts from (it discovers the others).
#[derive(Clone)]
pub(super) struct ClusterSeeds {
    urls: Vec<String>,
    password: Option<String>,
}

impl ClusterSeeds {
    pub(super) fn builder(&self) -> ClusterClientBuilder {
        let b = ClusterClientBuilder::new(self.urls.clone());
        match &self.password {
            Some(p) => b.password(p.clone()),
            None => b,
        }
    }
}

/// The master as Sentinel last named it, and the pool on it.
pub(super) struct Sentinel {
    resolver: tokio::sync::Mutex<SentinelClient>,
    name: String,
    master: RwLock<Option<(String, Arc<Pool>)>>,
    /// Whether pools get connections for waited writes.
    waited: bool,
    kick: Notify,
    /// Bumped at every change of master: the feed subscribes again.
    pub(super) switched: watch::Sender<u64>,
}

impl Sentinel {
    fn conn(&self, waited: bool) -> Result<ConnectionManager, String> {
        let m = self.master.read().unwrap_or_else(|e| e.into_inner());
        let Some((_, pool)) = m.as_ref() else {
            self.kick.notify_one();
            return Err(format!("no master `{}` confirmed through Sentinel yet", self.name));
        };
        Ok(pool.pick(waited))
    }

    /// The current master's client, for the feed.
    pub(super) fn client(&self) -> Option<Client> {
        let m = self.master.read().unwrap_or_else(|e| e.into_inner());
        m.as_ref().map(|(_, p)| p.client.clone())
    }

    /// Asks Sentinel (the crate asks each sentinel in turn and checks with `ROLE` that the node
    /// named is a master) and swaps the pool when the master moved. Connections to the old
    /// master are dropped with the old pool once their calls end.
    async fn resolve(&self) -> Result<(), String> {
        let client = tokio::time::timeout(RESOLVE_TIMEOUT, async {
            self.resolver.lock().await.async_get_client().await
        })
        .await
        .map_err(|_| "sentinel did not answer in time".to_string())?
        .map_err(|e| e.to_string())?;
        let addr = client.get_connection_info().addr().to_string();
        let same =
            self.master.read().unwrap_or_else(|e| e.into_inner()).as_ref().is_some_and(|(a, _)| *a == addr);
        if !same {
            let pool = Arc::new(Pool::new(client, self.waited).map_err(|e| e.to_string())?);
            *self.master.write().unwrap_or_else(|e| e.into_inner()) = Some((addr.clone(), pool));
            self.switched.send_modify(|n| *n += 1);
            tracing::info!(master = %addr, name = %self.name, "redis master found through sentinel");
        }
        Ok(())
    }

    async fn watch(self: Arc<Self>, stop: CancellationToken, first: tokio::sync::oneshot::Sender<()>) {
        let mut was_ok = true;
        let mut first = Some(first);
        loop {
            let resolved = self.resolve().await;
            if let Some(tx) = first.take() {
                let _ = tx.send(());
            }
            let wait = match resolved {
                Ok(()) => {
                    was_ok = true;
                    SENTINEL_POLL
                }
                Err(e) => {
                    if was_ok {
                        tracing::warn!(error = %e, name = %self.name, "no redis master confirmed through sentinel; retrying");
                    }
                    was_ok = false;
                    SENTINEL_RETRY
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.kick.notified() => {
                    // Many calls fail at once when a master dies: one question is enough.
                    tokio::time::sleep(SENTINEL_RETRY / 2).await;
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
