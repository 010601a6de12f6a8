//! The fast path (plain HTTP/1.1 served from bytes): what reaches the upstream, every response
//! framing, pipelining, the hand-over to hyper mid-connection, and upstream sockets closed while
//! idle. The rest of the suite runs through it too (its clients speak HTTP/1.1 by default).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::time::Duration;
use tokio::sync::Mutex;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request as the upstream read it: the head exactly as sent, and the body.
#[derive(Clone)]
struct Seen {
    head: String,
    body: Vec<u8>,
}

/// A raw upstream that records every request and answers with what `reply` makes of it
/// (bytes, and whether to close the connection afterwards without saying so).
struct Recorder {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
}

impl Recorder {
    async fn heads(&self) -> Vec<String> {
        self.seen.lock().await.iter().map(|s| s.head.clone()).collect()
    }
}

async fn recorder(reply: impl Fn(&Seen) -> (Vec<u8>, bool) + Send + Sync + 'static) -> Recorder {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let reply = Arc::new(reply);
    let (s2, c2) = (seen.clone(), connections.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            c2.fetch_add(1, Ordering::SeqCst);
            let (seen, reply) = (s2.clone(), reply.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let lower = head.to_ascii_lowercase();
                    let (body, used) = if lower.contains("\r\ntransfer-encoding: chunked\r\n") {
                        // Chunked (hyper's path re-frames some bodies so): sizes without extensions.
                        let mut body = Vec::new();
                        let mut at = end;
                        loop {
                            while !buf[at..].windows(2).any(|w| w == b"\r\n") {
                                let mut chunk = [0u8; 4096];
                                match sock.read(&mut chunk).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                                }
                            }
                            let eol = at + buf[at..].windows(2).position(|w| w == b"\r\n").unwrap();
                            let size = usize::from_str_radix(std::str::from_utf8(&buf[at..eol]).unwrap(), 16)
                                .unwrap();
                            while buf.len() < eol + 2 + size + 2 {
                                let mut chunk = [0u8; 4096];
                                match sock.read(&mut chunk).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                                }
                            }
                            body.extend_from_slice(&buf[eol + 2..eol + 2 + size]);
                            at = eol + 2 + size + 2;
                            if size == 0 {
                                break (body, at);
                            }
                        }
                    } else {
                        let len: usize = lower
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        while buf.len() < end + len {
                            let mut chunk = [0u8; 4096];
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        (buf[end..end + len].to_vec(), end + len)
                    };
                    let req = Seen { head, body };
                    buf.drain(..used);
                    seen.lock().await.push(req.clone());
                    let (bytes, close) = reply(&req);
                    if sock.write_all(&bytes).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    Recorder { url, seen, connections }
}

/// An upstream that answers each connection's first request with `start`, then one byte every
/// 200 ms, `drip` times, then nothing (the connection stays open for 30 s).
async fn dripping(start: &'static [u8], drip: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut b = [0u8; 4096];
                let _ = sock.read(&mut b).await;
                let _ = sock.write_all(start).await;
                for _ in 0..drip {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let _ = sock.write_all(b"x").await;
                }
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    url
}

fn ok(body: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

/// The request line's target of a recorded head.
fn target(s: &Seen) -> String {
    s.head.split(' ').nth(1).unwrap_or("").to_string()
}

async fn gateway(up: &Recorder, server: &str) -> Gateway {
    let setup = Setup { server: server.into(), ..Setup::routes(route("bo", "/api", &up.url, "")) };
    Gateway::start(setup).await
}

fn get(path: &str, token: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer {token}\r\n{extra}\r\n")
        .into_bytes()
}

#[tokio::test]
async fn the_upstream_gets_the_clients_bytes_with_the_gateways_headers() {
    let up = recorder(|_| {
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Request-Id: theirs\r\nConnection: keep-alive, x-hop\r\n\
              X-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: yes\r\n\r\nok"
                .to_vec(),
            false,
        )
    })
    .await;
    let gw = gateway(&up, "").await;
    let token = gw.access_token(ADMIN).await;
    let mut conn = RawConn::open(&gw).await;
    let spoof = "X-Custom-Case: v\r\nX-Auth-Login: mallory\r\nx_forwarded_for: 6.6.6.6\r\nTE: trailers\r\n\
                 Connection: keep-alive\r\n";
    for _ in 0..2 {
        conn.send(&get("/api/a%7Eb/./c?q=1&r", &token, spoof)).await;
        let r = conn.response().await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]), "{}", r.head);
        assert!(r.head.contains("x-kept: yes") && r.head.contains("date: "), "{}", r.head);
        assert!(!r.head.contains("theirs") && !r.head.contains("x-hop") && !r.head.contains("keep-alive"));
        assert!(r.head.contains("x-request-id: "), "{}", r.head);
    }
    assert_eq!(up.connections.load(Ordering::SeqCst), 1, "the upstream socket is reused");
    let seen = up.seen.lock().await[0].clone();
    assert_eq!(target(&seen), "/api/a~b/c?q=1&r", "normalised path, the client's query");
    let h = &seen.head;
    // The client's own spelling survives: the head was copied, not rebuilt from a header map.
    assert!(h.contains("\r\nX-Custom-Case: v\r\n"), "{h}");
    assert!(h.contains(&format!("\r\nx-auth-login: {}\r\n", ADMIN.0)), "{h}");
    assert!(h.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"), "{h}");
    assert!(
        h.contains("\r\nx-forwarded-proto: https\r\n") && h.contains("\r\nx-forwarded-host: gw.test\r\n")
    );
    assert!(h.contains(&format!("\r\nhost: {}\r\n", up.url.trim_start_matches("http://"))), "{h}");
    for gone in ["mallory", "6.6.6.6", "Authorization", "TE:", "Connection"] {
        assert!(!h.contains(gone), "{gone} reached the upstream: {h}");
    }

    // With the fast path off, the same request goes through hyper (which lower-cases names).
    let gw = gateway(&up, "fast_path = false").await;
    let token = gw.access_token(ADMIN).await;
    let mut conn = RawConn::open(&gw).await;
    conn.send(&get("/api/x", &token, spoof)).await;
    assert_eq!(conn.response().await.unwrap().status, 200);
    let h = up.heads().await.last().unwrap().clone();
    assert!(h.contains("\r\nx-custom-case: v\r\n") && !h.contains("mallory"), "{h}");
}

#[tokio::test]
async fn chunked_close_delimited_interim_and_head_answers_are_relayed() {
    let up = recorder(|s| match target(s).as_str() {
        "/api/chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n"
                .to_vec(),
            false,
        ),
        "/api/close" => (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end".to_vec(), true),
        "/api/early" => (b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nlater".to_vec(), false),
        "/api/head" => (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec(), false),
        "/api/both" => (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), false),
        "/api/big" => {
            let body = "x".repeat(300_000);
            (format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes(), false)
        }
        _ => (ok("?"), false),
    })
    .await;
    let gw = gateway(&up, "").await;
    let token = gw.access_token(ADMIN).await;
    let fetch = |path: &str| gw.client.get(gw.url(path)).bearer_auth(&token).send();
    let r = fetch("/api/chunked").await.unwrap();
    assert_eq!(r.headers()["transfer-encoding"], "chunked");
    assert_eq!(r.text().await.unwrap(), "hello world");
    // A body that ends when the upstream closes reaches the client chunked, as on hyper's
    // path, and the client's connection stays open.
    let mut conn = RawConn::open(&gw).await;
    conn.send(&get("/api/close", &token, "")).await;
    let r = conn.response().await.unwrap();
    assert!(
        r.head.contains("transfer-encoding: chunked") && !r.head.contains("connection: close"),
        "{}",
        r.head
    );
    assert_eq!(r.body, b"until the end");
    conn.send(&get("/api/chunked", &token, "")).await;
    let r = conn.response().await.unwrap();
    assert_eq!(r.body, b"hello world", "the trailer section is not relayed");
    assert_eq!(fetch("/api/early").await.unwrap().text().await.unwrap(), "later");
    assert_eq!(fetch("/api/big").await.unwrap().bytes().await.unwrap().len(), 300_000);
    let (status, code) = error_code(fetch("/api/both").await.unwrap()).await;
    assert_eq!((status, code.as_str()), (502, "upstream.unavailable"));

    // A HEAD answer has no body: the connection goes on with the next response intact.
    let mut conn = RawConn::open(&gw).await;
    let mut two =
        format!("HEAD /api/head HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\r\n").into_bytes();
    two.extend(get("/api/after", &token, ""));
    conn.send(&two).await;
    let head = conn.response_head_only().await;
    assert!(head.starts_with("http/1.1 200") && head.contains("content-length: 5"), "{head}");
    let r = conn.response().await.unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"?"[..]));
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_and_hyper_takes_over_when_needed() {
    let up = recorder(|s| (ok(&target(s)), false)).await;
    let gw = gateway(&up, "").await;
    let token = gw.access_token(ADMIN).await;
    let mut conn = RawConn::open(&gw).await;
    let mut batch = Vec::new();
    for i in 0..3 {
        batch.extend(get(&format!("/api/{i}"), &token, "X-Case: A\r\n"));
    }
    // The gateway's own endpoints and refusals are answered on the fast path too...
    batch.extend(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
    batch.extend(get("/nowhere", &token, ""));
    // ...but a Connection header naming another header is hyper's: the connection is handed
    // over, bytes and all, and hyper serves the rest of it.
    batch.extend(get("/api/named", &token, "Connection: keep-alive, X-Drop\r\nX-Drop: 1\r\n"));
    batch.extend(get("/api/4", &token, "X-Case: A\r\n"));
    conn.send(&batch).await;
    for i in 0..3 {
        let r = conn.response().await.unwrap();
        assert_eq!((r.status, String::from_utf8_lossy(&r.body).into_owned()), (200, format!("/api/{i}")));
    }
    let r = conn.response().await.unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &br#"{"status":"ok"}"#[..]), "health");
    let r = conn.response().await.unwrap();
    assert_eq!(r.status, 404);
    assert!(String::from_utf8_lossy(&r.body).contains("route.none"));
    let r = conn.response().await.unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"/api/named"[..]));
    let r = conn.response().await.unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"/api/4"[..]));
    let heads = up.heads().await;
    assert_eq!(heads.len(), 5);
    assert!(heads[..3].iter().all(|h| h.contains("X-Case: A")), "fast path: {heads:?}");
    assert!(!heads[3].to_ascii_lowercase().contains("x-drop"), "{}", heads[3]);
    assert!(heads[4].contains("x-case: A"), "after the hand-over hyper serves: {}", heads[4]);
    let metrics = reqwest::get(gw.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("\nbo_gateway_fast_path_handoffs_total 1\n"), "{metrics}");

    // A login on a connection keeps it on the fast path for what follows.
    let mut conn = RawConn::open(&gw).await;
    let body = format!(r#"{{"login":"{}","password":"{}"}}"#, ADMIN.0, ADMIN.1);
    conn.send(
        format!("POST /auth/token HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}", body.len())
            .as_bytes(),
    )
    .await;
    let r = conn.response().await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let fresh: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    conn.send(&get("/api/5", fresh["accessToken"].as_str().unwrap(), "X-Case: A\r\n")).await;
    assert_eq!(conn.response().await.unwrap().status, 200);
    assert!(up.heads().await[5].contains("X-Case: A"));

    // A chunked request body is hyper's too, from the first request.
    let mut conn = RawConn::open(&gw).await;
    conn.send(
        format!(
            "POST /api/c HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n\
             3\r\nabc\r\n0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(conn.response().await.unwrap().status, 200);
    assert_eq!(up.seen.lock().await.last().unwrap().body, b"abc");
}

#[tokio::test]
async fn request_bodies_are_relayed_as_they_arrive_and_refusals_keep_the_connection() {
    let up = recorder(|s| (ok(&s.body.len().to_string()), false)).await;
    let gw = gateway(&up, "").await;
    let token = gw.access_token(ADMIN).await;
    let mut conn = RawConn::open(&gw).await;
    conn.send(format!("POST /api/b HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nContent-Length: 10\r\n\r\n012").as_bytes())
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    conn.send(b"3456789").await;
    let r = conn.response().await.unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"10"[..]));
    assert_eq!(up.seen.lock().await[0].body, b"0123456789");

    // A refused request whose body has arrived: the connection stays usable.
    conn.send(
        b"POST /api/b HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer nope\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await;
    let r = conn.response().await.unwrap();
    assert_eq!(r.status, 401);
    assert!(r.head.contains("www-authenticate: bearer") && r.head.contains("x-request-id: "), "{}", r.head);
    assert!(String::from_utf8_lossy(&r.body).contains("token.invalid"));
    conn.send(&get("/api/b", &token, "")).await;
    assert_eq!(conn.response().await.unwrap().status, 200);
    // One whose body has not: answered, then closed (the rest of the body is not read).
    conn.send(b"POST /api/b HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc").await;
    let r = conn.response().await.unwrap();
    assert_eq!(r.status, 401);
    assert!(r.head.contains("connection: close"), "{}", r.head);
    assert_eq!(up.seen.lock().await.len(), 2, "refused requests never reach the upstream");
}

#[tokio::test]
async fn upstream_sockets_closed_while_idle_are_never_used() {
    // Closes every connection right after its response, without saying so.
    let up = recorder(|s| (ok(&target(s)), true)).await;
    let gw = gateway(&up, "").await;
    let token = gw.access_token(ADMIN).await;
    let mut conn = RawConn::open(&gw).await;
    for i in 0..4 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let method = if i % 2 == 0 { "GET" } else { "POST" };
        conn.send(
            format!("{method} /api/{i} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n")
                .as_bytes(),
        )
        .await;
        let r = conn.response().await.unwrap();
        assert_eq!((r.status, String::from_utf8_lossy(&r.body).into_owned()), (200, format!("/api/{i}")));
    }
    assert_eq!(up.connections.load(Ordering::SeqCst), 4);
    assert_eq!(up.seen.lock().await.len(), 4, "each request sent once");
}

#[tokio::test]
async fn a_retry_on_another_upstream_sends_the_whole_request() {
    let up = recorder(|s| (ok(&String::from_utf8_lossy(&s.body)), false)).await;
    let refused = format!("http://{}", refused_addr());
    let routes = format!(
        "[[routes]]\nname = \"bo\"\nprefix = \"/api\"\nupstreams = [\"{refused}\", \"{}\"]\n",
        up.url
    );
    let gw = Gateway::start(Setup::routes(routes)).await;
    let token = gw.access_token(ADMIN).await;
    let mut conn = RawConn::open(&gw).await;
    for _ in 0..2 {
        conn.send(
            format!("PUT /api/x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nContent-Length: 5\r\n\r\nhello")
                .as_bytes(),
        )
        .await;
        let r = conn.response().await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
    }
    assert!(up.seen.lock().await.iter().all(|s| s.body == b"hello"));
}

#[tokio::test]
async fn a_response_body_that_stops_moving_ends_at_the_idle_timeout() {
    let url = dripping(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234", 0).await;
    let gw = Gateway::start(Setup {
        server: "idle_timeout = \"1s\"".into(),
        ..Setup::routes(route("bo", "/api", &url, ""))
    })
    .await;
    let token = gw.access_token(ADMIN).await;
    let mut conn = RawConn::open(&gw).await;
    conn.send(&get("/api/x", &token, "")).await;
    let started = std::time::Instant::now();
    let head = conn.response_head_only().await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(conn.is_closed().await, "still open");
    assert!(started.elapsed() < Duration::from_secs(4), "closed after {:?}", started.elapsed());
}

#[tokio::test]
async fn a_connection_that_spoke_http1_does_not_turn_into_http2() {
    let up = recorder(|s| (ok(&target(s)), false)).await;
    let gw = gateway(&up, "").await;
    let token = gw.access_token(ADMIN).await;
    let mut conn = RawConn::open(&gw).await;
    conn.send(&get("/api/x", &token, "")).await;
    assert_eq!(conn.response().await.unwrap().status, 200);
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    conn.send(&preface).await;
    let head = conn.response_head_only().await;
    assert!(head.is_empty() || head.starts_with("http/1.1 4"), "answered as HTTP/2: {head:?}");
}

#[tokio::test]
async fn refusals_follow_hyper_s_path_in_order_and_form() {
    let up = recorder(|s| (ok(&s.head), false)).await;
    let extra = "upstream_headers = { X-Forwarded-Proto = \"https\", X-Request-Id = \"fixed\" }";
    let setup =
        Setup { server: "max_body_bytes = 10".into(), ..Setup::routes(route("bo", "/api", &up.url, extra)) };
    let gw = Gateway::start(setup).await;
    let token = gw.access_token(ADMIN).await;
    let mut conn = RawConn::open(&gw).await;
    // A HEAD refusal has no body: the next response on the connection reads whole.
    let mut two = b"HEAD /nope HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    two.extend(get("/api/x", &token, ""));
    conn.send(&two).await;
    let head = conn.response_head_only().await;
    assert!(head.starts_with("http/1.1 404"), "{head}");
    let r = conn.response().await.unwrap();
    assert_eq!(r.status, 200, "{}", r.head);
    // A configured upstream header replaces the gateway's own of that name.
    let h = String::from_utf8_lossy(&r.body).to_ascii_lowercase();
    assert_eq!(h.matches("x-forwarded-proto:").count(), 1, "{h}");
    assert!(h.contains("x-forwarded-proto: https") && h.contains("x-request-id: fixed"), "{h}");
    assert_eq!(h.matches("x-request-id:").count(), 1, "{h}");
    // Without a token, a body over the limit is a 401 first (as the Bearer check comes first).
    conn.send(b"POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n").await;
    assert_eq!(conn.response().await.unwrap().status, 401);
    let mut conn = RawConn::open(&gw).await;
    conn.send(
        format!(
            "POST /api/x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nContent-Length: 100\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(conn.response().await.unwrap().status, 413);
    // A 204 of the gateway's own has no Content-Length (RFC 9110 §8.6).
    let mut conn = RawConn::open(&gw).await;
    conn.send(format!("POST /auth/token/revoke HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n").as_bytes())
        .await;
    let head = conn.response_head_only().await;
    assert!(head.starts_with("http/1.1 204") && !head.contains("content-length"), "{head}");
}

#[tokio::test]
async fn a_body_streaming_longer_than_the_header_timeout_is_not_cut_for_a_pipelined_head() {
    let url = dripping(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", 10).await;
    let server = "header_read_timeout = \"1s\"\nidle_timeout = \"5s\"";
    for fast in [true, false] {
        let server = format!("{server}\nfast_path = {fast}");
        let gw =
            Gateway::start(Setup { server, ..Setup::routes(route("bo", "/api", &url, "auth = \"public\"")) })
                .await;
        let mut conn = RawConn::open(&gw).await;
        conn.send(b"GET /api/slow HTTP/1.1\r\nHost: a\r\n\r\nGET /api/next HTTP/1.1\r\nHost: a\r\n").await;
        let r = conn.response().await.unwrap();
        assert_eq!((r.status, r.body.len()), (200, 10), "fast_path = {fast}");
    }
}
