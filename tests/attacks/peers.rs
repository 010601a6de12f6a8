use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

async fn tls(gw: &Gateway) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(gw.https).await.ok()?;
    tls_connector(&gw.cert_pem)
        .connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .ok()
}

/// A gateway with `[server]` settings `server` and one public route to a fresh upstream.
async fn public_route_gateway(server: &str) -> (upstream::Upstream, Gateway) {
    let up = upstream::start("bo").await;
    let setup = Setup {
        server: server.into(),
        routes: route("pub", "/public", &up.url(), "auth = \"public\""),
        ..Default::default()
    };
    let gw = Gateway::start(setup).await;
    (up, gw)
}

/// Waits until the server closes `s` (read returns 0 or fails); returns how long that took.
async fn time_to_close(
    s: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

both_transports! {
    #[tokio::test]
    async fn slowloris_is_cut_at_header_read_timeout() {
        let (up, gw) = public_route_gateway("header_read_timeout = \"1s\"\nidle_timeout = \"30s\"").await;
        let mut s = tls(&gw).await.unwrap();
        let start = Instant::now();
        let request =
            b"GET /public/x HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let mut cut = false;
        for b in request {
            if s.write_all(&[*b]).await.is_err() || s.flush().await.is_err() {
                cut = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if start.elapsed() > Duration::from_secs(4) {
                break;
            }
        }
        if !cut {
            assert!(time_to_close(&mut s, Duration::from_secs(3)).await.is_some(), "trickling client never cut");
        }
        assert!(start.elapsed() < Duration::from_secs(4), "cut after {:?}", start.elapsed());
        assert_eq!(up.hits(), 0);
    }
}

both_transports! {
    #[tokio::test]
    async fn a_connection_that_never_sends_a_request_is_cut_at_header_read_timeout() {
        let (_up, gw) = public_route_gateway("header_read_timeout = \"1s\"\nidle_timeout = \"30s\"").await;
        let mut s = tls(&gw).await.unwrap();
        let waited = time_to_close(&mut s, Duration::from_secs(4)).await.expect("silent connection kept open");
        assert!(waited < Duration::from_secs(3), "closed after {waited:?}");
    }
}

both_transports! {
    #[tokio::test]
    async fn a_kept_alive_connection_waits_idle_timeout_not_header_read_timeout() {
        // Between requests the client owes nothing: only the idle timeout applies there.
        let (up, gw) = public_route_gateway("header_read_timeout = \"1s\"\nidle_timeout = \"30s\"").await;
        let mut c = RawConn::open(&gw).await;
        c.send(b"GET /public/a HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert_eq!(c.response().await.unwrap().status, 200);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        c.send(b"GET /public/b HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert_eq!(c.response().await.expect("kept-alive connection was cut").status, 200);
        // A head started and left unfinished on the same connection is cut at the head timeout.
        c.send(b"GET /public/c HTTP/1.1\r\nHost: a\r\n").await;
        let start = Instant::now();
        assert!(c.is_closed().await, "unfinished head kept open");
        assert!(start.elapsed() < Duration::from_secs(3), "cut after {:?}", start.elapsed());
        assert_eq!(up.hits(), 2);
    }
}

both_transports! {
    #[tokio::test]
    async fn idle_keep_alive_connections_close_at_idle_timeout() {
        let (_up, gw) = public_route_gateway("idle_timeout = \"1s\"\nheader_read_timeout = \"20s\"").await;
        let mut c = RawConn::open(&gw).await;
        c.send(b"GET /public/x HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert_eq!(c.response().await.unwrap().status, 200);
        let start = Instant::now();
        assert!(c.is_closed().await, "idle connection kept open");
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(700) && waited < Duration::from_secs(4),
            "closed after {waited:?}"
        );
    }
}

both_transports! {
    #[tokio::test]
    async fn a_slow_request_is_not_cut_by_the_idle_timeout() {
        let (_up, gw) = public_route_gateway("idle_timeout = \"1s\"").await;
        let r = gw.client.get(gw.url("/public/slow?ms=2000")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
}

both_transports! {
    #[tokio::test]
    async fn connections_past_the_cap_are_refused_not_queued() {
        let (_up, gw) = public_route_gateway("max_connections = 2").await;
        let a = tls(&gw).await.expect("first connection");
        let b = tls(&gw).await.expect("second connection");
        // The third is accepted by the kernel and closed at once by the gateway.
        match tls(&gw).await {
            None => {}
            Some(mut c) => {
                let _ = c.write_all(b"GET /public/x HTTP/1.1\r\nHost: a\r\n\r\n").await;
                let mut buf = [0u8; 64];
                let n =
                    tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf)).await.unwrap().unwrap_or(0);
                assert_eq!(n, 0, "a connection past the cap was served");
            }
        }
        // The admin listener has its own budget and keeps answering.
        assert_eq!(reqwest::get(gw.admin_url("/healthz")).await.unwrap().status(), 200);
        drop(a);
        drop(b);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(gw.client.get(gw.url("/public/x")).send().await.unwrap().status(), 200);
    }
}

both_transports! {
    #[tokio::test]
    async fn broken_upstreams_give_502_and_the_client_connection_stays_usable() {
        let good = upstream::start("good").await;
        let (garbage, _, _g) = upstream::raw(b"this is not http\r\n\r\n".to_vec()).await;
        let (truncated, _, _t) = upstream::raw(b"HTTP/1.1 200 OK\r\nContent-Ty".to_vec()).await;
        let mut huge = b"HTTP/1.1 200 OK\r\nX-Huge: ".to_vec();
        huge.extend(std::iter::repeat_n(b'h', 1_000_000));
        huge.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
        let (oversized, _, _o) = upstream::raw(huge).await;
        let (silent_close, _, _s) = upstream::raw(Vec::new()).await;
        let routes = route("good", "/good", &good.url(), "auth = \"public\"")
            + &route("garbage", "/garbage", &format!("http://{garbage}"), "auth = \"public\"")
            + &route("truncated", "/truncated", &format!("http://{truncated}"), "auth = \"public\"")
            + &route("oversized", "/oversized", &format!("http://{oversized}"), "auth = \"public\"")
            + &route("closed", "/closed", &format!("http://{silent_close}"), "auth = \"public\"");
        let gw = Gateway::start(Setup::routes(routes)).await;
        let mut c = RawConn::open(&gw).await;
        for bad in ["/garbage", "/truncated", "/oversized", "/closed"] {
            c.send(format!("GET {bad} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes()).await;
            let r = c.response().await.unwrap_or_else(|| panic!("{bad}: connection dropped"));
            assert_eq!(r.status, 502, "{bad}");
            assert!(String::from_utf8_lossy(&r.body).contains("upstream.unavailable"));
            c.send(b"GET /good/x HTTP/1.1\r\nHost: a\r\n\r\n").await;
            assert_eq!(c.response().await.unwrap().status, 200, "after {bad}");
        }
    }
}
