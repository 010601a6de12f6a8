//! SPEC §2 CORS (`[cors]`, route key `cors`): preflights answered by the gateway, the grant on
//! every answer to an allowed origin (upstream's, the gateway's errors, the auth endpoints), and
//! nothing for other origins or routes with `cors = false`. The real-browser test is in
//! `tests/cors_browser.rs`.

#[macro_use]
mod support;

use reqwest::Method;
use reqwest::header::HeaderMap;
use support::*;

const ALLOWED: &str = "https://trader.example.com";
const OTHER: &str = "https://evil.example.net";

fn cors_lines() -> String {
    format!(
        "allowed_origins = [\"{ALLOWED}\", \"http://127.0.0.1:9\"]\nallowed_methods = [\"GET\", \"POST\"]\n\
         allowed_headers = [\"Authorization\", \"Content-Type\"]\nallow_credentials = true\nmax_age = \"5m\"\n"
    )
}

async fn start(routes: String) -> Gateway {
    Gateway::start(Setup { routes, cors: cors_lines(), ..Default::default() }).await
}

fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn all(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name).iter().map(|v| v.to_str().unwrap().to_string()).collect()
}

/// The grant of an allowed origin, as every answer to it carries.
fn assert_granted(h: &HeaderMap) {
    assert_eq!(get(h, "access-control-allow-origin"), Some(ALLOWED), "{h:?}");
    assert_eq!(get(h, "access-control-allow-credentials"), Some("true"), "{h:?}");
    assert_eq!(get(h, "access-control-expose-headers"), Some("X-Request-Id"), "{h:?}");
    assert!(all(h, "vary").iter().any(|v| v == "Origin"), "{h:?}");
}

fn assert_no_cors(h: &HeaderMap) {
    assert!(!h.keys().any(|k| k.as_str().starts_with("access-control-")), "no CORS headers: {h:?}");
}

fn preflight(gw: &Gateway, path: &str, origin: &str) -> reqwest::RequestBuilder {
    gw.client
        .request(Method::OPTIONS, gw.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
}

both_transports! {
    #[tokio::test]
    async fn a_preflight_is_answered_by_the_gateway_without_a_token() {
        let up = upstream::start("bo").await;
        // `methods` without OPTIONS: the preflight asks about GET, not about itself.
        let gw = start(route("bo", "/api", &up.url(), "methods = [\"GET\"]")).await;
        let r = preflight(&gw, "/api/accounts", ALLOWED).send().await.unwrap();
        assert_eq!(r.status(), 204);
        let h = r.headers();
        assert_granted(h);
        assert_eq!(get(h, "access-control-allow-methods"), Some("GET, POST"));
        assert_eq!(get(h, "access-control-allow-headers"), Some("Authorization, Content-Type"));
        assert_eq!(get(h, "access-control-max-age"), Some("300"));
        assert!(h.contains_key("x-request-id"));
        // An auth endpoint, and a non-default-port origin.
        let r = preflight(&gw, "/auth/token", "http://127.0.0.1:9").send().await.unwrap();
        assert_eq!(r.status(), 204);
        assert_eq!(get(r.headers(), "access-control-allow-origin"), Some("http://127.0.0.1:9"));
        assert_eq!(up.hits(), 0, "never forwarded");
    }
}

both_transports! {
    #[tokio::test]
    async fn a_preflight_from_another_origin_is_refused_without_cors_headers() {
        let up = upstream::start("bo").await;
        let gw = start(route("bo", "/api", &up.url(), "auth = \"public\"")).await;
        for origin in [OTHER, "null", "https://trader.example.com.evil.net", "HTTPS://TRADER.EXAMPLE.COM"] {
            let r = preflight(&gw, "/api/x", origin).send().await.unwrap();
            assert_no_cors(r.headers());
            assert_eq!(error_code(r).await, (403, "forbidden".into()), "{origin}");
        }
        let r = preflight(&gw, "/auth/token", OTHER).send().await.unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(up.hits(), 0, "never forwarded");
        // Without Access-Control-Request-Method it is a plain OPTIONS request: forwarded.
        let r = gw.client.request(Method::OPTIONS, gw.url("/api/x")).header("origin", ALLOWED).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_granted(r.headers());
        assert_eq!(up.hits(), 1);
    }
}

both_transports! {
    #[tokio::test]
    async fn upstream_answers_carry_the_grant_for_allowed_origins_only() {
        let up = upstream::start("bo").await;
        let gw = start(route("bo", "/api", &up.url(), "")).await;
        let token = gw.access_token(TRADER).await;
        let ok = |origin: Option<&str>| {
            let mut b = gw.client.get(gw.url("/api/accounts")).bearer_auth(&token);
            if let Some(o) = origin {
                b = b.header("origin", o);
            }
            b.send()
        };
        let r = ok(Some(ALLOWED)).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_granted(r.headers());
        for origin in [Some(OTHER), None] {
            let r = ok(origin).await.unwrap();
            assert_eq!(r.status(), 200);
            assert_no_cors(r.headers());
            // A cache must not hand one origin's answer to another.
            assert_eq!(all(r.headers(), "vary"), ["Origin"]);
        }
    }
}

both_transports! {
    #[tokio::test]
    async fn the_gateways_own_errors_carry_the_grant() {
        let up = upstream::start("bo").await;
        let routes = route("bo", "/api", &up.url(), "") + &route("g", "/get-only", &up.url(), "methods = [\"GET\"]");
        let gw = start(routes).await;
        let send = |path: &str, origin: &str| gw.client.get(gw.url(path)).header("origin", origin).send();
        let r = send("/api/accounts", ALLOWED).await.unwrap();
        assert_granted(r.headers());
        assert_eq!(get(r.headers(), "www-authenticate"), Some("Bearer"));
        assert_eq!(error_code(r).await, (401, "token.missing".into()));
        let r = send("/api/accounts", OTHER).await.unwrap();
        assert_no_cors(r.headers());
        assert_eq!(error_code(r).await, (401, "token.missing".into()));
        let r = send("/nowhere", ALLOWED).await.unwrap();
        assert_granted(r.headers());
        assert_eq!(error_code(r).await, (404, "route.none".into()));
        let r = gw.client.delete(gw.url("/get-only/x")).header("origin", ALLOWED).send().await.unwrap();
        assert_granted(r.headers());
        assert_eq!(error_code(r).await, (405, "method.not_allowed".into()));
        let r = send("/api/a%2fb", ALLOWED).await.unwrap();
        assert_granted(r.headers());
        assert_eq!(r.status(), 400);
    }
}

both_transports! {
    #[tokio::test]
    async fn auth_endpoints_carry_the_grant() {
        let up = upstream::start("bo").await;
        let gw = start(route("bo", "/api", &up.url(), "")).await;
        let login = |password: &str| {
            let body = serde_json::json!({"login": TRADER.0, "password": password});
            gw.client.post(gw.url("/auth/token")).header("origin", ALLOWED).json(&body).send()
        };
        let r = login(TRADER.1).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_granted(r.headers());
        let r = login("wrong").await.unwrap();
        assert_granted(r.headers());
        assert_eq!(error_code(r).await, (401, "1.2.0.11".into()));
        let r = gw.client.get(gw.url("/healthz")).header("origin", ALLOWED).send().await.unwrap();
        assert_granted(r.headers());
    }
}

both_transports! {
    #[tokio::test]
    async fn a_route_with_cors_off_is_left_alone() {
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nAccess-Control-Allow-Origin: *\r\n\r\nok".to_vec();
        let (addr, hits, _task) = upstream::raw(reply).await;
        let gw = start(route("own", "/own", &format!("http://{addr}"), "auth = \"public\"\ncors = false")).await;
        let r = preflight(&gw, "/own/x", ALLOWED).send().await.unwrap();
        assert_eq!(r.status(), 200, "forwarded as any request");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(get(r.headers(), "access-control-allow-origin"), Some("*"), "the upstream's own");
        assert!(!r.headers().contains_key("vary"));
        assert!(!r.headers().contains_key("access-control-allow-credentials"));
    }
}

both_transports! {
    #[tokio::test]
    async fn a_route_with_cors_off_gets_no_grant_on_gateway_errors() {
        let up = upstream::start("bo").await;
        let gw = start(route("bo", "/api", &up.url(), "cors = false\nmethods = [\"GET\"]")).await;
        let r = gw.client.get(gw.url("/api/x")).header("origin", ALLOWED).send().await.unwrap();
        assert_no_cors(r.headers());
        assert!(!r.headers().contains_key("vary"));
        assert_eq!(error_code(r).await, (401, "token.missing".into()));
        let r = preflight(&gw, "/api/x", ALLOWED).send().await.unwrap();
        assert_no_cors(r.headers());
        assert_eq!(error_code(r).await, (405, "method.not_allowed".into()), "a preflight is a request here");
        let r = gw.client.delete(gw.url("/api/x")).header("origin", ALLOWED).send().await.unwrap();
        assert_no_cors(r.headers());
        assert_eq!(r.status(), 405);
        assert_eq!(up.hits(), 0);
    }
}

both_transports! {
    #[tokio::test]
    async fn the_upstreams_access_control_headers_are_replaced_and_vary_appended() {
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nAccess-Control-Allow-Origin: *\r\n\
                      access-control-allow-methods: PUT\r\nAccess-Control-Expose-Headers: X-Secret\r\n\
                      Vary: Accept-Encoding\r\n\r\nok"
            .to_vec();
        let (addr, _hits, _task) = upstream::raw(reply).await;
        let gw = start(route("up", "/up", &format!("http://{addr}"), "auth = \"public\"")).await;
        let r = gw.client.get(gw.url("/up/x")).header("origin", ALLOWED).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let h = r.headers();
        assert_granted(h);
        assert_eq!(all(h, "access-control-allow-origin"), [ALLOWED]);
        assert_eq!(all(h, "access-control-expose-headers"), ["X-Request-Id"]);
        assert!(!h.contains_key("access-control-allow-methods"));
        assert_eq!(all(h, "vary"), ["Accept-Encoding", "Origin"]);
        // Another origin: the upstream's grant is gone too (the gateway's policy wins).
        let r = gw.client.get(gw.url("/up/x")).header("origin", OTHER).send().await.unwrap();
        assert_no_cors(r.headers());
        assert_eq!(r.text().await.unwrap(), "ok");
    }
}

both_transports! {
    #[tokio::test]
    async fn without_cors_nothing_changes() {
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nAccess-Control-Allow-Origin: *\r\n\r\nok".to_vec();
        let (addr, hits, _task) = upstream::raw(reply).await;
        let gw = Gateway::start(Setup::routes(route("up", "/up", &format!("http://{addr}"), "auth = \"public\""))).await;
        let r = preflight(&gw, "/up/x", ALLOWED).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1, "forwarded");
        assert_eq!(get(r.headers(), "access-control-allow-origin"), Some("*"));
        assert!(!r.headers().contains_key("vary"));
        let r = preflight(&gw, "/auth/token", ALLOWED).send().await.unwrap();
        assert_eq!(r.status(), 405, "the auth endpoints' OPTIONS as before");
    }
}

#[test]
fn bad_cors_settings_are_refused_at_start() {
    for (lines, key, why) in [
        ("allowed_origins = [\"https://a.example/\"]", "cors.allowed_origins", "https://a.example/"),
        ("allowed_origins = [\"a.example\"]", "cors.allowed_origins", "a.example"),
        ("allowed_origins = [\"*\"]\nallow_credentials = true", "cors.allow_credentials", "\"*\""),
        (
            "allowed_origins = [\"https://a.example\"]\nallowed_methods = [\"G T\"]",
            "cors.allowed_methods",
            "G T",
        ),
        (
            "allowed_origins = [\"https://a.example\"]\nallowed_headers = [\"a:b\"]",
            "cors.allowed_headers",
            "a:b",
        ),
        ("allowed_origins = [\"https://a.example\"]\nmax_age = \"10\"", "cors.max_age", "unit"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let setup = Setup { cors: lines.into(), ..Default::default() };
        let path = write_config(dir.path(), &setup);
        let e = bo_gateway::Runtime::load(&path).err().unwrap_or_else(|| panic!("{lines} accepted"));
        assert_eq!(e.key, key, "{lines}: {e}");
        assert!(e.to_string().contains(why), "{lines}: {e}");
        assert!(e.to_string().contains("gateway.toml"), "{e}");
    }
}

both_transports! {
    #[tokio::test]
    async fn upstream_failures_and_limits_carry_the_grant() {
        let up = upstream::start("bo").await;
        let routes = route("bo", "/api", &up.url(), "auth = \"public\"")
            + &route("down", "/down", &format!("http://{}", refused_addr()), "auth = \"public\"");
        let setup = Setup { server: "max_body_bytes = 16".into(), routes, cors: cors_lines(), ..Default::default() };
        let gw = Gateway::start(setup).await;
        let r = gw.client.get(gw.url("/down/x")).header("origin", ALLOWED).send().await.unwrap();
        assert_granted(r.headers());
        assert_eq!(error_code(r).await, (502, "upstream.unavailable".into()));
        let r = gw.client.post(gw.url("/api/x")).header("origin", ALLOWED).body(vec![b'x'; 100]).send().await.unwrap();
        assert_granted(r.headers());
        assert_eq!(error_code(r).await, (413, "request.too_large".into()));
    }
}

#[tokio::test]
async fn http2_answers_follow_the_same_rule() {
    let up = upstream::start("bo").await;
    let gw = start(route("bo", "/api", &up.url(), "")).await;
    let h2 = gw.http2_client();
    let r = h2
        .request(Method::OPTIONS, gw.url("/api/x"))
        .header("origin", ALLOWED)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 204);
    assert_granted(r.headers());
    assert_eq!(get(r.headers(), "access-control-max-age"), Some("300"));
    let r = h2.get(gw.url("/api/x")).header("origin", ALLOWED).send().await.unwrap();
    assert_granted(r.headers());
    assert_eq!(error_code(r).await, (401, "token.missing".into()));
    let r = h2.get(gw.url("/api/x")).header("origin", OTHER).send().await.unwrap();
    assert_no_cors(r.headers());
    assert_eq!(up.hits(), 0);
}
