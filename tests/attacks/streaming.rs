use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::support::*;

async fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

both_transports! {
    #[tokio::test]
    async fn client_disconnect_mid_download_releases_the_upstream_connection() {
        let up = upstream::start("bo").await;
        let gw = Gateway::start(Setup::routes(route("pub", "/public", &up.url(), "auth = \"public\""))).await;
        let mut c = RawConn::open(&gw).await;
        c.send(b"GET /public/bytes?n=200000000 HTTP/1.1\r\nHost: a\r\n\r\n").await;
        // Read a little of the 200 MB, then vanish.
        let mut conn = c;
        let first = conn.response_head_only().await;
        assert!(first.starts_with("http/1.1 200"), "{first}");
        assert!(wait_for(|| up.open() == 1).await);
        drop(conn);
        assert!(wait_for(|| up.open() == 0).await, "upstream connection still open: {}", up.open());
    }
}

both_transports! {
    #[tokio::test]
    async fn client_disconnect_mid_upload_releases_the_upstream_connection() {
        let up = upstream::start("bo").await;
        let gw = Gateway::start(Setup::routes(route("pub", "/public", &up.url(), "auth = \"public\""))).await;
        let tcp = tokio::net::TcpStream::connect(gw.https).await.unwrap();
        let mut s = tls_connector(&gw.cert_pem)
            .connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        s.write_all(b"POST /public/upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5000000\r\n\r\n").await.unwrap();
        s.write_all(&vec![b'u'; 300_000]).await.unwrap();
        assert!(wait_for(|| up.open() == 1).await);
        drop(s);
        assert!(wait_for(|| up.open() == 0).await, "upstream connection still open: {}", up.open());
        // The gateway is fine and the route still works.
        let r = gw.client.post(gw.url("/public/upload")).body("ok").send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
}
