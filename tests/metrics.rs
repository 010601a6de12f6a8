//! `/metrics` on the admin listener: every family appears and moves with traffic.

mod support;

use serde_json::json;
use support::*;

/// The value of the first sample whose line starts with `prefix` (name plus labels).
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix} in\n{text}"))
}

async fn scrape(gw: &Gateway) -> String {
    let r = reqwest::get(gw.admin_url("/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    r.text().await.unwrap()
}

#[tokio::test]
async fn every_family_appears_and_moves() {
    let up = upstream::start("bo").await;
    let gw = Gateway::start(Setup::routes(route("bo", "/api", &up.url(), ""))).await;
    let before = scrape(&gw).await;
    for family in [
        "bo_gateway_requests_total",
        "bo_gateway_request_duration_seconds",
        "bo_gateway_upstream_duration_seconds",
        "bo_gateway_auth_total",
        "bo_gateway_logins_total",
        "bo_gateway_refreshes_total",
        "bo_gateway_ott_issued_total",
        "bo_gateway_ott_verified_total",
        "bo_gateway_token_cache_hits_total",
        "bo_gateway_token_cache_misses_total",
        "bo_gateway_token_cache_entries",
        "bo_gateway_upstream_healthy",
        "bo_gateway_open_connections",
        "bo_gateway_fast_path_handoffs_total",
        "bo_gateway_store_duration_seconds",
        "bo_gateway_store_errors_total",
        "bo_gateway_log_lines_dropped_total",
    ] {
        assert!(
            before.contains(&format!("# TYPE {}", family.trim_end_matches("_total"))),
            "{family} missing:\n{before}"
        );
    }
    assert_eq!(sample(&before, "bo_gateway_logins_total{outcome=\"ok\"}"), 0.0);

    let pair = gw.login(TRADER).await;
    let access = pair["accessToken"].as_str().unwrap();
    let bad = gw.try_login("x", "y").await;
    assert_eq!(bad.status(), 401);
    for _ in 0..3 {
        assert_eq!(gw.client.get(gw.url("/api/x")).bearer_auth(access).send().await.unwrap().status(), 200);
    }
    assert_eq!(gw.client.get(gw.url("/api/x")).send().await.unwrap().status(), 401);
    assert_eq!(gw.client.get(gw.url("/nowhere")).bearer_auth(access).send().await.unwrap().status(), 404);
    let r = gw.refresh(pair["refreshToken"].as_str().unwrap()).await;
    assert_eq!(r.status(), 200);
    let ott: serde_json::Value = gw.issue_ott(access).await;
    for _ in 0..2 {
        gw.client
            .post(gw.url("/external/token/verify"))
            .json(&json!({"token": ott["token"]}))
            .send()
            .await
            .unwrap();
    }

    let after = scrape(&gw).await;
    assert_eq!(sample(&after, "bo_gateway_requests_total{route=\"bo\",method=\"GET\",class=\"2xx\"}"), 3.0);
    assert_eq!(sample(&after, "bo_gateway_requests_total{route=\"bo\",method=\"GET\",class=\"4xx\"}"), 1.0);
    assert!(
        sample(&after, "bo_gateway_requests_total{route=\"-gateway\",method=\"POST\",class=\"2xx\"}") >= 3.0
    );
    assert_eq!(sample(&after, "bo_gateway_request_duration_seconds_count{route=\"bo\"}"), 4.0);
    assert_eq!(sample(&after, "bo_gateway_upstream_duration_seconds_count{route=\"bo\"}"), 3.0);
    assert!(sample(&after, "bo_gateway_auth_total{outcome=\"ok\"}") >= 4.0);
    assert_eq!(sample(&after, "bo_gateway_auth_total{outcome=\"token.missing\"}"), 1.0);
    assert_eq!(sample(&after, "bo_gateway_logins_total{outcome=\"ok\"}"), 1.0);
    assert_eq!(sample(&after, "bo_gateway_logins_total{outcome=\"1.2.0.11\"}"), 1.0);
    assert_eq!(sample(&after, "bo_gateway_refreshes_total{outcome=\"ok\"}"), 1.0);
    assert_eq!(sample(&after, "bo_gateway_ott_issued_total"), 1.0);
    assert_eq!(sample(&after, "bo_gateway_ott_verified_total{valid=\"true\"}"), 1.0);
    assert_eq!(sample(&after, "bo_gateway_ott_verified_total{valid=\"false\"}"), 1.0);
    assert!(sample(&after, "bo_gateway_token_cache_hits_total") >= 2.0);
    assert!(sample(&after, "bo_gateway_token_cache_misses_total") >= 1.0);
    assert!(sample(&after, "bo_gateway_token_cache_entries") >= 1.0);
    assert_eq!(
        sample(&after, &format!("bo_gateway_upstream_healthy{{route=\"bo\",upstream=\"{}\"}}", up.url())),
        1.0
    );
    assert!(sample(&after, "bo_gateway_open_connections") >= 1.0);
    assert!(sample(&after, "bo_gateway_store_duration_seconds_count{op=\"rotate_refresh\"}") >= 1.0);
    assert_eq!(sample(&after, "bo_gateway_store_errors_total{op=\"rotate_refresh\"}"), 0.0);
    // /metrics is not on the main listener.
    assert_eq!(gw.client.get(gw.url("/metrics")).send().await.unwrap().status(), 404);
}
