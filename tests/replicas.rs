//! Two gateways on one Redis, as two replicas behind a load balancer: whatever one of them does
//! to a session, the other sees.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::redis as test_redis;
use support::{ADMIN, Gateway, Setup, TRADER, error_code, route, upstream};

struct Pair {
    a: Gateway,
    b: Gateway,
    _up: upstream::Upstream,
    _keys: tempfile::TempDir,
    url: String,
    prefix: String,
}

impl Pair {
    async fn finish(self) {
        test_redis::cleanup(&self.url, &self.prefix).await;
    }
}

async fn two_replicas() -> Option<Pair> {
    let url = test_redis::shared().await?;
    let prefix = test_redis::unique_prefix();
    let up = upstream::start("bo").await;
    let keys = tempfile::tempdir().unwrap();
    let setup = Setup {
        store: format!("kind = \"redis\"\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\n"),
        key_dir: Some(keys.path().to_path_buf()),
        routes: route("api", "/api", &up.url(), ""),
        ..Default::default()
    };
    // One after the other: the first creates the shared signing key, the second loads it.
    let a = Gateway::start(setup.clone()).await;
    let b = Gateway::start(setup).await;
    Some(Pair { a, b, _up: up, _keys: keys, url, prefix })
}

async fn call(gw: &Gateway, token: &str) -> u16 {
    gw.client.get(gw.url("/api/x")).bearer_auth(token).send().await.unwrap().status().as_u16()
}

async fn refresh(gw: &Gateway, rt: &str) -> reqwest::Response {
    gw.refresh(rt).await
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_on_a_calls_through_b_and_refresh_reuse_is_seen_across() {
    let Some(p) = two_replicas().await else { return };
    let pair = p.a.login(TRADER).await;
    assert_eq!(call(&p.b, &s(&pair, "accessToken")).await, 200, "a token from A works on B");

    let r = refresh(&p.b, &s(&pair, "refreshToken")).await;
    assert_eq!(r.status(), 200, "A's refresh token refreshes on B");
    let next: Value = r.json().await.unwrap();
    assert_eq!(call(&p.a, &s(&next, "accessToken")).await, 200);

    // The spent token presented to A within the grace, its successor unspent: the same
    // successor, as B issued it.
    let r = refresh(&p.a, &s(&pair, "refreshToken")).await;
    assert_eq!(r.status(), 200, "the reuse grace holds across replicas");
    let again: Value = r.json().await.unwrap();
    assert_eq!(s(&again, "refreshToken"), s(&next, "refreshToken"));

    // The successor spent on B; the first token presented to A again: theft. The whole session
    // dies on both replicas.
    let third: Value = refresh(&p.b, &s(&next, "refreshToken")).await.json().await.unwrap();
    assert_eq!(
        error_code(refresh(&p.a, &s(&pair, "refreshToken")).await).await,
        (401, "token.reused".into())
    );
    assert_eq!(
        error_code(refresh(&p.b, &s(&third, "refreshToken")).await).await,
        (401, "token.invalid".into())
    );
    let deadline = Instant::now() + Duration::from_secs(1);
    while call(&p.b, &s(&next, "accessToken")).await != 401 {
        assert!(Instant::now() < deadline, "B still accepts a token of the revoked session");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ott_from_a_verifies_once_across_a_and_b() {
    let Some(p) = two_replicas().await else { return };
    let access = p.a.access_token(TRADER).await;
    let r = p.a.client.post(p.a.url("/external/token")).bearer_auth(&access).send().await.unwrap();
    let ott = s(&r.json::<Value>().await.unwrap(), "token");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32 {
        let gw = if i % 2 == 0 { &p.a } else { &p.b };
        let (client, url, ott) = (gw.client.clone(), gw.url("/external/token/verify"), ott.clone());
        tasks.spawn(async move {
            let r = client.post(url).json(&serde_json::json!({ "token": ott })).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        });
    }
    let answers = tasks.join_all().await;
    let valid: Vec<_> = answers.iter().filter(|v| v["valid"] == true).collect();
    assert_eq!(valid.len(), 1, "{answers:?}");
    assert_eq!(valid[0]["login"], TRADER.0);
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logout_on_a_stops_the_token_on_b_within_one_second() {
    let Some(p) = two_replicas().await else { return };
    let access = p.a.access_token(TRADER).await;
    // In B's verified-token cache before the logout, so only the revocation can stop it.
    assert_eq!(call(&p.b, &access).await, 200);
    let r = p.a.client.post(p.a.url("/auth/token/revoke")).bearer_auth(&access).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let revoked_at = Instant::now();
    while call(&p.b, &access).await != 401 {
        assert!(revoked_at.elapsed() < Duration::from_secs(1), "B still accepts a logged-out token");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("logout reached B after {:?}", revoked_at.elapsed());
    assert_eq!(call(&p.a, &access).await, 401);
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn settings_changed_on_a_apply_on_b() {
    let Some(p) = two_replicas().await else { return };
    let admin = p.a.access_token(ADMIN).await;
    let r =
        p.a.client
            .patch(p.a.url("/connectors/settings"))
            .bearer_auth(&admin)
            .json(&serde_json::json!({ "accessTokenLifeTime": 600 }))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let r = p.b.client.get(p.b.url("/connectors/settings")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["accessTokenLifeTime"], 600);
    assert_eq!(p.b.login(TRADER).await["accessTokenLifeTime"], 600, "B issues with A's setting");
    p.finish().await;
}

/// A revocation whose pub/sub message was lost (written straight into the revoked set, never
/// published) still reaches B through the periodic resync, within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missed_message_cannot_keep_a_revoked_token_alive() {
    let Some(p) = two_replicas().await else { return };
    let access = p.b.access_token(TRADER).await;
    assert_eq!(call(&p.b, &access).await, 200);
    let claims = support::claims(&access);
    let client = redis::Client::open(p.url.as_str()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("ZADD")
        .arg(format!("{}revoked", p.prefix))
        .arg(claims["exp"].as_u64().unwrap())
        .arg(claims["sid"].as_str().unwrap())
        .query_async(&mut c)
        .await
        .unwrap();
    let revoked_at = Instant::now();
    while call(&p.b, &access).await != 401 {
        assert!(revoked_at.elapsed() < Duration::from_secs(1), "resync did not catch the revocation");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.finish().await;
}
