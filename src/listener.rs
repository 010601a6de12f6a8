//! Binding, accepting, TLS, and the graceful drain of connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::gateway::Gateway;
use crate::server::{self, ConnInfo, Listener};

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Accept {
    pub listener: TcpListener,
    pub tls: Option<TlsAcceptor>,
    pub kind: Listener,
}

/// Accepts connections until `stop` fires; each connection is registered with `conns` so the
/// caller can drain them once every accept loop has returned.
pub async fn accept_loop(
    accept: Accept,
    gw: Arc<Gateway>,
    stop: CancellationToken,
    conns: Arc<GracefulShutdown>,
) {
    let rt = gw.runtime();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(rt.header_read_timeout).keep_alive(true);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(Some(rt.idle_timeout));
    let builder = Arc::new(builder);
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = accept.listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let gw = gw.clone();
        let builder = builder.clone();
        let watcher = conns.watcher();
        let tls = accept.tls.clone();
        let kind = accept.kind;
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            serve(tls_stream, peer, true, kind, gw, &builder, watcher).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
                None => serve(stream, peer, false, kind, gw, &builder, watcher).await,
            }
        });
    }
}

async fn serve<IO>(
    io: IO,
    peer: SocketAddr,
    tls: bool,
    kind: Listener,
    gw: Arc<Gateway>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn_info = ConnInfo { peer, tls };
    let service = service_fn(move |req| server::handle(gw.clone(), conn_info, kind, req));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned();
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
