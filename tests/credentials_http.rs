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

/// A BO with both calls: `/auth/token` takes any login with password "right" (and, like a BO
/// that ignores case, answers by the case-folded login); `/users` answers each login with the
/// status set in `standing` (200 when unset; 0 means "do not answer in time"), and records what
/// it was sent.
struct Bo {
    url: String,
    standing: Arc<tokio::sync::Mutex<std::collections::HashMap<String, u16>>>,
    asked: Arc<tokio::sync::Mutex<Vec<Value>>>,
}

impl Bo {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let standing = Arc::new(tokio::sync::Mutex::new(std::collections::HashMap::new()));
        let asked = Arc::new(tokio::sync::Mutex::new(Vec::new()));
        let (st, seen) = (standing.clone(), asked.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (st, seen) = (st.clone(), seen.clone());
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (st, seen) = (st.clone(), seen.clone());
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let status = if path == "/users" {
                            seen.lock().await.push(v.clone());
                            let login = v["login"].as_str().unwrap_or("").to_string();
                            let s = st.lock().await.get(&login).copied().unwrap_or(200);
                            if s == 0 {
                                tokio::time::sleep(Duration::from_secs(3)).await;
                            }
                            s.max(200)
                        } else if v["password"] == "right" {
                            200
                        } else {
                            401
                        };
                        let mut r = hyper::Response::new(Full::new(Bytes::from_static(b"{}")));
                        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(r)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { url, standing, asked }
    }

    async fn set(&self, login: &str, status: u16) {
        self.standing.lock().await.insert(login.into(), status);
    }

    /// A gateway on this BO (alice is admin), with `user_url` when `ask_at_refresh`; and the
    /// folder of its roles file.
    async fn gateway(
        &self,
        ask_at_refresh: bool,
        store: String,
        up: &upstream::Upstream,
    ) -> (Gateway, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let roles = dir.path().join("roles.toml");
        std::fs::write(&roles, "[roles]\nAlice = [\"admin\"]\n").unwrap();
        let user_url =
            if ask_at_refresh { format!("user_url = \"{}/users\"\n", self.url) } else { String::new() };
        let setup = Setup {
            credentials: format!(
                "kind = \"http\"\nurl = \"{}/auth/token\"\ntimeout = \"1s\"\nroles_file = \"{}\"\n{user_url}",
                self.url,
                roles.display()
            ),
            // No reuse grace: a refresh token spent by a failed refresh could not be used again.
            tokens: "refresh_reuse_grace = \"0s\"".into(),
            store,
            routes: route("bo", "/api", &up.url(), ""),
            ..Default::default()
        };
        (Gateway::start(setup).await, dir)
    }
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap().to_string()
}

async fn call(gw: &Gateway, access: &str) -> u16 {
    gw.client.get(gw.url("/api/x")).bearer_auth(access).send().await.unwrap().status().as_u16()
}

async fn admin_get(gw: &Gateway, admin: &str, path: &str) -> Value {
    gw.gateway().audit.flush().await;
    let r = reqwest::Client::new().get(gw.admin_url(path)).bearer_auth(admin).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

/// With `user_url`, the BO saying 403, 404 or 410 at a refresh ends every session of that login
/// at once (as a users-file reload does), answers 401 `2.0.2.4` and is audited; other logins
/// keep theirs. The BO is asked with the login and no password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bo_refusing_a_user_at_refresh_ends_every_session_of_theirs() {
    let bo = Bo::start().await;
    let up = upstream::start("bo").await;
    let (gw, _roles) = bo.gateway(true, String::new(), &up).await;
    let admin = gw.access_token(("alice", "right")).await;
    for (status, state) in [(403, "disabled"), (404, "removed"), (410, "removed")] {
        bo.set("bob", 200).await;
        let first = gw.login(("bob", "right")).await;
        let second = gw.login(("bob", "right")).await;
        let r = gw.refresh(&s(&first, "refreshToken")).await;
        assert_eq!(r.status(), 200, "the BO still allows bob");
        let first: Value = r.json().await.unwrap();
        assert_eq!(bo.asked.lock().await.last().unwrap(), &json!({"login": "bob"}), "no password sent");

        bo.set("bob", status).await;
        let r = gw.refresh(&s(&first, "refreshToken")).await;
        assert_eq!(error_code(r).await, (401, "2.0.2.4".into()), "{status}");
        let ended = std::time::Instant::now();
        for p in [&first, &second] {
            while call(&gw, &s(p, "accessToken")).await != 401 {
                assert!(ended.elapsed() < Duration::from_secs(1), "{status}: a refused user's token works");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // The other session's refresh token is refused as any ended session's is.
        let r = gw.refresh(&s(&second, "refreshToken")).await;
        assert_eq!(error_code(r).await, (401, "token.invalid".into()));
        assert_eq!(admin_get(&gw, &admin, "/admin/sessions?login=bob").await, json!([]));
        let ev = admin_get(&gw, &admin, "/admin/audit?type=user.disabled&limit=1").await;
        let ev = &ev[0];
        assert_eq!(
            (ev["login"].as_str(), ev["session"].as_str()),
            (Some("bob"), first_sid(&first).as_deref())
        );
        assert_eq!(ev["details"], json!({"by": "refresh", "state": state, "revoked": 2}), "{status}");
        assert_eq!(call(&gw, &admin).await, 200, "other logins keep their sessions");
    }
    let events = admin_get(&gw, &admin, "/admin/audit?type=user.disabled").await;
    assert_eq!(events.as_array().unwrap().len(), 3);
}

fn first_sid(pair: &Value) -> Option<String> {
    claims(pair["accessToken"].as_str().unwrap())["sid"].as_str().map(str::to_string)
}

/// A BO that answers the refresh question with anything else, or not in time, is 503
/// `credentials.unavailable`, and nothing is ended or spent: with the reuse grace off, the same
/// refresh token refreshes once the BO answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bo_that_cannot_answer_at_refresh_ends_nothing() {
    let bo = Bo::start().await;
    let up = upstream::start("bo").await;
    let (gw, _roles) = bo.gateway(true, String::new(), &up).await;
    let pair = gw.login(("bob", "right")).await;
    for status in [500, 401, 0] {
        bo.set("bob", status).await;
        let r = gw.refresh(&s(&pair, "refreshToken")).await;
        assert_eq!(error_code(r).await, (503, "credentials.unavailable".into()), "{status}");
        assert_eq!(call(&gw, &s(&pair, "accessToken")).await, 200, "{status}: the session goes on");
    }
    bo.set("bob", 200).await;
    assert_eq!(gw.refresh(&s(&pair, "refreshToken")).await.status(), 200, "the token was not spent");
    let admin = gw.access_token(("alice", "right")).await;
    assert_eq!(admin_get(&gw, &admin, "/admin/audit?type=user.disabled").await, json!([]));
}

/// A token that is not one of the session's (a session id with a made-up secret) does not make
/// the gateway ask the BO, and is refused as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_holder_of_the_session_makes_the_gateway_ask() {
    let bo = Bo::start().await;
    let up = upstream::start("bo").await;
    let (gw, _roles) = bo.gateway(true, String::new(), &up).await;
    let pair = gw.login(("bob", "right")).await;
    bo.set("bob", 403).await;
    let forged = format!("{}.0.{}", first_sid(&pair).unwrap(), "A".repeat(64));
    assert_eq!(error_code(gw.refresh(&forged).await).await, (401, "token.invalid".into()));
    assert!(bo.asked.lock().await.is_empty(), "the BO was asked for a forged token");
    assert_eq!(call(&gw, &s(&pair, "accessToken")).await, 200);
}

/// Without `user_url` (a BO that implements nothing new) the BO is asked at login only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_user_url_the_bo_is_asked_at_login_only() {
    let bo = Bo::start().await;
    let up = upstream::start("bo").await;
    let (gw, _roles) = bo.gateway(false, String::new(), &up).await;
    let pair = gw.login(("bob", "right")).await;
    bo.set("bob", 403).await;
    assert_eq!(gw.refresh(&s(&pair, "refreshToken")).await.status(), 200);
    assert!(bo.asked.lock().await.is_empty());
}

/// SPEC §1: the `http` source knows logins case-folded. A session of `Bob` is indexed as `bob`
/// in every store: the admin API finds it by any spelling and ends it; the failure counter,
/// the token, the audit trail and the BO's refresh question all name `bob`.
async fn logins_are_case_folded(store: String) {
    let bo = Bo::start().await;
    let up = upstream::start("bo").await;
    let (gw, _roles) = bo.gateway(true, store, &up).await;
    let pair = gw.login(("Bob", "right")).await;
    let access = s(&pair, "accessToken");
    assert_eq!(claims(&access)["sub"], "bob");
    let admin = gw.access_token(("ALICE", "right")).await;
    assert_eq!(claims(&admin)["roles"], json!(["admin"]), "roles_file entries match in any case");
    for q in ["bob", "Bob", "BOB"] {
        let found = admin_get(&gw, &admin, &format!("/admin/sessions?login={q}")).await;
        assert_eq!(found.as_array().unwrap().len(), 1, "{q}: {found}");
        assert_eq!(
            (found[0]["login"].as_str(), found[0]["session"].as_str()),
            (Some("bob"), first_sid(&pair).as_deref())
        );
    }
    assert_eq!(gw.refresh(&s(&pair, "refreshToken")).await.status(), 200);
    assert_eq!(bo.asked.lock().await.last().unwrap()["login"], "bob");
    let events = admin_get(&gw, &admin, "/admin/audit?login=BOB").await;
    let kinds: Vec<&str> = events.as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["refresh.ok", "login.ok"]);

    let r = reqwest::Client::new()
        .delete(gw.admin_url("/admin/sessions?login=bob"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"revoked": 1}));
    assert_eq!(call(&gw, &access).await, 401);
    assert_eq!(admin_get(&gw, &admin, "/admin/sessions?login=Bob").await, json!([]));
    assert_eq!(call(&gw, &admin).await, 200, "only bob's session ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_case_folded_on_the_memory_store() {
    logins_are_case_folded(String::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_case_folded_on_the_file_store() {
    let dir = tempfile::tempdir().unwrap();
    logins_are_case_folded(format!("kind = \"file\"\npath = \"{}/state.redb\"", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_case_folded_on_redis() {
    let Some(url) = support::redis::shared().await else { return };
    let prefix = support::redis::unique_prefix();
    logins_are_case_folded(format!("kind = \"redis\"\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"")).await;
    support::redis::cleanup(&url, &prefix).await;
}
