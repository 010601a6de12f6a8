//! bo-gateway: an authenticating TLS reverse proxy for TraderEvolution BackOffice REST services.
//!
//! A request's path: [`listener`] (accept, TLS) → [`server`] (request id, path, dispatch) →
//! [`auth`] endpoints, or [`routes`] → Bearer check ([`auth::tokens`]) → [`proxy`] → upstream.
//! [`runtime::Runtime`] is the validated config snapshot; [`gateway::Gateway`] the shared state.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod gateway;
pub mod health;
pub mod listener;
pub mod proxy;
pub mod routes;
pub mod runtime;
pub mod server;
pub mod store;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::ConfigError;
pub use gateway::Gateway;
pub use runtime::Runtime;

use crate::listener::{Accept, accept_loop};
use crate::server::Listener;

/// A gateway that is serving: its bound addresses, its state, and the handle to stop it.
pub struct Running {
    pub https_addr: Option<SocketAddr>,
    pub plain_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    pub gateway: Arc<Gateway>,
    shutdown: CancellationToken,
    done: JoinHandle<()>,
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
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("{}: cannot open the store: {source}", .config.display())]
    Store { config: std::path::PathBuf, source: store::StoreError },
}

async fn bind(addr: Option<SocketAddr>) -> Result<Option<TcpListener>, StartError> {
    match addr {
        None => Ok(None),
        Some(addr) => {
            TcpListener::bind(addr).await.map(Some).map_err(|source| StartError::Bind { addr, source })
        }
    }
}

/// Binds the listeners of `runtime` and starts serving. Port 0 binds an ephemeral port; the
/// bound addresses are in the returned [`Running`].
pub async fn start(runtime: Runtime) -> Result<Running, StartError> {
    let store = store::open(&runtime.raw.store)
        .await
        .map_err(|source| StartError::Store { config: runtime.source.clone(), source })?;
    let https = bind(runtime.listen.https).await?;
    let plain = bind(runtime.listen.plain).await?;
    let admin = bind(runtime.listen.admin).await?;
    let local = |l: &Option<TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
    let (https_addr, plain_addr, admin_addr) = (local(&https), local(&plain), local(&admin));
    let tls = runtime.tls.clone();
    let grace = runtime.shutdown_grace;
    let gw = Gateway::new(runtime, store);
    gw.spawn_housekeeping(Duration::from_secs(30));
    gw.spawn_revocation_sync(Duration::from_millis(500));

    let shutdown = CancellationToken::new();
    let main_stop = CancellationToken::new();
    let admin_stop = CancellationToken::new();
    let main_conns = Arc::new(GracefulShutdown::new());
    let admin_conns = Arc::new(GracefulShutdown::new());
    let mut loops = Vec::new();
    if let Some(l) = https {
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let a = Accept { listener: l, tls: acceptor, kind: Listener::Main };
        loops.push(tokio::spawn(accept_loop(a, gw.clone(), main_stop.clone(), main_conns.clone())));
    }
    if let Some(l) = plain {
        let a = Accept { listener: l, tls: None, kind: Listener::Main };
        loops.push(tokio::spawn(accept_loop(a, gw.clone(), main_stop.clone(), main_conns.clone())));
    }
    let admin_loop = admin.map(|l| {
        let a = Accept { listener: l, tls: None, kind: Listener::Admin };
        tokio::spawn(accept_loop(a, gw.clone(), admin_stop.clone(), admin_conns.clone()))
    });

    let gw2 = gw.clone();
    let signal = shutdown.clone();
    let done = tokio::spawn(async move {
        signal.cancelled().await;
        gw2.start_draining();
        tracing::info!(grace_secs = grace.as_secs(), "shutting down: draining connections");
        main_stop.cancel();
        for l in loops {
            let _ = l.await;
        }
        drain(main_conns, grace).await;
        admin_stop.cancel();
        if let Some(l) = admin_loop {
            let _ = l.await;
        }
        drain(admin_conns, Duration::from_secs(1)).await;
        tracing::info!("shutdown complete");
    });
    Ok(Running { https_addr, plain_addr, admin_addr, gateway: gw, shutdown, done })
}

/// Signals every watched connection to finish its in-flight requests and waits up to `grace`.
/// Called after the accept loops returned, so this is the last reference.
async fn drain(conns: Arc<GracefulShutdown>, grace: Duration) {
    let Ok(conns) = Arc::try_unwrap(conns) else {
        tracing::warn!("connections still being accepted; not waiting for the drain");
        return;
    };
    if tokio::time::timeout(grace, conns.shutdown()).await.is_err() {
        tracing::warn!("shutdown grace elapsed with requests still in flight");
    }
}
