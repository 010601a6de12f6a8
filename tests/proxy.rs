//! SPEC §2: the Bearer check, routing, header rules, streaming, limits and upstream failures.

#[macro_use]
mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

async fn echo(gw: &Gateway, req: reqwest::RequestBuilder) -> Value {
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", gw.https);
    r.json().await.unwrap()
}

fn header<'a>(echo: &'a Value, name: &str) -> Option<&'a str> {
    echo["headers"][name][0].as_str()
}

both_transports! {
    #[tokio::test]
    async fn identity_headers_are_set_and_spoofed_ones_never_arrive() {
        let up = upstream::start("bo").await;
        let gw = Gateway::start(Setup::routes(route("bo", "/api", &up.url(), ""))).await;
        let token = gw.access_token(ADMIN).await;
        let e = echo(
            &gw,
            gw.client
                .get(gw.url("/api/accounts?x=1"))
                .bearer_auth(&token)
                .header("X-Auth-Login", "mallory")
                .header("x_auth_login", "mallory")
                .header("X-AUTH-ROLES", "root")
                .header("X-Auth_Session", "s")
                .header("X-Forwarded-For", "6.6.6.6")
                .header("X-Forwarded-Host", "evil")
                .header("X-Request-Id", "spoofed")
                .header("Forwarded", "for=6.6.6.6"),
        )
        .await;
        assert_eq!(e["uri"], "/api/accounts?x=1");
        assert_eq!(e["headers"]["x-auth-login"], serde_json::json!([ADMIN.0]));
        assert_eq!(header(&e, "x-auth-roles"), Some("admin,trader"));
        assert_eq!(header(&e, "x-auth-session"), Some(claims(&token)["sid"].as_str().unwrap()));
        for spoof in ["x_auth_login", "x-auth_session", "forwarded"] {
            assert!(e["headers"].get(spoof).is_none(), "{spoof} reached the upstream: {e}");
        }
        assert_eq!(header(&e, "x-forwarded-for"), Some("127.0.0.1"));
        assert_eq!(header(&e, "x-forwarded-proto"), Some("https"));
        assert_eq!(header(&e, "x-forwarded-host"), Some(gw.https.to_string().as_str()));
        assert_ne!(header(&e, "x-request-id"), Some("spoofed"));
        assert!(
            e["headers"].get("authorization").is_none(),
            "Authorization forwarded without forward_authorization"
        );
        assert_eq!(header(&e, "host"), Some(up.addr.to_string().as_str()));
    }
}

both_transports! {
    #[tokio::test]
    async fn request_id_is_the_same_upstream_and_to_the_client() {
        let up = upstream::start("bo").await;
        let gw = Gateway::start(Setup::routes(route("bo", "/api", &up.url(), ""))).await;
        let token = gw.access_token(TRADER).await;
        let r = gw.client.get(gw.url("/api/x")).bearer_auth(&token).send().await.unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        let e: Value = r.json().await.unwrap();
        assert_eq!(header(&e, "x-request-id"), Some(id.as_str()));
        assert_eq!(id.len(), 32);
    }
}

both_transports! {
    #[tokio::test]
    async fn trusted_proxies_keep_their_forwarding_headers() {
        let up = upstream::start("bo").await;
        let setup = Setup {
            server: "trusted_proxies = [\"127.0.0.1/32\"]".into(),
            routes: route("bo", "/api", &up.url(), ""),
            ..Default::default()
        };
        let gw = Gateway::start(setup).await;
        let token = gw.access_token(TRADER).await;
        let e = echo(
            &gw,
            gw.client
                .get(gw.url("/api/x"))
                .bearer_auth(&token)
                .header("X-Forwarded-For", "203.0.113.9")
                .header("X-Forwarded-Proto", "http")
                .header("X-Request-Id", "lb-abc-123"),
        )
        .await;
        assert_eq!(header(&e, "x-forwarded-for"), Some("203.0.113.9, 127.0.0.1"));
        assert_eq!(header(&e, "x-forwarded-proto"), Some("http"));
        assert_eq!(header(&e, "x-request-id"), Some("lb-abc-123"));
    }
}

both_transports! {
    #[tokio::test]
    async fn forward_authorization_and_upstream_headers() {
        let up = upstream::start("bo").await;
        // Cargo sets CARGO_PKG_NAME for the test process: an environment value the config can name.
        let expected = std::env::var("CARGO_PKG_NAME").unwrap();
        let routes = route("fwd", "/fwd", &up.url(), "forward_authorization = true")
            + &route(
                "svc",
                "/svc",
                &up.url(),
                "upstream_headers = { X-Service-Token = \"env:CARGO_PKG_NAME\", X-Static = \"v1\" }",
            );
        let gw = Gateway::start(Setup::routes(routes)).await;
        let token = gw.access_token(TRADER).await;
        let e = echo(&gw, gw.client.get(gw.url("/fwd/x")).bearer_auth(&token)).await;
        assert_eq!(header(&e, "authorization"), Some(format!("Bearer {token}").as_str()));
        let e =
            echo(&gw, gw.client.get(gw.url("/svc/x")).bearer_auth(&token).header("X-Service-Token", "client"))
                .await;
        assert_eq!(e["headers"]["x-service-token"], serde_json::json!([expected]));
        assert_eq!(header(&e, "x-static"), Some("v1"));
        assert!(e["headers"].get("authorization").is_none());
    }
}

both_transports! {
    /// The refresh token's `token` header, which BO clients send by default: it never changes
    /// the Bearer decision, and reaches the upstream only where the route says so.
    #[tokio::test]
    async fn the_token_header_is_forwarded_only_where_the_route_says() {
        let up = upstream::start("bo").await;
        let routes = route("plain", "/plain", &up.url(), "")
            + &route("tok", "/tok", &up.url(), "forward_token_header = true");
        let gw = Gateway::start(Setup::routes(routes)).await;
        let token = gw.access_token(TRADER).await;
        let e = echo(&gw, gw.client.get(gw.url("/plain/x")).bearer_auth(&token).header("token", "rt-1")).await;
        assert!(e["headers"].get("token").is_none(), "{e}");
        let e = echo(&gw, gw.client.get(gw.url("/tok/x")).bearer_auth(&token).header("token", "rt-2")).await;
        assert_eq!(header(&e, "token"), Some("rt-2"));
        // Without a Bearer token, a `token` header is no way in.
        let r = gw.client.get(gw.url("/tok/x")).header("token", "rt-3").send().await.unwrap();
        assert_eq!(error_code(r).await, (401, "token.missing".into()));
    }
}

both_transports! {
    #[tokio::test]
    async fn hop_by_hop_headers_are_removed_both_ways() {
        let up = upstream::start("bo").await;
        let gw = Gateway::start(Setup::routes(route("bo", "/api", &up.url(), ""))).await;
        let token = gw.access_token(TRADER).await;
        let req = format!(
            "GET /api/hop HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
             Connection: keep-alive, X-Secret, close\r\nX-Secret: 1\r\nKeep-Alive: timeout=9\r\nTE: trailers\r\n\
             Proxy-Authorization: Basic eDp5\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\n\r\n"
        );
        let resp = gw.raw(req.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        let body = &resp[resp.find("\r\n\r\n").unwrap() + 4..];
        let e: Value = serde_json::from_str(body.trim()).unwrap_or_else(|_| panic!("{resp}"));
        for gone in ["x-secret", "keep-alive", "te", "proxy-authorization", "proxy-connection"] {
            assert!(e["headers"].get(gone).is_none(), "{gone} reached the upstream: {e}");
        }
        assert_eq!(header(&e, "x-kept"), Some("yes"));
        let head = resp[..resp.find("\r\n\r\n").unwrap()].to_ascii_lowercase();
        assert!(!head.contains("keep-alive: timeout=5"), "upstream Keep-Alive leaked: {head}");
        assert!(!head.contains("proxy-authenticate"), "{head}");
    }
}

both_transports! {
    #[tokio::test]
    async fn bearer_check_outcomes() {
        let up = upstream::start("bo").await;
        let gw = Gateway::start(Setup::routes(route("bo", "/api", &up.url(), ""))).await;
        let r = gw.client.get(gw.url("/api/x")).send().await.unwrap();
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        assert_eq!(error_code(r).await, (401, "token.missing".into()));
        let r = gw.client.get(gw.url("/api/x")).header("Authorization", "Basic YTpi").send().await.unwrap();
        assert_eq!(error_code(r).await, (401, "token.missing".into()));
        for bad in ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."] {
            let r = gw.client.get(gw.url("/api/x")).bearer_auth(bad).send().await.unwrap();
            assert_eq!(error_code(r).await, (401, "token.invalid".into()), "{bad}");
        }
        let token = gw.access_token(TRADER).await;
        let mut tampered = token.clone();
        tampered.pop();
        tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
        let r = gw.client.get(gw.url("/api/x")).bearer_auth(&tampered).send().await.unwrap();
        assert_eq!(error_code(r).await, (401, "token.invalid".into()));
        assert_eq!(up.hits(), 0, "nothing unauthenticated reached the upstream");
    }
}

both_transports! {
    #[tokio::test]
    async fn public_routes_need_no_token_and_carry_no_identity() {
        let up = upstream::start("bo").await;
        let routes =
            route("pub", "/public", &up.url(), "auth = \"public\"") + &route("bo", "/api", &up.url(), "");
        let gw = Gateway::start(Setup::routes(routes)).await;
        let e = echo(&gw, gw.client.get(gw.url("/public/info")).header("X-Auth-Login", "mallory")).await;
        assert!(e["headers"].get("x-auth-login").is_none(), "{e}");
        // Normalisation happens before the route is chosen: climbing out of /public lands on /api.
        let r = gw.client.get(gw.url("/public/%2e%2e/api/x")).send().await.unwrap();
        assert_eq!(error_code(r).await, (401, "token.missing".into()));
        let r = gw.client.get(gw.url("/public%2F..%2Fapi")).send().await.unwrap();
        assert_eq!(error_code(r).await, (400, "request.malformed".into()));
    }
}

both_transports! {
    #[tokio::test]
    async fn routing_by_prefix_host_and_method() {
        let a = upstream::start("a").await;
        let b = upstream::start("b").await;
        let c = upstream::start("c").await;
        let routes = route("a", "/api", &a.url(), "auth = \"public\"")
            + &route("b", "/api/orders", &b.url(), "auth = \"public\"\nmethods = [\"GET\", \"POST\"]")
            + &route("c", "/api", &c.url(), "auth = \"public\"\nhost = \"Reports.Example\"")
            + &route("strip", "/strip", &a.url(), "auth = \"public\"\nstrip_prefix = true");
        let gw = Gateway::start(Setup::routes(routes)).await;
        let e = echo(&gw, gw.client.get(gw.url("/api/x"))).await;
        assert_eq!(e["upstream"], "a");
        let e = echo(&gw, gw.client.get(gw.url("/api/orders/7"))).await;
        assert_eq!(e["upstream"], "b");
        let r = gw.client.get(gw.url("/apix")).send().await.unwrap();
        assert_eq!(error_code(r).await, (404, "route.none".into()));
        let r = gw.client.delete(gw.url("/api/orders/7")).send().await.unwrap();
        assert_eq!(r.headers()["allow"], "GET, POST, HEAD", "HEAD comes with GET");
        assert_eq!(error_code(r).await, (405, "method.not_allowed".into()));
        let resp =
            gw.raw(b"GET /api/x HTTP/1.1\r\nHost: reports.example:8443\r\nConnection: close\r\n\r\n").await;
        assert!(resp.contains("\"upstream\":\"c\""), "{resp}");
        let e = echo(&gw, gw.client.get(gw.url("/strip/inner?q=1"))).await;
        assert_eq!(e["uri"], "/inner?q=1");
        let e = echo(&gw, gw.client.get(gw.url("/strip"))).await;
        assert_eq!(e["uri"], "/");
    }
}

both_transports! {
    #[tokio::test]
    async fn round_robin_spreads_over_upstreams() {
        let a = upstream::start("a").await;
        let b = upstream::start("b").await;
        let routes = format!(
            "[[routes]]\nname = \"rr\"\nprefix = \"/\"\nauth = \"public\"\nupstreams = [\"{}\", \"{}\"]\n",
            a.url(),
            b.url()
        );
        let gw = Gateway::start(Setup::routes(routes)).await;
        for _ in 0..10 {
            echo(&gw, gw.client.get(gw.url("/x"))).await;
        }
        assert_eq!((a.hits(), b.hits()), (5, 5));
    }
}

both_transports! {
    #[tokio::test]
    async fn upstream_connections_are_kept_alive_and_reused_for_every_response_framing() {
        let up = upstream::start("bo").await;
        let gw = Gateway::start(Setup::routes(route("pub", "/", &up.url(), "auth = \"public\""))).await;
        for i in 0..10 {
            // Content-Length, chunked (streamed), empty, and a request with a body.
            echo(&gw, gw.client.get(gw.url(&format!("/json/{i}")))).await;
            let r = gw.client.get(gw.url("/bytes?n=100000")).send().await.unwrap();
            assert_eq!(r.bytes().await.unwrap().len(), 100_000);
            let r = gw.client.get(gw.url("/status/204")).send().await.unwrap();
            assert_eq!(r.status(), 204);
            echo(&gw, gw.client.post(gw.url("/post")).body(vec![b'a'; 10_000])).await;
        }
        assert_eq!(up.hits(), 40);
        assert_eq!(
            up.connections.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one request at a time needs one connection"
        );
    }
}

both_transports! {
    #[tokio::test]
    async fn a_response_abandoned_midway_closes_its_upstream_connection_instead_of_reusing_it() {
        let up = upstream::start("bo").await;
        let gw = Gateway::start(Setup::routes(route("pub", "/", &up.url(), "auth = \"public\""))).await;
        let r = gw.client.get(gw.url("/bytes?n=50000000")).send().await.unwrap();
        let mut r = r;
        r.chunk().await.unwrap();
        drop(r);
        // The next request must not be answered with the rest of the abandoned body.
        let e = echo(&gw, gw.client.get(gw.url("/after"))).await;
        assert_eq!(e["uri"], "/after");
        for _ in 0..50 {
            if up.open() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(up.open(), 1, "the abandoned connection is still open");
    }
}

both_transports! {
    #[tokio::test]
    async fn an_upstream_that_closes_after_each_response_is_reconnected_to() {
        // No `Connection: close`: the upstream just closes, as a server at its keep-alive limit does.
        let (addr, count, _task) =
            upstream::raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()).await;
        let gw = Gateway::start(Setup::routes(route("pub", "/", &format!("http://{addr}"), "auth = \"public\"")))
            .await;
        for i in 0..20 {
            let r = gw.client.post(gw.url("/x")).body("data").send().await.unwrap();
            assert_eq!(r.status(), 200, "request {i}");
            assert_eq!(r.text().await.unwrap(), "ok");
        }
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 20);
    }
}

both_transports! {
    /// hyper's path (HTTP/2 here) keeps its own pool of upstream connections. An upstream that
    /// closes a kept-alive connection a moment after answering (an idle timeout, a restart) must
    /// not cost the next request a 502: the kernel is asked before a connection is reused, and an
    /// idempotent request lost on one anyway is sent again.
    #[tokio::test]
    async fn connections_the_upstream_closed_while_idle_are_not_reused_over_http2() {
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec();
        let (addr, count, _task) = upstream::raw_closing_after(reply, Duration::from_millis(20)).await;
        let gw = Gateway::start(Setup::routes(route("pub", "/", &format!("http://{addr}"), "auth = \"public\"")))
            .await;
        let h2 = gw.http2_client();
        for i in 0..12 {
            let r = if i % 2 == 0 { h2.get(gw.url("/x")) } else { h2.post(gw.url("/x")).body("data") };
            let r = r.send().await.unwrap();
            assert_eq!(r.version(), reqwest::Version::HTTP_2);
            assert_eq!(r.status(), 200, "request {i}");
            assert_eq!(r.text().await.unwrap(), "ok");
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 12);
    }
}

both_transports! {
    #[tokio::test]
    async fn upstream_down_is_502_and_slow_is_504() {
        let closed = refused_addr();
        let slow = upstream::start("slow").await;
        let routes = route("down", "/down", &format!("http://{closed}"), "auth = \"public\"")
            + &route("slow", "/slow", &slow.url(), "auth = \"public\"\ntimeout = \"300ms\"");
        let gw = Gateway::start(Setup::routes(routes)).await;
        let r = gw.client.get(gw.url("/down/x")).send().await.unwrap();
        assert_eq!(error_code(r).await, (502, "upstream.unavailable".into()));
        let r = gw.client.get(gw.url("/slow?ms=2000")).send().await.unwrap();
        assert_eq!(error_code(r).await, (504, "upstream.timeout".into()));
        // The gateway itself stays healthy and the connection reusable.
        assert_eq!(gw.client.get(gw.url("/healthz")).send().await.unwrap().status(), 200);
        // The admin listener names the route with no healthy upstream; the main one says only `ready`.
        let ready: Value = gw.client.get(gw.admin_url("/readyz")).send().await.unwrap().json().await.unwrap();
        assert!(ready["routes"].as_array().unwrap().iter().any(|r| r["name"] == "down"));
        let r = gw.client.get(gw.url("/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), r#"{"status":"ready"}"#);
    }
}

both_transports! {
    #[tokio::test]
    async fn bodies_over_the_limit_are_413_and_under_it_stream_through() {
        let up = upstream::start("bo").await;
        let setup = Setup {
            server: "max_body_bytes = 1048576".into(),
            routes: route("bo", "/api", &up.url(), "auth = \"public\""),
            ..Default::default()
        };
        let gw = Gateway::start(setup).await;
        let r = gw.client.post(gw.url("/api/upload")).body(vec![b'a'; 1_048_577]).send().await.unwrap();
        assert_eq!(error_code(r).await, (413, "request.too_large".into()));
        // Chunked (no Content-Length): cut off while streaming.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..40).map(|_| Ok(vec![b'b'; 64 * 1024])).collect();
        let stream = futures_stream(chunks);
        let r =
            gw.client.post(gw.url("/api/upload")).body(reqwest::Body::wrap_stream(stream)).send().await.unwrap();
        assert_eq!(error_code(r).await, (413, "request.too_large".into()));
        let e = echo(&gw, gw.client.post(gw.url("/api/upload")).body(vec![b'c'; 1_000_000])).await;
        assert_eq!(e["body_len"], 1_000_000);
        let r = gw.client.get(gw.url("/api/bytes?n=5000000")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().len(), 5_000_000, "downloads are not limited");
    }
}

fn futures_stream(
    items: Vec<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    struct S(std::vec::IntoIter<Result<Vec<u8>, std::io::Error>>);
    impl futures_core::Stream for S {
        type Item = Result<Vec<u8>, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    S(items.into_iter())
}

both_transports! {
    #[tokio::test]
    async fn http2_clients_are_served_and_proxied_over_http1() {
        let up = upstream::start("bo").await;
        let gw = Gateway::start(Setup::routes(route("bo", "/api", &up.url(), ""))).await;
        let token = gw.access_token(TRADER).await;
        let h2 = gw.http2_client();
        let r = h2.get(gw.url("/api/x")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 200);
        let e: Value = r.json().await.unwrap();
        assert_eq!(header(&e, "x-auth-login"), Some(TRADER.0));
        assert_eq!(header(&e, "x-forwarded-host"), Some(gw.https.to_string().as_str()));
    }
}

both_transports! {
    #[tokio::test]
    async fn plain_listener_serves_behind_a_tls_terminating_balancer() {
        let up = upstream::start("bo").await;
        let setup = Setup {
            server: "plain_listen = \"127.0.0.1:0\"".into(),
            routes: route("bo", "/api", &up.url(), "auth = \"public\""),
            ..Default::default()
        };
        let gw = Gateway::start(setup).await;
        let plain = gw.plain.unwrap();
        let e: Value = reqwest::get(format!("http://{plain}/api/x")).await.unwrap().json().await.unwrap();
        assert_eq!(header(&e, "x-forwarded-proto"), Some("http"));
    }
}

both_transports! {
    #[tokio::test]
    async fn readiness_turns_503_on_shutdown_while_in_flight_requests_finish() {
        let up = upstream::start("slow").await;
        let setup = Setup {
            server: "shutdown_grace = \"5s\"".into(),
            routes: route("slow", "/slow", &up.url(), "auth = \"public\""),
            ..Default::default()
        };
        let mut gw = Gateway::start(setup).await;
        let ready = gw.client.get(gw.admin_url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200);
        let in_flight = tokio::spawn(gw.client.get(gw.url("/slow?ms=800")).send());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let running = gw.running.take().unwrap();
        running.shutdown();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = reqwest::get(gw.admin_url("/readyz")).await.unwrap();
        assert_eq!(r.status(), 503);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], "draining");
        assert_eq!(v["store"]["state"], "up");
        assert!(tokio::net::TcpStream::connect(gw.https).await.is_err(), "main listener still accepting");
        let done = in_flight.await.unwrap().unwrap();
        assert_eq!(done.status(), 200, "in-flight request was cut");
        tokio::time::timeout(Duration::from_secs(5), running.wait()).await.unwrap();
    }
}

both_transports! {
    /// The race the kernel check cannot close: the upstream drops a kept-alive connection just as
    /// a request reaches it, without answering. An idempotent request without a body is sent
    /// again on a new connection; one with a body is not (it may have been acted on).
    #[tokio::test]
    async fn a_request_lost_on_a_reused_connection_is_sent_again_only_if_idempotent() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = answered.clone();
        let _task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let answered = counter.clone();
                tokio::spawn(async move {
                    // Each connection answers its first request, then drops the second unanswered.
                    for turn in 0..2 {
                        let mut head = Vec::new();
                        let mut byte = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n") {
                            if !matches!(s.read(&mut byte).await, Ok(1)) {
                                return;
                            }
                            head.push(byte[0]);
                        }
                        let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                        let len = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                        let mut body = vec![0u8; len];
                        if s.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        if turn == 1 {
                            return;
                        }
                        answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
                    }
                });
            }
        });
        let gw = Gateway::start(Setup::routes(route("pub", "/", &format!("http://{addr}"), "auth = \"public\"")))
            .await;
        let count = || answered.load(std::sync::atomic::Ordering::SeqCst);
        // hyper's path (HTTP/2) and the fast path (HTTP/1.1) keep separate upstream pools.
        for (client, protocol) in [(gw.http2_client(), "HTTP/2"), (gw.client.clone(), "HTTP/1.1")] {
            let before = count();
            assert_eq!(client.get(gw.url("/first")).send().await.unwrap().status(), 200, "{protocol}");
            // The pooled connection is reused and dropped: sent again on a new one. A DELETE
            // without a body is idempotent too.
            let r = client.delete(gw.url("/second")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{protocol}");
            assert_eq!(r.text().await.unwrap(), "ok");
            assert_eq!(count(), before + 2, "{protocol}");
            // A POST with a body on the connection that will drop it: 502, never sent twice.
            let r = client.post(gw.url("/third")).body("data").send().await.unwrap();
            assert_eq!(error_code(r).await, (502, "upstream.unavailable".into()), "{protocol}");
            assert_eq!(count(), before + 2, "{protocol}");
        }
    }
}

/// HTTP/2 clients are hyper's path's alone, and their requests go upstream over bytes
/// (`proxy::exchange`): every upstream framing reaches them as data (chunks taken apart, a
/// close-delimited body ended), request bodies go upstream with their length or chunked, and
/// a body that breaks off or is framed badly is an error to the client, never a short success.
#[tokio::test]
async fn http2_clients_get_every_response_framing_and_send_bodies_of_both_kinds() {
    let up = upstream::start("bo").await;
    let raw = |reply: &'static [u8]| upstream::raw(reply.to_vec());
    let (until_close, ..) = raw(b"HTTP/1.1 200 OK\r\nX-Kind: close\r\n\r\nuntil the end").await;
    let (chunked, ..) = raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n").await;
    let (short, ..) = raw(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..").await;
    let (bad_chunks, ..) =
        raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n").await;
    let (cut_chunks, ..) = raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n").await;
    let mut routes = route("pub", "/", &up.url(), "auth = \"public\"");
    for (name, addr) in [
        ("close", until_close),
        ("chunked", chunked),
        ("short", short),
        ("bad", bad_chunks),
        ("cut", cut_chunks),
    ] {
        routes.push_str(&route(name, &format!("/{name}"), &format!("http://{addr}"), "auth = \"public\""));
    }
    let gw = Gateway::start(Setup::routes(routes)).await;
    let h2 = gw.http2_client();

    let r = h2.get(gw.url("/bytes?n=300000")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.bytes().await.unwrap().len(), 300_000, "a streamed (chunked) body, whole");
    let r = h2.get(gw.url("/chunked/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("transfer-encoding").is_none());
    assert_eq!(r.text().await.unwrap(), "hello world", "chunk sizes, extensions and trailers taken out");
    let r = h2.get(gw.url("/close/x")).send().await.unwrap();
    assert_eq!(r.headers().get("x-kind").unwrap(), "close");
    assert_eq!(r.text().await.unwrap(), "until the end");
    let r = h2.head(gw.url("/json/1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().is_empty());
    let r = h2.get(gw.url("/status/204")).send().await.unwrap();
    assert_eq!(r.status(), 204);

    let e: Value =
        h2.post(gw.url("/post")).body(vec![b'a'; 100_000]).send().await.unwrap().json().await.unwrap();
    assert_eq!(e["body_len"], 100_000);
    assert_eq!(header(&e, "content-length"), Some("100000"));
    let parts: Vec<Result<Vec<u8>, std::io::Error>> = (0..5).map(|i| Ok(vec![b'0' + i; 30_000])).collect();
    let r =
        h2.put(gw.url("/put")).body(reqwest::Body::wrap_stream(futures_stream(parts))).send().await.unwrap();
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["body_len"], 150_000, "a body of unknown length goes upstream chunked");
    assert_eq!(header(&e, "transfer-encoding"), Some("chunked"));
    assert_eq!(header(&e, "content-length"), None);

    for broken in ["/short/x", "/bad/x", "/cut/x"] {
        // The stream is reset: before the client has the head, or inside the body.
        let got = match h2.get(gw.url(broken)).send().await {
            Ok(r) => r.bytes().await.map(|b| b.len()),
            Err(e) => Err(e),
        };
        assert!(got.is_err(), "{broken}: a broken body is an error, not a short success: {got:?}");
    }
    // The connection and the gateway carry on.
    let e: Value = h2.get(gw.url("/after")).send().await.unwrap().json().await.unwrap();
    assert_eq!(e["uri"], "/after");
}

/// An HTTP/2 client sends each cookie as a field of its own; the upstream, spoken to in
/// HTTP/1.1, gets them as one `Cookie` line (RFC 9113 §8.2.3), and the other headers as sent.
#[tokio::test]
async fn http2_cookie_fields_reach_the_upstream_as_one_line() {
    let up = upstream::start("bo").await;
    let gw = Gateway::start(Setup::routes(route("pub", "/", &up.url(), "auth = \"public\""))).await;
    let r = gw
        .http2_client()
        .get(gw.url("/c"))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("x-multi", "one")
        .header("x-multi", "two")
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["headers"]["cookie"], serde_json::json!(["a=1; b=2"]));
    assert_eq!(e["headers"]["x-multi"], serde_json::json!(["one", "two"]));
}
