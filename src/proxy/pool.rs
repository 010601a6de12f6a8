//! Upstream connections: opened on demand, kept alive and reused (HTTP/1.1), one idle queue per
//! upstream. Built on hyper's connection-level client rather than hyper-util's legacy `Client`,
//! which spawns a task and takes its pool's mutex for every request: here a request pops a
//! connection from a lock-free queue and its response body pushes it back when it ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use http::uri::Authority;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::LimitedBody;

/// Idle connections kept per upstream; past this, a finished connection is closed.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed instead of reused: upstream servers close idle
/// keep-alive connections after a while (nginx: 75 s), and reusing one at that moment fails.
const IDLE_FOR: Duration = Duration::from_secs(50);
/// How long a finished connection may take to become ready for its next request.
const SETTLE_FOR: Duration = Duration::from_secs(5);

/// Why a request could not be sent: the difference decides retries and passive health.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be opened; nothing was sent.
    Connect(String),
    /// The connection failed after the request may have been (partly) sent.
    Other(String),
}

/// The connections to one upstream.
pub struct Connections {
    authority: Authority,
    connect_timeout: Duration,
    idle: ArrayQueue<Idle>,
}

struct Idle {
    sender: SendRequest<LimitedBody>,
    since: Instant,
}

impl Connections {
    pub fn new(authority: Authority, connect_timeout: Duration) -> Arc<Self> {
        Arc::new(Self { authority, connect_timeout, idle: ArrayQueue::new(MAX_IDLE) })
    }

    /// Sends `req` (origin-form URI) on a pooled connection, or on a new one. A request that a
    /// pooled connection refused unsent (the upstream closed it while idle) goes on another.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<LimitedBody>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        loop {
            let (mut sender, reused) = match self.checkout() {
                Some(s) => (s, true),
                None => (self.connect().await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let lease = Lease { sender, pool: self.clone() };
                    return Ok(resp.map(|body| UpstreamBody {
                        inner: body,
                        lease: Some(lease),
                        ended: false,
                    }));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(SendError::Other(e.into_error().to_string())),
                },
            }
        }
    }

    fn checkout(&self) -> Option<SendRequest<LimitedBody>> {
        while let Some(idle) = self.idle.pop() {
            if idle.sender.is_ready() && idle.since.elapsed() < IDLE_FOR {
                return Some(idle.sender);
            }
        }
        None
    }

    async fn connect(&self) -> Result<SendRequest<LimitedBody>, SendError> {
        let host = self.authority.host().trim_start_matches('[').trim_end_matches(']');
        let port = self.authority.port_u16().unwrap_or(80);
        let stream = match tokio::time::timeout(self.connect_timeout, TcpStream::connect((host, port))).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(SendError::Connect(format!("connect to {}: {e}", self.authority))),
            Err(_) => return Err(SendError::Connect(format!("connect to {}: timed out", self.authority))),
        };
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let (mut sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SendError::Connect(e.to_string()))?;
        let authority = self.authority.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(upstream = %authority, error = %e, "upstream connection ended with an error");
            }
        });
        sender.ready().await.map_err(|e| SendError::Connect(e.to_string()))?;
        Ok(sender)
    }
}

/// A connection lent to one exchange; back to the pool when its response has been read to the end.
struct Lease {
    sender: SendRequest<LimitedBody>,
    pool: Arc<Connections>,
}

impl Lease {
    fn release(mut self) {
        if self.sender.is_ready() {
            let _ = self.pool.idle.push(Idle { sender: self.sender, since: Instant::now() });
        } else if !self.sender.is_closed() {
            // The connection task has not yet taken in the end of the response: wait for it
            // elsewhere (rare), so the response is not held up.
            let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
            rt.spawn(async move {
                if let Ok(Ok(())) = tokio::time::timeout(SETTLE_FOR, self.sender.ready()).await {
                    let _ = self.pool.idle.push(Idle { sender: self.sender, since: Instant::now() });
                }
            });
        }
    }
}

/// An upstream response body; its connection goes back to the pool when it has been read to
/// the end, and is closed when it is dropped before (the rest of the response would be unread).
pub struct UpstreamBody {
    inner: Incoming,
    lease: Option<Lease>,
    /// Read to the end (a chunked body never reports `is_end_stream`; its last poll does).
    ended: bool,
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            if self.ended || self.inner.is_end_stream() {
                lease.release();
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.ended = true,
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => self.ended = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
