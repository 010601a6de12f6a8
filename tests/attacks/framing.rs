use serde_json::Value;

use crate::support::*;

async fn setup(server: &str) -> (Gateway, upstream::Upstream) {
    let up = upstream::start("bo").await;
    let setup = Setup {
        server: server.into(),
        routes: route("pub", "/public", &up.url(), "auth = \"public\"")
            + &route("api", "/api", &up.url(), ""),
        ..Default::default()
    };
    (Gateway::start(setup).await, up)
}

fn echo_of(r: &RawResponse) -> Value {
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

/// Sends one raw request and returns the response and whether the gateway then closed.
async fn exchange(gw: &Gateway, raw: &str) -> (Option<RawResponse>, bool) {
    let mut c = RawConn::open(gw).await;
    c.send(raw.as_bytes()).await;
    let r = c.response().await;
    let closed = c.is_closed().await;
    (r, closed)
}

both_transports! {
    #[tokio::test]
    async fn identity_and_forwarding_headers_from_clients_are_replaced() {
        let (gw, _up) = setup("").await;
        let token = gw.access_token(TRADER).await;
        let raw = format!(
            "GET /api/x HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nX-Auth-Login: root\r\n\
             x_auth_login: root\r\nX-AUTH-ROLES: admin\r\nX-Forwarded-For: 1.2.3.4\r\nX_Forwarded_For: 1.2.3.4\r\n\
             X-Request-Id: chosen\r\nConnection: close\r\n\r\n"
        );
        let (r, _) = exchange(&gw, &raw).await;
        let e = echo_of(&r.unwrap());
        assert_eq!(e["headers"]["x-auth-login"], serde_json::json!([TRADER.0]));
        assert_eq!(e["headers"]["x-auth-roles"], serde_json::json!(["trader"]));
        assert_eq!(e["headers"]["x-forwarded-for"], serde_json::json!(["127.0.0.1"]));
        assert!(e["headers"].get("x_auth_login").is_none() && e["headers"].get("x_forwarded_for").is_none());
        assert_ne!(e["headers"]["x-request-id"][0], "chosen");
        // Framing headers spelt with `_` never reach an upstream that may read them as framing,
        // on the fast path (HTTP/1.1) and on hyper's (HTTP/2).
        let raw = format!(
            "POST /api/x HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Length: 5\r\n\
             Content_Length: 99\r\nTransfer_Encoding: chunked\r\nX_Custom: kept\r\nConnection: close\r\n\r\nhello"
        );
        let (r, _) = exchange(&gw, &raw).await;
        let e = echo_of(&r.unwrap());
        assert_eq!(e["body"], "hello");
        let names: Vec<&String> = e["headers"].as_object().unwrap().keys().collect();
        assert!(!names.iter().any(|n| *n == "content_length" || *n == "transfer_encoding"), "{names:?}");
        assert_eq!(e["headers"]["x_custom"], serde_json::json!(["kept"]));
        let r = gw
            .http2_client()
            .post(gw.url("/api/x"))
            .bearer_auth(&token)
            .header("content_length", "99")
            .header("transfer_encoding", "chunked")
            .body("hello")
            .send()
            .await
            .unwrap();
        let e: Value = r.json().await.unwrap();
        assert!(
            e["headers"].get("content_length").is_none() && e["headers"].get("transfer_encoding").is_none(),
            "{e}"
        );
    }
}

both_transports! {
    #[tokio::test]
    async fn connection_cannot_strip_the_headers_the_gateway_sets() {
        let (gw, _up) = setup("trusted_proxies = [\"127.0.0.1\"]").await;
        let token = gw.access_token(TRADER).await;
        let raw = format!(
            "GET /api/x HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
             Connection: close, X-Forwarded-For, X-Auth-Login, X-Request-Id\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n"
        );
        let (r, _) = exchange(&gw, &raw).await;
        let e = echo_of(&r.unwrap());
        assert_eq!(e["headers"]["x-forwarded-for"], serde_json::json!(["203.0.113.7, 127.0.0.1"]));
        assert_eq!(e["headers"]["x-auth-login"], serde_json::json!([TRADER.0]));
        assert!(e["headers"]["x-request-id"][0].is_string());
    }
}

both_transports! {
    #[tokio::test]
    async fn ambiguous_content_length_is_refused_and_the_connection_closed() {
        let (gw, up) = setup("").await;
        for raw in [
            "POST /public/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!GET /public/y HTTP/1.1\r\nHost: a\r\n\r\n",
            "POST /public/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!",
            "POST /public/x HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\nhello",
            "POST /public/x HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\nhello",
            "POST /public/x HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello",
            "GET /public/x HTTP/1.1\r\nHost: a\r\n: empty-name\r\n\r\n",
            "GET /public/x HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n folded\r\n\r\n",
            "GET /public/x HTTP/1.1\r\nHost: a\r\nX Space: a\r\n\r\n",
            "POST /public/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nhello",
            "POST /public/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ] {
            let (r, closed) = exchange(&gw, raw).await;
            let r = r.unwrap_or_else(|| panic!("no answer to {raw:?}"));
            assert_eq!(r.status, 400, "{raw:?}");
            assert!(closed, "connection kept open after {raw:?}");
        }
        assert_eq!(up.hits(), 0, "an ambiguous request reached the upstream");
    }
}

both_transports! {
    #[tokio::test]
    async fn content_length_with_chunked_is_refused_before_the_upstream() {
        let (gw, up) = setup("").await;
        // hyper alone would frame this as chunked (RFC 9112 §6.3); like nginx and Envoy we refuse it.
        let raw = "POST /public/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
                   5\r\nhello\r\n0\r\n\r\nGET /public/smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
        let (r, closed) = exchange(&gw, raw).await;
        let r = r.unwrap();
        assert_eq!(r.status, 400);
        assert!(r.head.to_ascii_lowercase().contains("connection: close"), "{}", r.head);
        assert!(closed, "connection kept open after CL+TE");
        assert_eq!(up.hits(), 0, "the request or the smuggled one reached the upstream");
    }
}

both_transports! {
    #[tokio::test]
    async fn identical_duplicate_content_length_is_refused_and_nothing_is_smuggled() {
        let (gw, up) = setup("").await;
        let raw = "POST /public/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello\
                   GET /public/smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
        let (r, closed) = exchange(&gw, raw).await;
        let r = r.unwrap();
        assert_eq!(r.status, 400);
        assert!(String::from_utf8_lossy(&r.body).contains("request.malformed"));
        assert!(closed, "connection kept open after a repeated Content-Length");
        assert_eq!(up.hits(), 0);
    }
}

both_transports! {
    #[tokio::test]
    async fn an_ambiguous_request_behind_good_pipelined_ones_is_the_one_refused() {
        let (gw, up) = setup("").await;
        // Two good requests with bodies of both framings (one body holds a fake head), then the
        // ambiguous one, then one that must never be read.
        let fake = "GET /public/fake HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n";
        let raw = format!(
            "POST /public/a HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{fake}\
             POST /public/b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
             POST /public/c HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi\
             GET /public/smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
            fake.len()
        );
        let mut c = RawConn::open(&gw).await;
        c.send(raw.as_bytes()).await;
        let first = c.response().await.unwrap();
        assert_eq!((first.status, echo_of(&first)["body"].as_str().unwrap_or("")), (200, fake));
        let second = c.response().await.unwrap();
        assert_eq!((second.status, echo_of(&second)["body"].as_str().unwrap_or("")), (200, "hello"));
        assert_eq!(c.response().await.unwrap().status, 400);
        assert!(c.is_closed().await);
        assert_eq!(up.hits(), 2, "the upstream saw more than the two good requests");
    }
}

both_transports! {
    #[tokio::test]
    async fn oversized_heads_get_431_or_414() {
        let (gw, up) = setup("max_header_bytes = 16384").await;
        let long_header = format!("GET /public/x HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "a".repeat(40_000));
        let (r, closed) = exchange(&gw, &long_header).await;
        assert_eq!(r.unwrap().status, 431);
        assert!(closed);
        let long_line = format!("GET /public/{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(40_000));
        let (r, closed) = exchange(&gw, &long_line).await;
        let status = r.unwrap().status;
        assert!(status == 431 || status == 414, "{status}");
        assert!(closed);
        let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
        let (r, _) = exchange(&gw, &format!("GET /public/x HTTP/1.1\r\nHost: a\r\n{many}\r\n")).await;
        assert_eq!(r.unwrap().status, 431);
        assert_eq!(up.hits(), 0);
    }
}

both_transports! {
    #[tokio::test]
    async fn two_authorizations_are_refused_never_first_wins() {
        let (gw, up) = setup("").await;
        let good = gw.access_token(TRADER).await;
        let raw = format!(
            "GET /api/x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {good}\r\nAuthorization: Bearer other\r\nConnection: close\r\n\r\n"
        );
        let (r, _) = exchange(&gw, &raw).await;
        assert_eq!(r.unwrap().status, 401);
        let raw = format!(
            "GET /api/x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {good}, Bearer other\r\nConnection: close\r\n\r\n"
        );
        let (r, _) = exchange(&gw, &raw).await;
        assert_eq!(r.unwrap().status, 401);
        assert_eq!(up.hits(), 0);
        // A `token` header (the refresh token's, which BO clients set by default) changes nothing
        // and is not forwarded (SPEC §2).
        let r = gw
            .client
            .get(gw.url("/api/x"))
            .bearer_auth(&good)
            .header("token", "refresh-token")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let echo: Value = r.json().await.unwrap();
        assert!(!echo.to_string().contains("refresh-token"), "{echo}");
        assert_eq!(up.hits(), 1);
    }
}

async fn status_of(gw: &Gateway, raw: &str) -> RawResponse {
    let mut c = RawConn::open(gw).await;
    c.send(raw.as_bytes()).await;
    c.response().await.unwrap_or_else(|| panic!("no answer to {raw:?}"))
}

both_transports! {
    #[tokio::test]
    async fn transfer_codings_other_than_one_chunked_are_refused() {
        let (gw, up) = setup("").await;
        // hyper removes the chunked framing: whatever else was named would reach the upstream as if
        // it were the content.
        for te in ["gzip, chunked", "chunked, chunked", "chunked\r\nTransfer-Encoding: chunked"] {
            let raw = format!(
                "POST /public/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            );
            let (r, closed) = exchange(&gw, &raw).await;
            let r = r.unwrap_or_else(|| panic!("no answer to {te:?}"));
            assert_eq!(r.status, 400, "{te:?}");
            assert!(String::from_utf8_lossy(&r.body).contains("request.malformed"), "{te:?}");
            assert!(closed, "connection kept open after {te:?}");
        }
        assert_eq!(up.hits(), 0);
    }
}

both_transports! {
    #[tokio::test]
    async fn a_get_body_sent_chunked_reaches_the_upstream() {
        let (gw, _up) = setup("").await;
        for method in ["GET", "DELETE", "POST"] {
            let raw = format!(
                "{method} /public/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                 5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            );
            let r = status_of(&gw, &raw).await;
            assert_eq!((r.status, echo_of(&r)["body"].as_str()), (200, Some("hello world")), "{method}");
        }
    }
}

both_transports! {
    #[tokio::test]
    async fn a_refused_connect_closes_the_connection() {
        let (gw, up) = setup("").await;
        let raw = "CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\nGET /public/tunnelled HTTP/1.1\r\nHost: a\r\n\r\n";
        let (r, closed) = exchange(&gw, raw).await;
        assert_eq!(r.unwrap().status, 400);
        assert!(closed, "the bytes after a refused CONNECT were read as a request");
        assert_eq!(up.hits(), 0);
    }
}

both_transports! {
    /// Routes are chosen by host, so a host the gateway cannot read one way only is refused: two
    /// Host headers, userinfo, lists and paths in it, or none at all in HTTP/1.1 (RFC 9112 §3.2).
    #[tokio::test]
    async fn host_headers_are_validated_before_routing() {
        let up = upstream::start("bo").await;
        let setup = Setup {
            routes: route("hosted", "/public", &up.url(), "host = \"api.example\"")
                + &route("pub", "/public", &up.url(), "auth = \"public\"")
                + &route("get", "/getonly", &up.url(), "auth = \"public\"\nmethods = [\"GET\"]"),
            ..Default::default()
        };
        let gw = Gateway::start(setup).await;
        for host_lines in [
            "Host: other\r\nHost: api.example\r\n",
            "Host: api.example\r\nHost: api.example\r\n",
            "",
            "Host: api.example/x\r\n",
            "Host: other,api.example\r\n",
            "Host: u@api.example\r\n",
            "Host: api example\r\n",
        ] {
            let r =
                status_of(&gw, &format!("GET /public/x HTTP/1.1\r\n{host_lines}Connection: close\r\n\r\n")).await;
            assert_eq!(r.status, 400, "{host_lines:?}");
            assert!(String::from_utf8_lossy(&r.body).contains("request.malformed"), "{host_lines:?}");
        }
        let r = status_of(&gw, "GET http://u@api.example/public/x HTTP/1.1\r\nHost: api.example\r\n\r\n").await;
        assert_eq!(r.status, 400, "userinfo in an absolute-form target");
        // The host route (auth required) for its name in any case, with a port or a final dot.
        for host in ["api.example", "API.Example:8443", "api.example."] {
            let r = status_of(&gw, &format!("GET /public/x HTTP/1.1\r\nHost: {host}\r\n\r\n")).await;
            assert_eq!(r.status, 401, "{host}");
        }
        let r = status_of(&gw, "GET http://api.example/public/x HTTP/1.1\r\nHost: other\r\n\r\n").await;
        assert_eq!(r.status, 401, "an absolute-form target's authority replaces Host");
        assert_eq!(status_of(&gw, "GET /public/x HTTP/1.1\r\nHost: other\r\n\r\n").await.status, 200);
        assert_eq!(status_of(&gw, "GET /public/x HTTP/1.0\r\n\r\n").await.status, 200, "HTTP/1.0 needs no Host");
        // HEAD is allowed wherever GET is.
        assert_eq!(status_of(&gw, "HEAD /getonly HTTP/1.1\r\nHost: a\r\n\r\n").await.status, 200);
        let r = status_of(&gw, "POST /getonly HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(r.status, 405);
        assert!(r.head.contains("allow: get, head"), "{}", r.head);
    }
}

both_transports! {
    /// Heads nobody can read get the SPEC's error body (hyper's own answer to them is empty).
    #[tokio::test]
    async fn unreadable_heads_get_the_spec_error_body_and_a_close() {
        let (gw, up) = setup("max_header_bytes = 16384\nmax_headers = 50").await;
        let many: String = (0..60).map(|i| format!("X-H{i}: v\r\n")).collect();
        let big = format!("GET /public/x HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
        for (raw, status, code) in [
            (
                "POST /public/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello".to_string(),
                400,
                "request.malformed",
            ),
            (
                "POST /public/x HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello".to_string(),
                400,
                "request.malformed",
            ),
            (
                "GET /public/x HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n folded\r\n\r\n".to_string(),
                400,
                "request.malformed",
            ),
            ("GET /public/x HTTP/1.1\r\nHost: a\r\nX\x01Ctl: a\r\n\r\n".to_string(), 400, "request.malformed"),
            ("GET /public/x HTTP/1.2\r\nHost: a\r\n\r\n".to_string(), 400, "request.malformed"),
            ("GET /public/x y HTTP/1.1\r\nHost: a\r\n\r\n".to_string(), 400, "request.malformed"),
            (
                "POST /public/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n".to_string(),
                400,
                "request.malformed",
            ),
            (format!("GET /public/x HTTP/1.1\r\nHost: a\r\n{many}\r\n"), 431, "request.too_large"),
            (big, 431, "request.too_large"),
        ] {
            let (r, closed) = exchange(&gw, &raw).await;
            let r = r.unwrap_or_else(|| panic!("no answer to {:?}", &raw[..40]));
            assert_eq!(r.status, status, "{:?}", &raw[..60.min(raw.len())]);
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            assert_eq!(body["errors"][0], code, "{:?}", &raw[..60.min(raw.len())]);
            assert!(r.head.contains("x-request-id:"), "{}", r.head);
            assert!(closed);
        }
        // HTTP/2 (hyper's path) applies the same header count.
        let mut req = gw.http2_client().get(gw.url("/public/x"));
        for i in 0..60 {
            req = req.header(format!("x-h{i}"), "v");
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(error_code(r).await, (431, "request.too_large".into()));
        assert_eq!(up.hits(), 0);
    }
}

both_transports! {
    /// A chunked body whose framing breaks is the client's fault: 400, not the upstream's 502.
    #[tokio::test]
    async fn bad_chunk_framing_is_refused_as_malformed_not_blamed_on_the_upstream() {
        let (gw, _up) = setup("").await;
        for chunks in
            ["zz\r\nhello\r\n0\r\n\r\n", "-5\r\nhello\r\n0\r\n\r\n", "FFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n"]
        {
            let raw = format!("POST /public/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}");
            let (r, closed) = exchange(&gw, &raw).await;
            let r = r.unwrap_or_else(|| panic!("no answer to {chunks:?}"));
            assert_eq!(r.status, 400, "{chunks:?}");
            assert!(String::from_utf8_lossy(&r.body).contains("request.malformed"), "{chunks:?}");
            assert!(closed, "{chunks:?}");
        }
    }
}

both_transports! {
    /// hyper checks its head size limit only while a head is incomplete; after a large body its
    /// buffer is large enough to take an oversized head in one read. The limit still holds.
    #[tokio::test]
    async fn the_head_size_limit_holds_after_a_large_chunked_body() {
        let (gw, up) = setup("").await;
        let mut c = RawConn::open(&gw).await;
        let body = "a".repeat(300_000);
        let first = format!(
            "POST /public/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        );
        let second = format!("GET /public/y HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "b".repeat(100_000));
        c.send(first.as_bytes()).await;
        assert_eq!(c.response().await.unwrap().status, 200);
        c.send(second.as_bytes()).await;
        let r = c.response().await.expect("an answer to the oversized head");
        assert_eq!(r.status, 431);
        assert!(String::from_utf8_lossy(&r.body).contains("request.too_large"), "{}", r.head);
        assert!(c.is_closed().await);
        assert_eq!(up.hits(), 1, "the oversized request reached the upstream");
    }
}
