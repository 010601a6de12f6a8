//! CORS origin tricks: only an exact listed origin is granted (never a look-alike, a list, a
//! second `Origin`, `null`), a preflight never reaches the upstream, and an upstream cannot
//! widen the policy with its own `Access-Control-*`.

use crate::support::*;

const ALLOWED: &str = "https://trader.example.com";

async fn setup() -> (Gateway, upstream::Upstream) {
    let up = upstream::start("bo").await;
    let setup = Setup {
        cors: format!("allowed_origins = [\"{ALLOWED}\"]\nallow_credentials = true"),
        routes: route("pub", "/public", &up.url(), "auth = \"public\"")
            + &route("api", "/api", &up.url(), ""),
        ..Default::default()
    };
    (Gateway::start(setup).await, up)
}

/// The `Access-Control-Allow-Origin` values of a raw response head.
fn granted(head: &str) -> Vec<String> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case("access-control-allow-origin"))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

async fn ask(gw: &Gateway, method: &str, path: &str, headers: &str) -> RawResponse {
    let mut c = RawConn::open(gw).await;
    let raw = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n");
    c.send(raw.as_bytes()).await;
    c.response().await.expect("an answer")
}

both_transports! {
    #[tokio::test]
    async fn look_alike_origins_get_no_grant() {
        let (gw, up) = setup().await;
        for origin in [
            "https://trader.example.com.evil.net",
            "https://evil-trader.example.com",
            "http://trader.example.com",
            "https://trader.example.com:443",
            "https://trader.example.com/",
            "https://TRADER.example.com",
            "https://trader.example.com, https://evil.net",
            "null",
            "*",
        ] {
            let r = ask(&gw, "GET", "/public/x", &format!("Origin: {origin}\r\n")).await;
            assert_eq!(r.status, 200);
            assert!(granted(&r.head).is_empty(), "{origin}: {}", r.head);
            let pre = format!("Origin: {origin}\r\nAccess-Control-Request-Method: DELETE\r\n");
            let r = ask(&gw, "OPTIONS", "/api/x", &pre).await;
            assert_eq!(r.status, 403, "{origin}");
            assert!(granted(&r.head).is_empty(), "{origin}: {}", r.head);
        }
        assert_eq!(up.hits(), 9, "only the GETs reached the upstream");
    }
}

both_transports! {
    #[tokio::test]
    async fn a_second_origin_header_does_not_change_the_grant() {
        let (gw, _up) = setup().await;
        // The first counts, on both transports, as for every single-valued header.
        let r = ask(&gw, "GET", "/public/x", &format!("Origin: https://evil.net\r\nOrigin: {ALLOWED}\r\n")).await;
        assert!(granted(&r.head).is_empty(), "{}", r.head);
        let r = ask(&gw, "GET", "/public/x", &format!("Origin: {ALLOWED}\r\nOrigin: https://evil.net\r\n")).await;
        assert_eq!(granted(&r.head), [ALLOWED]);
    }
}

both_transports! {
    #[tokio::test]
    async fn a_preflight_is_no_way_around_the_token() {
        let (gw, up) = setup().await;
        // A preflight is answered, never forwarded: it cannot carry a request to the upstream.
        let pre = format!("Origin: {ALLOWED}\r\nAccess-Control-Request-Method: DELETE\r\nContent-Length: 4\r\n");
        let mut c = RawConn::open(&gw).await;
        let raw = format!("OPTIONS /api/admin HTTP/1.1\r\nHost: localhost\r\n{pre}\r\nbody");
        c.send(raw.as_bytes()).await;
        let r = c.response().await.expect("an answer");
        assert_eq!(r.status, 204);
        assert_eq!(granted(&r.head), [ALLOWED]);
        // The next request on the connection is judged on its own: no token, 401.
        c.send(b"DELETE /api/admin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await;
        let r = c.response().await.expect("a second answer");
        assert_eq!(r.status, 401);
        assert_eq!(up.hits(), 0);
    }
}
