//! Starting, reloading and stopping: the listeners, the runtime swap on SIGHUP, and the drain.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::ConfigError;
use crate::conn::{Accept, Drain, accept_loop};
use crate::gateway::Gateway;
use crate::runtime::Runtime;
use crate::server::Listener;

/// The admin listener serves probes and scrapes, not clients: a small fixed cap is plenty.
const ADMIN_MAX_CONNECTIONS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Https,
    Plain,
    Admin,
}

/// One accept loop: the address it was configured with, and how to stop it.
struct Loop {
    slot: Slot,
    configured: SocketAddr,
    bound: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

struct Shared {
    gw: Arc<Gateway>,
    loops: Mutex<Vec<Loop>>,
    main_conns: Arc<Drain>,
    admin_conns: Arc<Drain>,
    main_slots: Arc<Semaphore>,
    admin_slots: Arc<Semaphore>,
    config: PathBuf,
}

/// A gateway that is serving: its bound addresses, its state, and the handles to reload and stop it.
pub struct Running {
    pub https_addr: Option<SocketAddr>,
    pub plain_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    pub gateway: Arc<Gateway>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    done: JoinHandle<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("{}: cannot open the store: {source}", .config.display())]
    Store { config: PathBuf, source: crate::store::StoreError },
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Bind(#[from] StartError),
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
    // Linux gives each accepted socket its listener's TCP_NODELAY: one system call here instead
    // of one per connection (`conn::accept_loop` sets it per connection elsewhere).
    let _ = socket2::SockRef::from(&listener).set_tcp_nodelay(true);
    Ok(listener)
}

impl Shared {
    fn spawn(&self, slot: Slot, configured: SocketAddr, listener: TcpListener) -> Loop {
        let bound = listener.local_addr().unwrap_or(configured);
        let stop = CancellationToken::new();
        let (kind, slots, conns) = match slot {
            Slot::Admin => (Listener::Admin, self.admin_slots.clone(), self.admin_conns.clone()),
            _ => (Listener::Main, self.main_slots.clone(), self.main_conns.clone()),
        };
        let accept = Accept { listener, tls: slot == Slot::Https, kind, slots };
        let task = tokio::spawn(accept_loop(accept, self.gw.clone(), stop.clone(), conns));
        Loop { slot, configured, bound, stop, task }
    }
}

fn wanted(rt: &Runtime) -> Vec<(Slot, SocketAddr)> {
    [(Slot::Https, rt.listen.https), (Slot::Plain, rt.listen.plain), (Slot::Admin, rt.listen.admin)]
        .into_iter()
        .filter_map(|(s, a)| a.map(|a| (s, a)))
        .collect()
}

/// Binds the listeners of `runtime` and starts serving. Port 0 binds an ephemeral port; the
/// bound addresses are in the returned [`Running`].
pub async fn start(runtime: Runtime) -> Result<Running, StartError> {
    check_open_files(&runtime);
    let store = crate::store::open(&runtime.raw.store)
        .await
        .map_err(|source| StartError::Store { config: runtime.source.clone(), source })?;
    let mut bound = Vec::new();
    for (slot, addr) in wanted(&runtime) {
        bound.push((slot, addr, bind(addr).await?));
    }
    let shared = Arc::new(Shared {
        main_slots: Arc::new(Semaphore::new(runtime.max_connections)),
        admin_slots: Arc::new(Semaphore::new(ADMIN_MAX_CONNECTIONS)),
        main_conns: Arc::new(Drain::default()),
        admin_conns: Arc::new(Drain::default()),
        config: runtime.source.clone(),
        gw: Gateway::new(runtime, store),
        loops: Mutex::new(Vec::new()),
    });
    shared.gw.spawn_housekeeping(Duration::from_secs(30));
    shared.gw.spawn_revocation_sync(Duration::from_millis(500));
    let loops: Vec<Loop> = bound.into_iter().map(|(slot, addr, l)| shared.spawn(slot, addr, l)).collect();
    let addr_of = |s: Slot| loops.iter().find(|l| l.slot == s).map(|l| l.bound);
    let (https_addr, plain_addr, admin_addr) =
        (addr_of(Slot::Https), addr_of(Slot::Plain), addr_of(Slot::Admin));
    *shared.loops.lock().await = loops;

    let shutdown = CancellationToken::new();
    let done = tokio::spawn(drain_on(shutdown.clone(), shared.clone()));
    Ok(Running { https_addr, plain_addr, admin_addr, gateway: shared.gw.clone(), shared, shutdown, done })
}

/// Raises the soft open-file limit to the hard one, and says in the log when the connections
/// the config allows (clients, plus every upstream's `max_connections`) would not fit in it:
/// past it, accepting and connecting fail with "Too many open files".
fn check_open_files(rt: &Runtime) {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "could not read or raise the open-file limit");
            return;
        }
    };
    let upstream: u64 = rt
        .routes
        .iter()
        .map(|r| r.pool.upstreams.iter().map(|u| u.conns.max_connections() as u64).sum::<u64>())
        .sum();
    // Listeners, the store, logs, certificates: a margin for what is not a connection.
    let needed = rt.max_connections as u64 + upstream + 64;
    if needed > limit {
        tracing::warn!(
            limit,
            needed,
            "server.max_connections plus the routes' max_connections per upstream do not fit in the open-file limit; raise it (ulimit -n, LimitNOFILE) or lower them"
        );
    } else {
        tracing::debug!(limit, needed, "open-file limit");
    }
}

impl Running {
    /// Begins the graceful shutdown (as SIGTERM does).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until every listener is closed and the drain has finished or timed out.
    pub async fn wait(self) {
        let _ = self.done.await;
    }

    /// Re-reads the config file and everything it names (users, keys, certificate) and swaps
    /// the new snapshot in as one. An invalid config is refused and the old one keeps serving.
    /// Listeners whose address did not change keep their sockets; connections in flight finish
    /// with the snapshot they started with.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        if self.shutdown.is_cancelled() {
            return Err(ReloadError::ShuttingDown);
        }
        let path = self.shared.config.clone();
        // Loading reads files and derives a password hash: keep it off the async threads.
        let runtime = tokio::task::spawn_blocking(move || Runtime::load(&path))
            .await
            .map_err(|e| ConfigError::new(&self.shared.config, "", format!("reload task failed: {e}")))??;
        let old = self.gateway.runtime();
        if runtime.raw.store != old.raw.store {
            tracing::warn!("[store] changes take effect at the next restart");
        }
        if runtime.max_connections != old.max_connections {
            tracing::warn!("server.max_connections changes take effect at the next restart");
        }
        let mut loops = self.shared.loops.lock().await;
        // Bind every new address before touching anything, so a failed bind changes nothing.
        let mut fresh = Vec::new();
        for (slot, addr) in wanted(&runtime) {
            if !loops.iter().any(|l| l.slot == slot && l.configured == addr) {
                fresh.push((slot, addr, bind(addr).await?));
            }
        }
        self.gateway.swap(runtime);
        let keep = wanted(&self.gateway.runtime());
        let (stay, gone): (Vec<Loop>, Vec<Loop>) =
            loops.drain(..).partition(|l| keep.iter().any(|(s, a)| *s == l.slot && *a == l.configured));
        for l in gone {
            tracing::info!(listener = ?l.slot, addr = %l.bound, "listener closed by reload");
            l.stop.cancel();
            let _ = l.task.await;
        }
        *loops = stay;
        for (slot, addr, l) in fresh {
            let lp = self.shared.spawn(slot, addr, l);
            tracing::info!(listener = ?slot, addr = %lp.bound, "listener opened by reload");
            loops.push(lp);
        }
        tracing::info!(config = %self.shared.config.display(), "configuration reloaded");
        Ok(())
    }
}

async fn drain_on(signal: CancellationToken, shared: Arc<Shared>) {
    signal.cancelled().await;
    let gw = &shared.gw;
    gw.start_draining();
    let grace = gw.runtime().shutdown_grace;
    tracing::info!(grace_secs = grace.as_secs(), "shutting down: draining connections");
    let loops = std::mem::take(&mut *shared.loops.lock().await);
    let (admin, main): (Vec<Loop>, Vec<Loop>) = loops.into_iter().partition(|l| l.slot == Slot::Admin);
    for l in main {
        l.stop.cancel();
        let _ = l.task.await;
    }
    drain(&shared.main_conns, grace).await;
    // The admin listener answers (readiness 503) until the main listeners have drained.
    for l in admin {
        l.stop.cancel();
        let _ = l.task.await;
    }
    drain(&shared.admin_conns, Duration::from_secs(1)).await;
    // Every event the drained requests emitted reaches the audit file and store before exit
    // (their writer task would otherwise die with the runtime). A store that hangs gets the
    // grace again, then what is left is said in the log (the log target has every event).
    if tokio::time::timeout(grace, gw.audit.flush()).await.is_err() {
        let left = gw.audit.queued.load(std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(left, "shutdown grace elapsed with audit events not yet written to file or store");
    }
    tracing::info!("shutdown complete");
}

/// Asks every connection to finish its in-flight requests and waits up to `grace`.
async fn drain(conns: &Drain, grace: Duration) {
    if tokio::time::timeout(grace, conns.drain()).await.is_err() {
        tracing::warn!("shutdown grace elapsed with requests still in flight");
    }
}

#[cfg(test)]
mod tests {
    /// What `conn::accept_loop` relies on to skip a system call per connection.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_sockets_inherit_no_delay_from_the_listener() {
        let listener = super::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let (_client, (accepted, _)) = (client.unwrap(), accepted.unwrap());
        assert!(accepted.nodelay().unwrap());
    }
}
