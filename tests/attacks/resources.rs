//! What one client can make the gateway hold (issue 14, SPEC §2 "Bounded resources"): memory
//! per HTTP/2 connection, descriptors and connections per upstream, HTTP/2 connections kept
//! open by control frames alone, and upgrades other than WebSocket.

use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::support::*;

/// An HTTP/2 connection over TLS to `addr`, with the given windows (the client's settings).
async fn h2_client(
    addr: std::net::SocketAddr,
    cert: &[u8],
    window: u32,
) -> (h2::client::SendRequest<bytes::Bytes>, h2::client::Connection<tokio_rustls::client::TlsStream<TcpStream>>)
{
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = h2_connector(cert).connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    h2::client::Builder::new()
        .initial_window_size(window)
        .initial_connection_window_size(window)
        .handshake(tls)
        .await
        .unwrap()
}

fn public_setup(up: &upstream::Upstream, server: &str, extra: &str) -> Setup {
    Setup {
        server: server.into(),
        routes: route("pub", "/public", &up.url(), &format!("auth = \"public\"\n{extra}")),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_never_reads_holds_a_few_megabytes() {
    let up = upstream::start("bo").await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &public_setup(&up, "", ""));
    let gw = Binary::spawn(&config, dir.path());
    let cert = std::fs::read(dir.path().join("gateway.crt")).unwrap();
    let client = client_for(&cert, true);
    assert_eq!(client.get(format!("https://{}/public/x", gw.https)).send().await.unwrap().status(), 200);
    let baseline = gw.status_kib("VmRSS");

    // The largest windows a client can grant; 200 streams each asking for 5 MB; never read.
    let (mut send, mut conn) = h2_client(gw.https, &cert, (1 << 31) - 1).await;
    let mut opened = Vec::new();
    let open = async {
        for _ in 0..200 {
            let ready = tokio::time::timeout(Duration::from_secs(2), send.clone().ready()).await;
            let Ok(Ok(mut s)) = ready else { break };
            let req =
                http::Request::get(format!("https://localhost/public/bytes?n={}", 5 << 20)).body(()).unwrap();
            let Ok((resp, _)) = s.send_request(req, true) else { break };
            opened.push(resp);
            send = s;
        }
    };
    // The connection is driven only while the requests go out, then left unread.
    tokio::select! {
        _ = open => {}
        _ = &mut conn => panic!("the gateway closed the connection"),
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), &mut conn).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = gw.status_kib("VmRSS").saturating_sub(baseline);
    println!("{} streams asked for; gateway RSS +{held} KiB (baseline {baseline} KiB)", opened.len());
    // h2_max_concurrent_streams (100): the streams past it wait in the client.
    assert!(up.open() <= 101, "{} upstream connections for one client connection", up.open());
    assert!(held < 16 * 1024, "one unread HTTP/2 connection made the gateway hold {held} KiB");
    // Others are still served meanwhile.
    assert_eq!(client.get(format!("https://{}/public/y", gw.https)).send().await.unwrap().status(), 200);
    drop(conn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_descriptor_per_upstream_connection() {
    let up = upstream::start_with_delay("slow", 1500).await;
    let dir = tempfile::tempdir().unwrap();
    // hyper's path, whose pool used to duplicate every socket for its liveness probe.
    let config = write_config(dir.path(), &public_setup(&up, "fast_path = false", ""));
    let gw = Binary::spawn(&config, dir.path());
    let cert = std::fs::read(dir.path().join("gateway.crt")).unwrap();
    let client = client_for(&cert, true);
    assert_eq!(client.get(format!("https://{}/public/x", gw.https)).send().await.unwrap().status(), 200);
    let fds = || std::fs::read_dir(format!("/proc/{}/fd", gw.pid())).unwrap().count();
    let before = fds();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..30 {
        let (c, url) = (client.clone(), format!("https://{}/public/{i}", gw.https));
        tasks.spawn(async move { c.get(url).send().await.map(|r| r.status().as_u16()).unwrap_or(0) });
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let during = fds();
    let statuses = tasks.join_all().await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    // One HTTP/2 client connection, 30 streams, 30 upstream connections (one was pooled).
    println!("descriptors: {before} before, {during} with 30 upstream requests in flight");
    assert!(during <= before + 30 + 4, "{during} descriptors with 30 upstream connections (from {before})");
}

both_transports! {
    #[tokio::test]
    async fn an_upstream_gets_at_most_max_connections_then_busy() {
        let up = upstream::start_with_delay("slow", 1200).await;
        let gw = Gateway::start(public_setup(&up, "", "max_connections = 2\nconnect_timeout = \"300ms\"")).await;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..5 {
            let (c, url) = (gw.client.clone(), gw.url(&format!("/public/{i}")));
            tasks.spawn(async move {
                let r = c.get(url).send().await.unwrap();
                let status = r.status().as_u16();
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                (status, body["errors"][0].as_str().unwrap_or("").to_string())
            });
        }
        let mut got = tasks.join_all().await;
        got.sort();
        let ok = got.iter().filter(|(s, _)| *s == 200).count();
        let busy = got.iter().filter(|(s, c)| *s == 503 && c == "upstream.busy").count();
        assert_eq!((ok, busy), (2, 3), "{got:?}");
        assert!(up.open() <= 2, "{} connections open to the upstream", up.open());
        // Once they are free, requests are served again.
        assert_eq!(gw.client.get(gw.url("/public/after")).send().await.unwrap().status(), 200);
    }
}

both_transports! {
    #[tokio::test]
    async fn requests_past_max_connections_wait_in_turn_for_a_connection_given_back() {
        // 12 requests of 150 ms each through 2 connections: 6 rounds, 900 ms, inside the 3 s
        // a request may wait for a place. None is refused; the upstream never sees a third.
        let up = upstream::start_with_delay("slow", 150).await;
        let gw = Gateway::start(public_setup(&up, "", "max_connections = 2\nconnect_timeout = \"3s\"")).await;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..12 {
            let (c, url) = (gw.client.clone(), gw.url(&format!("/public/{i}")));
            tasks.spawn(async move { c.get(url).send().await.map(|r| r.status().as_u16()).unwrap_or(0) });
        }
        let statuses = tasks.join_all().await;
        assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
        assert!(up.open() <= 2, "{} connections open to the upstream", up.open());
    }
}

both_transports! {
    #[tokio::test]
    async fn only_websocket_is_tunnelled_other_upgrades_are_plain_requests() {
        let up = upstream::start("bo").await;
        let gw = Gateway::start(public_setup(&up, "", "")).await;
        let mut conn = RawConn::open(&gw).await;
        conn.send(
            b"GET /public/h2c HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
              HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n",
        )
        .await;
        let r = conn.response().await.unwrap();
        assert_eq!(r.status, 200, "{}", r.head);
        let echo: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let headers = &echo["headers"];
        for h in ["upgrade", "http2-settings", "connection"] {
            assert!(headers.get(h).is_none(), "{h} reached the upstream: {headers}");
        }
        // The connection is still HTTP/1.1: a second request is answered.
        conn.send(b"GET /public/again HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert_eq!(conn.response().await.unwrap().status, 200);
    }
}

#[tokio::test]
async fn an_http2_connection_kept_only_by_pings_reaches_its_idle_timeout() {
    let up = upstream::start("bo").await;
    let gw = Gateway::start(public_setup(&up, "idle_timeout = \"1s\"", "")).await;
    let (_send, mut conn) = h2_client(gw.https, &gw.cert_pem, 65_535).await;
    let mut pings = conn.ping_pong().unwrap();
    let started = Instant::now();
    let pinging = async {
        loop {
            if pings.ping(h2::Ping::opaque()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let closed = tokio::time::timeout(Duration::from_secs(6), async {
        tokio::select! {
            _ = &mut conn => {}
            _ = pinging => { let _ = conn.await; }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection was still open after {:?} of pings", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_to_a_slow_upstream_cannot_make_the_gateway_stop_accepting() {
    // The red team's attack: ten HTTP/2 connections of 200 streams each to a slow upstream,
    // under an open-file limit of 2,048.
    let up = upstream::start_with_delay("slow", 3000).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &public_setup(&up, "", "connect_timeout = \"1s\""));
    let gw = Binary::spawn(&config, dir.path());
    let cert = std::fs::read(dir.path().join("gateway.crt")).unwrap();
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &gw.pid().to_string(), "--nofile=2048:2048"])
        .status()
        .unwrap();
    assert!(limited.success());
    let mut attackers = Vec::new();
    for _ in 0..10 {
        let (send, conn) = h2_client(gw.https, &cert, 65_535).await;
        attackers.push(tokio::spawn(async move {
            let _ = conn.await;
        }));
        for i in 0..200 {
            let Ok(mut s) = send.clone().ready().await else { break };
            let req = http::Request::get(format!("https://localhost/public/slow{i}")).body(()).unwrap();
            if let Ok((resp, _)) = s.send_request(req, true) {
                attackers.push(tokio::spawn(async move {
                    let _ = resp.await;
                }));
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fds = std::fs::read_dir(format!("/proc/{}/fd", gw.pid())).unwrap().count();
    println!("descriptors under attack: {fds}; upstream connections: {}", up.open());
    assert!(up.open() <= 256, "{} connections to one upstream (max_connections 256)", up.open());
    assert!(fds < 2048 - 256, "{fds} descriptors open");
    // A new client still gets its handshake and its answers.
    let client = client_for(&cert, false);
    let health = tokio::time::timeout(
        Duration::from_secs(5),
        client.get(format!("https://{}/healthz", gw.https)).send(),
    )
    .await
    .expect("a new client was answered")
    .unwrap();
    assert_eq!(health.status(), 200);
    let r = client.get(format!("https://{}/public/new", gw.https)).send().await.unwrap();
    let status = r.status().as_u16();
    assert!(status == 200 || status == 503, "{status}");
    if status == 503 {
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0], "upstream.busy");
    }
    for a in attackers {
        a.abort();
    }
}
