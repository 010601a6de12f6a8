use serde_json::Value;

use crate::support::*;

async fn setup() -> (Gateway, upstream::Upstream, String) {
    let up = upstream::start("bo").await;
    let routes =
        route("pub", "/public", &up.url(), "auth = \"public\"") + &route("api", "/api", &up.url(), "");
    let gw = Gateway::start(Setup::routes(routes)).await;
    let token = gw.access_token(TRADER).await;
    (gw, up, token)
}

/// What the upstream saw as the request target, or the gateway's status and error code.
async fn outcome(gw: &Gateway, target: &str, token: Option<&str>) -> Result<String, (u16, String)> {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let mut c = RawConn::open(gw).await;
    c.send(format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n").as_bytes())
        .await;
    let r = c.response().await.expect("no response");
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    if r.status == 200 {
        Ok(v["uri"].as_str().unwrap().to_string())
    } else {
        Err((r.status, v["errors"][0].as_str().unwrap_or("").to_string()))
    }
}

both_transports! {
    #[tokio::test]
    async fn traversal_is_normalised_and_the_upstream_sees_what_was_authorised() {
        let (gw, _up, token) = setup().await;
        let missing = Err((401, "token.missing".to_string()));
        assert_eq!(outcome(&gw, "/api/../public", None).await, Ok("/public".into()));
        assert_eq!(outcome(&gw, "/api/%2e%2e/public", None).await, Ok("/public".into()));
        assert_eq!(outcome(&gw, "/api/%2E%2e/public/x", None).await, Ok("/public/x".into()));
        assert_eq!(outcome(&gw, "/public/.%2e/api/x", None).await, missing);
        assert_eq!(outcome(&gw, "/public/../api/x", None).await, missing);
        assert_eq!(outcome(&gw, "//api", None).await, missing);
        assert_eq!(outcome(&gw, "/./api", None).await, missing);
        assert_eq!(outcome(&gw, "/api//x", Some(&token)).await, Ok("/api/x".into()));
        assert_eq!(outcome(&gw, "/./api/./x/", Some(&token)).await, Ok("/api/x/".into()));
        assert_eq!(outcome(&gw, "/%61pi/x?q=%2F", Some(&token)).await, Ok("/api/x?q=%2F".into()));
        assert_eq!(outcome(&gw, "/api/.%2e/", Some(&token)).await, Err((404, "route.none".into())));
    }
}

both_transports! {
    #[tokio::test]
    async fn encoded_separators_nul_and_climbing_out_are_refused() {
        let (gw, up, token) = setup().await;
        let malformed = Err((400, "request.malformed".to_string()));
        for target in [
            "/public%2F..%2Fapi",
            "/public%2f..%2fapi",
            "/public/%5C..%5Capi",
            "/public/%00",
            "/..",
            "/public/../../api",
            "/public/%2e%2e/%2e%2e/api",
            "/public/%zz",
        ] {
            assert_eq!(outcome(&gw, target, Some(&token)).await, malformed, "{target}");
        }
        assert_eq!(up.hits(), 0);
    }
}

both_transports! {
    #[tokio::test]
    async fn path_parameters_and_fragments_never_widen_a_public_route() {
        let (gw, up, _token) = setup().await;
        // `;` is part of the segment: "/public;x" is not "/public".
        assert_eq!(outcome(&gw, "/public;x", None).await, Err((404, "route.none".into())));
        assert_eq!(outcome(&gw, "/public;/../api/x", None).await, Err((401, "token.missing".into())));
        assert_eq!(outcome(&gw, "/api;public", None).await, Err((404, "route.none".into())));
        // A fragment never reaches a server in a valid request; whatever hyper makes of one, the
        // upstream must not receive a path outside /public without a token.
        match outcome(&gw, "/public#/../api/x", None).await {
            Ok(path) => assert!(path.starts_with("/public"), "{path}"),
            Err((status, _)) => assert!(status == 400 || status == 404, "{status}"),
        }
        assert!(up.hits() <= 1);
    }
}

both_transports! {
    #[tokio::test]
    async fn prefixes_match_on_segment_boundaries_only() {
        let (gw, _up, token) = setup().await;
        assert_eq!(outcome(&gw, "/apix", Some(&token)).await, Err((404, "route.none".into())));
        assert_eq!(outcome(&gw, "/publicity", None).await, Err((404, "route.none".into())));
        assert_eq!(outcome(&gw, "/api", Some(&token)).await, Ok("/api".into()));
    }
}

#[tokio::test]
async fn dot_segments_with_parameters_are_refused_on_both_transports() {
    let (gw, up, token) = setup().await;
    let malformed = Err((400, "request.malformed".to_string()));
    let targets = [
        "/public/..;/x",
        "/public/..;/api/x",
        "/public/%2E%2e;/x",
        "/public/%2e%2E;/api/x",
        "/public/..;jsessionid=1/x",
        "/public/.;/x",
        "/public/.;x",
        "/public/%2e;x/y",
        "/public/..%3B/x",
        "/public/x/..;",
    ];
    for target in targets {
        assert_eq!(outcome(&gw, target, None).await, malformed, "{target}");
        assert_eq!(outcome(&gw, target, Some(&token)).await, malformed, "{target} with a token");
    }
    let h2 = gw.http2_client();
    for target in targets {
        let r = h2.get(gw.url(target)).send().await.unwrap();
        assert_eq!(error_code(r).await, (400, "request.malformed".into()), "HTTP/2 {target}");
    }
    assert_eq!(up.hits(), 0);
    // Segments that only look alike are ordinary segments of the public route.
    assert_eq!(outcome(&gw, "/public/...;/x", None).await, Ok("/public/...;/x".into()));
    assert_eq!(outcome(&gw, "/public/..x;/x", None).await, Ok("/public/..x;/x".into()));
    assert_eq!(outcome(&gw, "/public/x..;/y", None).await, Ok("/public/x..;/y".into()));
}

/// The status and error code of a raw HTTP/1.1 GET with this Host value.
async fn with_host(gw: &Gateway, host: &str) -> (u16, String) {
    let mut c = RawConn::open(gw).await;
    c.send(format!("GET /public/x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await;
    let r = c.response().await.expect("no response");
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v["errors"][0].as_str().unwrap_or("").to_string())
}

#[tokio::test]
async fn a_host_port_outside_1_to_65535_is_refused() {
    let (gw, up, _token) = setup().await;
    for host in
        ["localhost:99999", "localhost:65536", "localhost:0", "localhost:00000", "[::1]:0", "localhost:1x"]
    {
        assert_eq!(with_host(&gw, host).await, (400, "request.malformed".into()), "{host}");
    }
    assert_eq!(up.hits(), 0);
    for host in ["localhost:1", "localhost:65535", "localhost:8443", "localhost"] {
        assert_eq!(with_host(&gw, host).await.0, 200, "{host}");
    }
}

#[tokio::test]
async fn readiness_on_the_main_listener_names_no_route_or_upstream() {
    let (gw, _up, _token) = setup().await;
    for c in [gw.client.clone(), gw.http2_client()] {
        let r = c.get(gw.url("/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body = r.text().await.unwrap();
        assert_eq!(body, r#"{"status":"ready"}"#);
    }
    // The admin listener keeps the details.
    let v: Value = reqwest::get(gw.admin_url("/readyz")).await.unwrap().json().await.unwrap();
    let names: Vec<&str> =
        v["routes"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"pub") && names.contains(&"api"), "{v}");
    assert_eq!(v["store"]["state"], "up");
    // Draining: still no details on the main listener, just why not.
    gw.gateway().start_draining();
    let r = gw.client.get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.text().await.unwrap(), r#"{"status":"draining"}"#);
    let r = reqwest::get(gw.admin_url("/readyz")).await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("\"routes\""));
}
