//! `credentials.kind = "http"`: the BO checks passwords; its outage is 503, never a login.

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use support::*;

/// A fake BO `/auth/token`: bob/right → 200, bob/other → 401, login "slow" sleeps, "broken" → 500.
async fn fake_bo() -> (String, Arc<AtomicUsize>, Arc<tokio::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let (c, s) = (calls.clone(), seen.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (c, s) = (c.clone(), s.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (c, s) = (c.clone(), s.clone());
                    async move {
                        c.fetch_add(1, Ordering::SeqCst);
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        s.lock().await.push(v.to_string());
                        let status = match (v["login"].as_str(), v["password"].as_str()) {
                            (Some("slow"), _) => {
                                tokio::time::sleep(Duration::from_secs(3)).await;
                                200
                            }
                            (Some("broken"), _) => 500,
                            (Some("bob"), Some("right")) | (Some("alice"), Some("right")) => 200,
                            (Some("mallory"), _) => 403,
                            _ => 401,
                        };
                        let mut r = hyper::Response::new(Full::new(Bytes::from_static(b"{}")));
                        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}/proftrading/rest/auth/token"), calls, seen)
}

async fn login(gw: &Gateway, login: &str, password: &str) -> reqwest::Response {
    gw.try_login(login, password).await
}

#[tokio::test]
async fn the_bo_decides_and_roles_come_from_the_roles_file() {
    let (url, calls, seen) = fake_bo().await;
    let up = upstream::start("bo").await;
    let dir = tempfile::tempdir().unwrap();
    let roles = dir.path().join("roles.toml");
    std::fs::write(&roles, "[roles]\nalice = [\"admin\", \"trader\"]\n").unwrap();
    let setup = Setup {
        credentials: format!(
            "kind = \"http\"\nurl = \"{url}\"\ntimeout = \"1s\"\nroles_file = \"{}\"",
            roles.display()
        ),
        routes: route("bo", "/api", &up.url(), ""),
        ..Default::default()
    };
    let gw = Gateway::start(setup).await;

    let r = login(&gw, "alice", "right").await;
    assert_eq!(r.status(), 200);
    let pair: Value = r.json().await.unwrap();
    assert_eq!(claims(pair["accessToken"].as_str().unwrap())["roles"], json!(["admin", "trader"]));
    let r = login(&gw, "bob", "right").await;
    let pair: Value = r.json().await.unwrap();
    assert_eq!(claims(pair["accessToken"].as_str().unwrap())["roles"], json!([]));
    let e: Value = gw
        .client
        .get(gw.url("/api/x"))
        .bearer_auth(pair["accessToken"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(e["headers"]["x-auth-login"][0], "bob");
    // Refresh works for a login the gateway has no file entry for.
    let r = gw.refresh(pair["refreshToken"].as_str().unwrap()).await;
    assert_eq!(r.status(), 200);

    assert_eq!(error_code(login(&gw, "bob", "wrong").await).await, (401, "1.2.0.11".into()));
    assert_eq!(error_code(login(&gw, "mallory", "x").await).await, (401, "1.2.0.11".into()));
    assert_eq!(error_code(login(&gw, "broken", "x").await).await, (503, "credentials.unavailable".into()));
    assert_eq!(error_code(login(&gw, "slow", "x").await).await, (503, "credentials.unavailable".into()));
    assert!(calls.load(Ordering::SeqCst) >= 6);
    assert_eq!(seen.lock().await[0], json!({"login": "alice", "password": "right"}).to_string());
}

#[tokio::test]
async fn an_outage_of_the_bo_is_503_not_a_login() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let up = upstream::start("bo").await;
    let setup = Setup {
        credentials: format!("kind = \"http\"\nurl = \"http://{closed}/auth/token\"\ntimeout = \"1s\""),
        routes: route("bo", "/api", &up.url(), ""),
        ..Default::default()
    };
    let gw = Gateway::start(setup).await;
    assert_eq!(error_code(login(&gw, "bob", "right").await).await, (503, "credentials.unavailable".into()));
    // Proxying with an existing token is unaffected (none exists here; the check itself is local).
    assert_eq!(gw.client.get(gw.url("/healthz")).send().await.unwrap().status(), 200);
}
