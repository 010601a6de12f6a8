use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::*;

/// A WebSocket echo upstream (tokio-tungstenite) that counts the handshakes it accepted.
async fn ws_echo() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let c = c.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else { return };
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        let _ = ws.send(msg).await;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), count)
}

/// Reads from a raw upstream's socket up to the end of a request head (and whatever came with it).
async fn read_head(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut b = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut b).await.unwrap();
        assert!(n > 0, "closed inside the request head");
        head.extend_from_slice(&b[..n]);
    }
    head
}

async fn tls_stream(gw: &Gateway) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(gw.https).await.unwrap();
    tls_connector(&gw.cert_pem)
        .connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// A WebSocket handshake to `/ws/feed` with `token`, over TLS through the gateway.
async fn open_tunnel(
    gw: &Gateway,
    token: &str,
) -> (
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::handshake::client::Response,
) {
    let mut req = format!("wss://localhost:{}/ws/feed", gw.https.port()).into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::client_async(req, tls_stream(gw).await).await.unwrap()
}

both_transports! {
    #[tokio::test]
    async fn websocket_is_authorised_then_tunnelled_both_ways() {
        let (url, handshakes) = ws_echo().await;
        let gw = Gateway::start(Setup::routes(route("ws", "/ws", &url, ""))).await;
        let token = gw.access_token(TRADER).await;

        // Without a token: refused before the upstream hears of it.
        let req = format!("wss://localhost:{}/ws/feed", gw.https.port()).into_client_request().unwrap();
        let err = tokio_tungstenite::client_async(req, tls_stream(&gw).await).await.unwrap_err();
        assert!(err.to_string().contains("401"), "{err}");
        assert_eq!(handshakes.load(std::sync::atomic::Ordering::SeqCst), 0);

        let (mut ws, resp) = open_tunnel(&gw, &token).await;
        assert_eq!(resp.status(), 101);
        for i in 0..5 {
            ws.send(Message::text(format!("tick {i}"))).await.unwrap();
            let back = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
            assert_eq!(back.into_text().unwrap().as_str(), format!("tick {i}"));
        }
        ws.send(Message::binary(vec![0u8, 1, 2, 255])).await.unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back.into_data().as_ref(), &[0u8, 1, 2, 255]);
        ws.close(None).await.unwrap();
    }
}

both_transports! {
    #[tokio::test]
    async fn nothing_sent_after_the_upgrade_request_reaches_the_upstream_before_its_101() {
        // A raw upstream: reads the upgrade request, waits, records whatever else arrived, then 101s.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<(Vec<u8>, Vec<u8>)>();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = read_head(&mut s).await;
            let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let mut early = head.split_off(end);
            let mut more = vec![0u8; 4096];
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), s.read(&mut more)).await {
                early.extend_from_slice(&more[..n]);
            }
            s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
                .await
                .unwrap();
            let mut after = Vec::new();
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(3), s.read(&mut more)).await {
                after.extend_from_slice(&more[..n]);
            }
            let _ = tx.send((early, after));
        });
        let gw =
            Gateway::start(Setup::routes(route("raw", "/raw", &format!("http://{addr}"), "auth = \"public\"")))
                .await;
        let mut s = tls_stream(&gw).await;
        s.write_all(
            b"GET /raw HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nEARLY-BYTES",
        )
        .await
        .unwrap();
        let mut resp = vec![0u8; 1024];
        let n = s.read(&mut resp).await.unwrap();
        assert!(String::from_utf8_lossy(&resp[..n]).starts_with("HTTP/1.1 101"));
        let (early, after) = rx.await.unwrap();
        assert!(
            early.is_empty(),
            "bytes reached the upstream before its 101: {:?}",
            String::from_utf8_lossy(&early)
        );
        assert_eq!(after, b"EARLY-BYTES", "the client's bytes must arrive once the tunnel is open");
    }
}

both_transports! {
    #[tokio::test]
    async fn websocket_tunnels_count_against_max_connections() {
        let (url, _) = ws_echo().await;
        let setup = Setup {
            server: "max_connections = 2".into(),
            routes: route("ws", "/ws", &url, ""),
            ..Default::default()
        };
        let gw = Gateway::start(setup).await;
        // Log in on a connection that closes, so that only the tunnels hold slots.
        let body = format!(r#"{{"login":"{}","password":"{}"}}"#, TRADER.0, TRADER.1);
        let login = gw
            .raw(
                format!(
                    "POST /auth/token HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await;
        let json: serde_json::Value = serde_json::from_str(login.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        let token = json["accessToken"].as_str().unwrap().to_string();
        let mut tunnels = Vec::new();
        for _ in 0..2 {
            let (ws, resp) = open_tunnel(&gw, &token).await;
            assert_eq!(resp.status(), 101);
            tunnels.push(ws);
        }
        // Both slots are held by open tunnels: a third connection is not served.
        let served = async {
            let tcp = tokio::net::TcpStream::connect(gw.https).await.ok()?;
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            let mut s = tls_connector(&gw.cert_pem).connect(name, tcp).await.ok()?;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n").await.ok()?;
            let mut buf = [0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await.ok()?.ok()?;
            (n > 0).then_some(())
        };
        assert!(served.await.is_none(), "a connection past the cap was served while tunnels held the slots");
        // Closing one tunnel frees its slot.
        drop(tunnels.pop());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let health = gw.raw(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    }
}

both_transports! {
    #[tokio::test]
    async fn a_websocket_tunnel_closes_after_idle_timeout_without_traffic() {
        let (url, _) = ws_echo().await;
        let setup = Setup {
            server: "idle_timeout = \"1s\"".into(),
            routes: route("ws", "/ws", &url, ""),
            ..Default::default()
        };
        let gw = Gateway::start(setup).await;
        let token = gw.access_token(TRADER).await;
        let (mut ws, _) = open_tunnel(&gw, &token).await;
        // Traffic every 300 ms keeps it open past the idle timeout.
        for i in 0..7 {
            ws.send(Message::text(format!("tick {i}"))).await.unwrap();
            let back = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
            assert_eq!(back, Message::text(format!("tick {i}")));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // Silence: the gateway closes the tunnel.
        let started = std::time::Instant::now();
        let end = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("idle tunnel kept open");
        assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "closed after {:?}", started.elapsed());
    }
}

both_transports! {
    /// What the upstream sends right behind its 101 (here in the same write) is the tunnel's
    /// first bytes: the client gets them after the 101 head, and the tunnel then carries both ways.
    #[tokio::test]
    async fn bytes_the_upstream_sends_with_its_101_reach_the_client() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            read_head(&mut s).await;
            let mut b = [0u8; 4096];
            s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nHELLO")
                .await
                .unwrap();
            let n = s.read(&mut b).await.unwrap();
            s.write_all(&b[..n].to_ascii_uppercase()).await.unwrap();
        });
        let gw =
            Gateway::start(Setup::routes(route("raw", "/raw", &format!("http://{addr}"), "auth = \"public\"")))
                .await;
        let mut s = tls_stream(&gw).await;
        s.write_all(b"GET /raw HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 1024];
        while !got.ends_with(b"HELLO") {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await.unwrap().unwrap();
            assert!(n > 0, "closed before the tunnel's first bytes: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&b[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 101"), "{:?}", String::from_utf8_lossy(&got));
        s.write_all(b"ping").await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await.unwrap().unwrap();
        assert_eq!(&b[..n], b"PING");
    }
}
