//! The store going away: Redis stopped under a serving gateway, and a `file` store that cannot
//! be written at start.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::redis::OwnRedis;
use support::{Gateway, Setup, TRADER, error_code, route, upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_means_503_store_unavailable_cached_tokens_flow_and_it_recovers() {
    let Some(mut redis) = OwnRedis::start().await else { return };
    let up = upstream::start("bo").await;
    let gw = Gateway::start(Setup {
        store: format!("kind = \"redis\"\nurl = \"{}\"\n", redis.url()),
        routes: route("api", "/api", &up.url(), ""),
        ..Default::default()
    })
    .await;
    let pair = gw.login(TRADER).await;
    let access = pair["accessToken"].as_str().unwrap().to_string();
    assert_eq!(gw.client.get(gw.url("/api/x")).bearer_auth(&access).send().await.unwrap().status(), 200);
    assert_eq!(gw.client.get(gw.admin_url("/readyz")).send().await.unwrap().status(), 200);

    redis.stop();

    let t = Instant::now();
    let r = gw.client.get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["store"]["kind"].as_str(), body["store"]["state"].as_str()),
        (Some("redis"), Some("down"))
    );
    // The main listener says only why not.
    let r = gw.client.get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.text().await.unwrap(), r#"{"status":"unready","reason":"store unreachable"}"#);
    let login = gw.try_login(TRADER.0, TRADER.1).await;
    assert_eq!(error_code(login).await, (503, "store.unavailable".into()));
    let refresh = gw.refresh(pair["refreshToken"].as_str().unwrap()).await;
    assert_eq!(error_code(refresh).await, (503, "store.unavailable".into()));
    let verify = gw
        .client
        .post(gw.url("/external/token/verify"))
        .json(&serde_json::json!({"token": "x"}))
        .send()
        .await;
    assert_eq!(error_code(verify.unwrap()).await, (503, "store.unavailable".into()));
    assert!(t.elapsed() < Duration::from_secs(8), "a dead store must fail fast, took {:?}", t.elapsed());
    // The documented trade-off: a token already verified keeps working while the store is away.
    assert_eq!(gw.client.get(gw.url("/api/x")).bearer_auth(&access).send().await.unwrap().status(), 200);

    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.client.get(gw.admin_url("/readyz")).send().await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "not ready again after Redis came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The new Redis is empty (no persistence): new logins work, old sessions are gone.
    let fresh = gw.login(TRADER).await;
    let r = gw.client.get(gw.url("/api/x")).bearer_auth(fresh["accessToken"].as_str().unwrap()).send().await;
    assert_eq!(r.unwrap().status(), 200);
    // Scripts are loaded again by themselves (EVALSHA falls back to EVAL on the new server).
    let r = gw.refresh(fresh["refreshToken"].as_str().unwrap()).await;
    assert_eq!(r.status(), 200);
}

/// A Redis that accepts but never answers (SIGSTOP) must not hang requests: every store call
/// is bounded, so the endpoints answer 503 within about 1.5 s, and all is well after SIGCONT.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_redis_fails_fast_and_recovers() {
    let Some(redis) = OwnRedis::start().await else { return };
    let gw = Gateway::start(Setup {
        store: format!("kind = \"redis\"\nurl = \"{}\"\n", redis.url()),
        ..Default::default()
    })
    .await;
    gw.login(TRADER).await;
    redis.pause(true);
    let t = Instant::now();
    assert_eq!(gw.client.get(gw.admin_url("/readyz")).send().await.unwrap().status(), 503);
    let login = gw.try_login(TRADER.0, TRADER.1).await;
    assert_eq!(error_code(login).await, (503, "store.unavailable".into()));
    assert!(t.elapsed() < Duration::from_secs(4), "took {:?}", t.elapsed());
    redis.pause(false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.client.get(gw.admin_url("/readyz")).send().await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "not ready again after Redis resumed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.login(TRADER).await;
}

#[test]
fn an_unwritable_file_store_is_a_clear_start_up_error() {
    let bin = env!("CARGO_BIN_EXE_bo-gateway");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("not-a-folder"), "").unwrap();
    // Tests run as root here, so permissions cannot make a path unwritable: a file where a
    // folder should be, and a device that is always full, can.
    let cases = [dir.path().join("not-a-folder/state.redb"), "/dev/full".into()];
    for path in cases {
        let setup = Setup {
            store: format!("kind = \"file\"\npath = \"{}\"\n", path.display()),
            ..Default::default()
        };
        let config = support::write_config(dir.path(), &setup);
        let out = Command::new(bin).arg("--config").arg(&config).output().unwrap();
        assert!(!out.status.success(), "{path:?} started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("store.path") && err.contains(&*path.to_string_lossy()), "{path:?}: {err}");
    }
}

#[test]
fn store_keys_are_checked_with_the_config() {
    let bin = env!("CARGO_BIN_EXE_bo-gateway");
    let dir = tempfile::tempdir().unwrap();
    for (store, key) in [
        ("kind = \"file\"\n", "store.path"),
        ("kind = \"redis\"\n", "store.url"),
        ("kind = \"redis\"\nurl = \"http://127.0.0.1:6379\"\n", "store.url"),
    ] {
        let config = support::write_config(dir.path(), &Setup { store: store.into(), ..Default::default() });
        let out = Command::new(bin).args(["check-config", "--config"]).arg(&config).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{store}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{store}: {err}");
    }
}

/// `rediss://`: the server's certificate is checked against the system roots, which
/// `SSL_CERT_FILE` replaces here (hence the real binary: the tests never set environment
/// variables in-process). Without the CA the store stays down; with it, logins work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_checks_the_certificate_and_works_with_a_trusted_ca() {
    let dir = tempfile::tempdir().unwrap();
    let Some((redis, ca)) = OwnRedis::start_tls(dir.path()).await else { return };
    let bin = env!("CARGO_BIN_EXE_bo-gateway");
    let store = format!("kind = \"redis\"\nurl = \"rediss://localhost:{}\"\n", redis.port);
    let config = support::write_config(dir.path(), &Setup { store, ..Default::default() });

    let untrusted = support::binary::serve(bin, &config, dir.path(), &[]);
    let r = untrusted
        .client
        .post(untrusted.url("/auth/token"))
        .json(&serde_json::json!({"login": TRADER.0, "password": TRADER.1}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (503, "store.unavailable".into()), "an unknown issuer is refused");
    drop(untrusted);

    let trusted = support::binary::serve(bin, &config, dir.path(), &[("SSL_CERT_FILE", &ca)]);
    let pair = trusted.login(TRADER).await;
    let r = trusted
        .client
        .get(trusted.url("/auth/token/refresh"))
        .header("token", pair["refreshToken"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
