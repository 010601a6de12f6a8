//! An in-process hyper upstream that echoes what it received, plus a few behaviours on demand:
//! a path containing `/slow` (`?ms=N`) waits before answering, `/status/N` answers with status N,
//! `/bytes` (`?n=N`) streams N bytes back.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;

type Body = http_body_util::Either<Full<Bytes>, StreamBody<tokio_stream_shim::Chunks>>;

/// A running echo upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    /// Requests received so far.
    pub hits: Arc<AtomicUsize>,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// Connections open right now.
    pub open: Arc<AtomicUsize>,
    /// What `/health` answers: 200 while true, 503 while false.
    pub healthy: Arc<std::sync::atomic::AtomicBool>,
    pub name: &'static str,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
    pub fn set_healthy(&self, ok: bool) {
        self.healthy.store(ok, Ordering::SeqCst);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn start(name: &'static str) -> Upstream {
    start_with_delay(name, 0).await
}

/// An echo upstream that waits `delay_ms` before every answer.
pub async fn start_with_delay(name: &'static str, delay_ms: u64) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (h, c, o, ok) = (hits.clone(), connections.clone(), open.clone(), healthy.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            c.fetch_add(1, Ordering::SeqCst);
            o.fetch_add(1, Ordering::SeqCst);
            let (h, o, ok) = (h.clone(), o.clone(), ok.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    h.fetch_add(1, Ordering::SeqCst);
                    let healthy = ok.load(Ordering::SeqCst);
                    async move {
                        if delay_ms > 0 {
                            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                        }
                        handle(name, healthy, req).await
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
                o.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Upstream { addr, hits, connections, open, healthy, name, task }
}

/// A raw TCP upstream: for every connection, reads the request head and writes `reply` as is
/// (then closes). Returns the address and the count of requests it read.
pub async fn raw(reply: Vec<u8>) -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    raw_closing_after(reply, std::time::Duration::ZERO).await
}

/// As [`raw`], but the connection stays open `linger` after the reply before it closes, as a
/// server closing an idle keep-alive connection does.
pub async fn raw_closing_after(
    reply: Vec<u8>,
    linger: std::time::Duration,
) -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { continue };
            let (c, reply) = (c.clone(), reply.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                c.fetch_add(1, Ordering::SeqCst);
                let _ = s.write_all(&reply).await;
                if !linger.is_zero() {
                    tokio::time::sleep(linger).await;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, count, task)
}

fn query_num(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

async fn handle(
    name: &'static str,
    healthy: bool,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/health" {
        let mut resp = Response::new(Body::Left(Full::new(Bytes::from_static(b"health"))));
        *resp.status_mut() =
            if healthy { http::StatusCode::OK } else { http::StatusCode::SERVICE_UNAVAILABLE };
        return Ok(resp);
    }
    if path.contains("/slow") {
        tokio::time::sleep(Duration::from_millis(query_num(&req, "ms").unwrap_or(3000))).await;
    }
    if let Some(code) = path.split_once("/status/").map(|(_, c)| c) {
        let mut resp = Response::new(Body::Left(Full::new(Bytes::from_static(b"status"))));
        *resp.status_mut() =
            code.parse::<u16>().ok().and_then(|c| http::StatusCode::from_u16(c).ok()).unwrap_or_default();
        return Ok(resp);
    }
    if path.contains("/bytes") {
        let n = query_num(&req, "n").unwrap_or(0);
        return Ok(Response::new(Body::Right(StreamBody::new(tokio_stream_shim::Chunks::new(n)))));
    }
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let mut headers = serde_json::Map::new();
    for (k, v) in req.headers() {
        let entry = headers.entry(k.as_str().to_string()).or_insert_with(|| Value::Array(vec![]));
        if let Value::Array(a) = entry {
            a.push(Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()));
        }
    }
    let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let echo = json!({
        "upstream": name,
        "method": method,
        "uri": uri,
        "headers": headers,
        "body_len": body.len(),
        "body": if body.len() <= 4096 { String::from_utf8_lossy(&body).into_owned() } else { String::new() },
    });
    let mut resp = Response::new(Body::Left(Full::new(Bytes::from(echo.to_string()))));
    resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
    resp.headers_mut().insert("keep-alive", "timeout=5".parse().unwrap());
    resp.headers_mut().insert("proxy-authenticate", "Basic".parse().unwrap());
    Ok(resp)
}

/// A body of N bytes produced in 64 KiB chunks, without holding them all in memory.
pub mod tokio_stream_shim {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub struct Chunks {
        left: u64,
        chunk: Bytes,
    }

    impl Chunks {
        pub fn new(n: u64) -> Self {
            Self { left: n, chunk: Bytes::from(vec![b'x'; 64 * 1024]) }
        }
    }

    impl futures_core::Stream for Chunks {
        type Item = Result<Frame<Bytes>, Infallible>;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            let n = self.left.min(self.chunk.len() as u64) as usize;
            self.left -= n as u64;
            let data = self.chunk.slice(..n);
            Poll::Ready(Some(Ok(Frame::data(data))))
        }
    }
}
