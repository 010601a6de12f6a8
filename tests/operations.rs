//! What an operator relies on: reload under load, key rotation, graceful shutdown under load.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use support::*;

/// Runs `workers` loops of authenticated GETs until `stop`; returns (ok, failed) counters.
fn load(
    gw: &Gateway,
    token: &str,
    path: &str,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<AtomicUsize>, Arc<AtomicUsize>, tokio::task::JoinSet<()>) {
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (c, url, t, ok, failed, stop) =
            (gw.client.clone(), gw.url(path), token.to_string(), ok.clone(), failed.clone(), stop.clone());
        set.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let good = match c.get(&url).bearer_auth(&t).send().await {
                    Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if good { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    (ok, failed, set)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_nothing_and_adds_the_new_route() {
    let up = upstream::start("bo").await;
    let mut setup = Setup::routes(route("bo", "/api", &up.url(), ""));
    let gw = Gateway::start(setup.clone()).await;
    let token = gw.access_token(TRADER).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, set) = load(&gw, &token, "/api/x", 4, stop.clone());
    // A long download in flight across the reloads.
    let download = tokio::spawn(gw.client.get(gw.url("/api/bytes?n=30000000")).bearer_auth(&token).send());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let r = gw.client.get(gw.url("/new/x")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 404);
    setup.routes += &route("new", "/new", &up.url(), "");
    write_config(gw.dir.path(), &setup);
    gw.running.as_ref().unwrap().reload().await.unwrap();
    let r = gw.client.get(gw.url("/new/x")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200, "route added by the reload does not answer");

    // An invalid config is refused and the old snapshot keeps serving.
    std::fs::write(gw.dir.path().join("gateway.toml"), "[server]\nlisten_adr = 1\n").unwrap();
    let err = gw.running.as_ref().unwrap().reload().await.unwrap_err();
    assert!(err.to_string().contains("server.listen_adr"), "{err}");
    assert_eq!(gw.client.get(gw.url("/new/x")).bearer_auth(&token).send().await.unwrap().status(), 200);

    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    set.join_all().await;
    let body = download.await.unwrap().unwrap().bytes().await.unwrap();
    assert_eq!(body.len(), 30_000_000, "download cut by the reload");
    assert!(ok.load(Ordering::Relaxed) > 20);
    assert_eq!(failed.load(Ordering::Relaxed), 0, "requests failed during the reload");
}

#[tokio::test]
async fn reload_moves_a_listener_and_keeps_the_others() {
    let up = upstream::start("bo").await;
    let mut setup = Setup::routes(route("pub", "/p", &up.url(), "auth = \"public\""));
    let gw = Gateway::start(setup.clone()).await;
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    setup.server = format!("plain_listen = \"{free}\"");
    write_config(gw.dir.path(), &setup);
    // The HTTPS and admin listeners are on port 0 in the file: a reload must keep the bound
    // sockets rather than rebinding another ephemeral port.
    gw.running.as_ref().unwrap().reload().await.unwrap();
    let r = reqwest::get(format!("http://{free}/p/x")).await.unwrap();
    assert_eq!(r.status(), 200, "new plain listener");
    assert_eq!(gw.client.get(gw.url("/p/x")).send().await.unwrap().status(), 200, "HTTPS listener kept");
    assert_eq!(reqwest::get(gw.admin_url("/healthz")).await.unwrap().status(), 200, "admin listener kept");
}

#[tokio::test]
async fn key_rotation_through_reload() {
    let up = upstream::start("bo").await;
    let mut setup = Setup::routes(route("bo", "/api", &up.url(), ""));
    let gw = Gateway::start(setup.clone()).await;
    let old = gw.access_token(TRADER).await;
    let kid = |t: &str| {
        use base64::Engine;
        let h =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t.split('.').next().unwrap()).unwrap();
        serde_json::from_slice::<Value>(&h).unwrap()["kid"].as_str().unwrap().to_string()
    };
    let d = gw.dir.path().display().to_string();
    setup.signing_key = "signing-2.pem".into();
    setup.tokens = format!("previous_keys = [\"{d}/signing.pem\"]");
    write_config(gw.dir.path(), &setup);
    gw.running.as_ref().unwrap().reload().await.unwrap();

    let new = gw.access_token(TRADER).await;
    assert_ne!(kid(&old), kid(&new), "new tokens are signed with the new key");
    assert_eq!(
        gw.client.get(gw.url("/api/x")).bearer_auth(&old).send().await.unwrap().status(),
        200,
        "old key still verifies"
    );
    assert_eq!(gw.client.get(gw.url("/api/x")).bearer_auth(&new).send().await.unwrap().status(), 200);
    let jwks: Value =
        gw.client.get(gw.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    let kids: Vec<&str> =
        jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert!(kids.contains(&kid(&old).as_str()) && kids.contains(&kid(&new).as_str()), "{kids:?}");

    // Retiring the old key: its tokens stop working at once (the cache is cleared on reload).
    setup.tokens = String::new();
    write_config(gw.dir.path(), &setup);
    gw.running.as_ref().unwrap().reload().await.unwrap();
    let r = gw.client.get(gw.url("/api/x")).bearer_auth(&old).send().await.unwrap();
    assert_eq!(error_code(r).await, (401, "token.invalid".into()));
    assert_eq!(gw.client.get(gw.url("/api/x")).bearer_auth(&new).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_sigterm_under_load_drains_cleanly() {
    let up = upstream::start_with_delay("bo", 20).await;
    let dir = tempfile::tempdir().unwrap();
    let mut setup = Setup {
        server: "shutdown_grace = \"5s\"".into(),
        routes: route("pub", "/p", &up.url(), "auth = \"public\""),
        ..Default::default()
    };
    let config = write_config(dir.path(), &setup);
    let mut bin = Binary::spawn(&config, dir.path());
    let cert = std::fs::read(dir.path().join("gateway.crt")).unwrap();
    let client = client_for(&cert, false);
    let url = |p: &str| format!("https://{}{}", bin.https, p);

    setup.routes += &route("added", "/added", &up.url(), "auth = \"public\"");
    write_config(dir.path(), &setup);
    std::process::Command::new("kill").args(["-HUP", &bin.pid().to_string()]).status().unwrap();
    let mut answered = false;
    for _ in 0..50 {
        if client.get(url("/added/x")).send().await.unwrap().status() == 200 {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "SIGHUP did not add the route");

    // Load, then SIGTERM in the middle of it.
    let ok = Arc::new(AtomicUsize::new(0));
    let failed_in_flight = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (c, u, ok, bad) = (client.clone(), url("/p/slow?ms=300"), ok.clone(), failed_in_flight.clone());
        set.spawn(async move {
            for _ in 0..50 {
                match c.get(&u).send().await {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    // A request refused because the listener is closed never reached us:
                    // that is the expected end of the loop, not a failure.
                    Err(e) if e.is_connect() => return,
                    Ok(r) => {
                        bad.fetch_add(1, Ordering::Relaxed);
                        eprintln!("status {}", r.status());
                    }
                    Err(e) => {
                        // reqwest retries nothing; a request cut mid-flight shows up here.
                        bad.fetch_add(1, Ordering::Relaxed);
                        eprintln!("error {e:?}");
                    }
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let started = std::time::Instant::now();
    let code = bin.terminate(Duration::from_secs(10));
    let took = started.elapsed();
    set.join_all().await;
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(6), "exit took {took:?}");
    assert!(ok.load(Ordering::Relaxed) >= 4);
    assert_eq!(failed_in_flight.load(Ordering::Relaxed), 0, "in-flight requests failed during the drain");
    assert!(tokio::net::TcpStream::connect(bin.https).await.is_err(), "still accepting after exit");
}

#[tokio::test]
async fn reload_picks_up_users_and_certificate_and_keeps_websockets() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    // A WebSocket echo upstream.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else { return };
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() {
                        let _ = ws.send(m).await;
                    }
                }
            });
        }
    });
    let setup = Setup::routes(route("ws", "/ws", &format!("http://{ws_addr}"), "auth = \"public\""));
    let gw = Gateway::start(setup.clone()).await;
    let tcp = tokio::net::TcpStream::connect(gw.https).await.unwrap();
    let tls = tls_connector(&gw.cert_pem)
        .connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let req = format!("wss://localhost:{}/ws", gw.https.port()).into_client_request().unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(req, tls).await.unwrap();

    // New certificate (regenerated), and a user the old snapshot did not know.
    std::fs::remove_file(gw.dir.path().join("gateway.crt")).unwrap();
    std::fs::remove_file(gw.dir.path().join("gateway.key")).unwrap();
    let users = gw.dir.path().join("users.toml");
    write_config(gw.dir.path(), &setup);
    let hash = bo_gateway::auth::credentials::hash_password_with("dave-password", 1024, 1, 1).unwrap();
    let mut text = std::fs::read_to_string(&users).unwrap();
    text += &format!("\n[[users]]\nlogin = \"dave\"\npassword_hash = \"{hash}\"\n");
    std::fs::write(&users, text).unwrap();
    gw.running.as_ref().unwrap().reload().await.unwrap();

    // The WebSocket opened before the reload still works.
    ws.send(Message::text("after reload")).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(back.into_text().unwrap().as_str(), "after reload");

    // New connections get the new certificate: the old one no longer validates them.
    let new_cert = std::fs::read(gw.dir.path().join("gateway.crt")).unwrap();
    assert_ne!(new_cert, gw.cert_pem);
    let fresh = client_for(&new_cert, false);
    let r = fresh
        .post(gw.url("/auth/token"))
        .json(&serde_json::json!({"login": "dave", "password": "dave-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "user added by the reload cannot log in");
    let stale = client_for(&gw.cert_pem, false);
    assert!(stale.get(gw.url("/healthz")).send().await.is_err(), "old certificate still served");
}

#[tokio::test]
async fn access_log_lines_carry_the_request_id_and_no_secrets() {
    let up = upstream::start("bo").await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &Setup::routes(route("bo", "/api", &up.url(), "")));
    let bin = Binary::spawn_with_log(&config, dir.path(), "info");
    let client = client_for(&std::fs::read(dir.path().join("gateway.crt")).unwrap(), false);
    let url = |p: &str| format!("https://{}{}", bin.https, p);
    let r = client
        .post(url("/auth/token"))
        .json(&serde_json::json!({"login": TRADER.0, "password": TRADER.1}))
        .send()
        .await
        .unwrap();
    let pair: Value = r.json().await.unwrap();
    let access = pair["accessToken"].as_str().unwrap();
    let r = client
        .get(url("/api/./orders?x=1"))
        .bearer_auth(access)
        .header("Cookie", "session=cookie-secret")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let _ = r.bytes().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = bin.take_logs();
    let line = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["target"] == "access" && v["fields"]["request_id"].as_str() == Some(id.as_str()))
        .unwrap_or_else(|| panic!("no access line for {id} in {logs:#?}"));
    let f = &line["fields"];
    assert_eq!(f["method"], "GET");
    assert_eq!(f["path"], "/api/orders", "the normalised path is logged");
    assert_eq!(f["route"], "bo");
    assert_eq!(f["status"], 200);
    assert_eq!(f["login"], TRADER.0);
    assert_eq!(f["upstream"], up.url());
    assert!(f["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(f["micros"].is_u64() && f["bytes"].is_u64());
    let all = logs.join("\n");
    for secret in [TRADER.1, access, pair["refreshToken"].as_str().unwrap(), "cookie-secret"] {
        assert!(!all.contains(secret), "a secret reached the log");
    }
}
