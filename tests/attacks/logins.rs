//! Password guessing against the login limits (issue 14, SPEC §1): the limits are reserved
//! before the password check, so a burst of concurrent guesses gets no more checks than the
//! limit; login names with surrounding whitespace or another case are not new identities or
//! new counters.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

use crate::support::*;

/// `bo_gateway_password_checks` from the admin listener's `/metrics`.
async fn password_checks(gw: &Gateway) -> u64 {
    let text = reqwest::get(gw.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("bo_gateway_password_checks_total "))
        .unwrap_or_else(|| panic!("no password check counter in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// `n` logins of `login` with `password`, all at once; their statuses.
async fn burst(gw: &Gateway, n: usize, login: &str, password: &str) -> Vec<u16> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (c, url) = (gw.client.clone(), gw.url("/auth/token"));
        let body = json!({"login": login, "password": password});
        tasks.spawn(async move { c.post(url).json(&body).send().await.unwrap().status().as_u16() });
    }
    tasks.join_all().await
}

async fn gateway(login_limits: &str, credentials: String) -> Gateway {
    Gateway::start(Setup { login_limits: login_limits.into(), credentials, ..Default::default() }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_and_fifty_concurrent_guesses_get_five_password_checks() {
    let gw = gateway("failures_per_login = 5\nfailures_per_address = 1000", String::new()).await;
    let statuses = burst(&gw, 150, ADMIN.0, "guess").await;
    let wrong = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((wrong, limited), (5, 145), "{statuses:?}");
    assert_eq!(password_checks(&gw).await, 5, "every check beyond the limit was refused unchecked");
    // Even the right password waits for the window, and is not checked either.
    let r = gw.try_login(ADMIN.0, ADMIN.1).await;
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(error_code(r).await, (429, "2.147.1.27".into()));
    assert_eq!(password_checks(&gw).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_right_password_after_a_burst_of_forty_wrong_is_refused() {
    let gw = gateway("failures_per_login = 5\nfailures_per_address = 1000", String::new()).await;
    burst(&gw, 40, TRADER.0, "guess").await;
    let r = gw.try_login(TRADER.0, TRADER.1).await;
    assert_eq!(error_code(r).await, (429, "2.147.1.27".into()));
    // Another login from the same address is not held up by it.
    assert_eq!(gw.try_login(ADMIN.0, ADMIN.1).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_address_limit_holds_under_concurrency_too() {
    let gw = gateway("failures_per_login = 1000\nfailures_per_address = 7", String::new()).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..60 {
        let (c, url) = (gw.client.clone(), gw.url("/auth/token"));
        let body = json!({"login": format!("nobody{i}"), "password": "guess"});
        tasks.spawn(async move { c.post(url).json(&body).send().await.unwrap().status().as_u16() });
    }
    let statuses = tasks.join_all().await;
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 7, "{statuses:?}");
    assert_eq!(password_checks(&gw).await, 7);
}

#[tokio::test]
async fn a_login_with_surrounding_whitespace_is_a_wrong_login_and_shares_the_counter() {
    let gw = gateway("failures_per_login = 4\nfailures_per_address = 1000", String::new()).await;
    let wrong = gw.try_login("nobody", "x").await.text().await.unwrap();
    for login in [" alice", "alice ", "alice\t", "\u{7}alice"] {
        let r = gw.try_login(login, ADMIN.1).await;
        assert_eq!(r.status(), 401, "{login:?}");
        assert_eq!(r.text().await.unwrap(), wrong, "{login:?} answers as any wrong login");
    }
    // Those four guesses were guesses at alice: her counter is full.
    let r = gw.try_login(ADMIN.0, ADMIN.1).await;
    assert_eq!(error_code(r).await, (429, "2.147.1.27".into()));
}

/// A fake BO `/auth/token` that counts its calls: only bob/right is valid; whatever case the
/// login arrives in, it compares it as given.
async fn counting_bo() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let c = c.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let c = c.clone();
                    async move {
                        c.fetch_add(1, Ordering::SeqCst);
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let ok = v["login"].as_str().is_some_and(|l| l.trim().eq_ignore_ascii_case("bob"))
                            && v["password"] == "right";
                        let mut r = hyper::Response::new(Full::new(Bytes::from_static(b"{}")));
                        *r.status_mut() =
                            if ok { hyper::StatusCode::OK } else { hyper::StatusCode::UNAUTHORIZED };
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}/auth/token"), calls)
}

#[tokio::test]
async fn with_the_bo_deciding_case_and_whitespace_variants_share_one_counter() {
    let (url, calls) = counting_bo().await;
    let gw = gateway(
        "failures_per_login = 3\nfailures_per_address = 1000",
        format!("kind = \"http\"\nurl = \"{url}\"\ntimeout = \"2s\""),
    )
    .await;
    // Surrounding whitespace: a wrong login, and the BO (which would trim it) is not asked.
    let r = gw.try_login(" bob", "right").await;
    assert_eq!(error_code(r).await, (401, "1.2.0.11".into()));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    for login in ["BOB", "Bob"] {
        let r = gw.try_login(login, "guess").await;
        assert_eq!(error_code(r).await, (401, "1.2.0.11".into()), "{login}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // Three failures against one counter, whatever the spelling: bob is locked out, unchecked.
    for login in ["bob", "bOb"] {
        let r = gw.try_login(login, "right").await;
        assert_eq!(error_code(r).await, (429, "2.147.1.27".into()), "{login}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
