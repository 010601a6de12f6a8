//! SPEC §7 on the admin listener: who may call it, the session list, ending sessions (one, or
//! all of a login's) as a logout does, and bad input. Each case runs on the memory store and,
//! when `BO_GATEWAY_TEST_REDIS` is set, on Redis; the last case has two replicas share Redis.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::redis as test_redis;
use support::{ADMIN, Gateway, Setup, TRADER, error_code, route, upstream};

/// A gateway on the memory store, or on Redis under a fresh prefix (`None` without Redis).
struct Env {
    gw: Gateway,
    _up: upstream::Upstream,
    redis: Option<(String, String)>,
}

impl Env {
    async fn start(on_redis: bool) -> Option<Self> {
        let up = upstream::start("bo").await;
        let mut setup = Setup { routes: route("api", "/api", &up.url(), ""), ..Default::default() };
        let mut redis = None;
        if on_redis {
            let url = test_redis::shared().await?;
            let prefix = test_redis::unique_prefix();
            setup.store = format!("kind = \"redis\"\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\n");
            redis = Some((url, prefix));
        }
        Some(Self { gw: Gateway::start(setup).await, _up: up, redis })
    }

    async fn finish(self) {
        if let Some((url, prefix)) = &self.redis {
            test_redis::cleanup(url, prefix).await;
        }
    }
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap().to_string()
}

async fn call(gw: &Gateway, token: &str) -> u16 {
    gw.client.get(gw.url("/api/x")).bearer_auth(token).send().await.unwrap().status().as_u16()
}

/// `method path` on the admin listener with `token` as Bearer (none when empty).
async fn admin_call(gw: &Gateway, method: reqwest::Method, path: &str, token: &str) -> reqwest::Response {
    let mut r = reqwest::Client::new().request(method, gw.admin_url(path));
    if !token.is_empty() {
        r = r.bearer_auth(token);
    }
    r.send().await.unwrap()
}

async fn list(gw: &Gateway, admin: &str, query: &str) -> Vec<Value> {
    let r = admin_call(gw, reqwest::Method::GET, &format!("/admin/sessions{query}"), admin).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Logs `user` in on the main listener with this User-Agent.
async fn login_as(gw: &Gateway, user: (&str, &str), agent: &str) -> Value {
    let body = serde_json::json!({"login": user.0, "password": user.1});
    let r =
        gw.client.post(gw.url("/auth/token")).header("user-agent", agent).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn session_of(pair: &Value) -> String {
    support::claims(&s(pair, "accessToken"))["sid"].as_str().unwrap().to_string()
}

fn is_rfc3339(v: &Value) -> bool {
    let t = v.as_str().unwrap_or("");
    t.len() == 20 && t.ends_with('Z') && t.as_bytes()[10] == b'T'
}

async fn only_admins_may_call(on_redis: bool) {
    let Some(env) = Env::start(on_redis).await else { return };
    let gw = &env.gw;
    for path in ["/admin/sessions", "/admin/sessions/abc", "/admin/nothing"] {
        let r = admin_call(gw, reqwest::Method::GET, path, "").await;
        assert_eq!(error_code(r).await, (401, "token.missing".into()), "{path}");
        let r = admin_call(gw, reqwest::Method::GET, path, "not-a-jwt").await;
        assert_eq!(error_code(r).await, (401, "token.invalid".into()), "{path}");
    }
    let trader = gw.access_token(TRADER).await;
    let r = admin_call(gw, reqwest::Method::DELETE, "/admin/sessions?login=alice", &trader).await;
    assert_eq!(error_code(r).await, (403, "forbidden".into()));
    // An admin's token from the admin listener's own sign-in works as well.
    let r = reqwest::Client::new()
        .post(gw.admin_url("/auth/token"))
        .json(&serde_json::json!({"login": ADMIN.0, "password": ADMIN.1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let admin = s(&r.json().await.unwrap(), "accessToken");
    let r = admin_call(gw, reqwest::Method::GET, "/admin/nothing", &admin).await;
    assert_eq!(error_code(r).await, (404, "route.none".into()));
    let r = admin_call(gw, reqwest::Method::PUT, "/admin/sessions", &admin).await;
    assert_eq!(error_code(r).await, (405, "method.not_allowed".into()));
    env.finish().await;
}

async fn sessions_are_listed(on_redis: bool) {
    let Some(env) = Env::start(on_redis).await else { return };
    let gw = &env.gw;
    let first = login_as(gw, TRADER, "first-agent/1").await;
    let second = login_as(gw, TRADER, "second-agent/2").await;
    assert_eq!(gw.refresh(&s(&second, "refreshToken")).await.status(), 200);
    let admin = gw.access_token(ADMIN).await;
    let found = list(gw, &admin, "?login=bob").await;
    assert_eq!(found.len(), 2, "{found:?}");
    let by_id = |id: &str| found.iter().find(|v| v["session"] == id).cloned().unwrap();
    let a = by_id(&session_of(&first));
    assert_eq!((a["login"].as_str(), a["userAgent"].as_str()), (Some("bob"), Some("first-agent/1")));
    assert_eq!((a["clientAddress"].as_str(), a["refreshCount"].as_u64()), (Some("127.0.0.1"), Some(0)));
    for k in ["createdAt", "lastRefreshAt", "expiresAt"] {
        assert!(is_rfc3339(&a[k]), "{k}: {}", a[k]);
    }
    let b = by_id(&session_of(&second));
    assert_eq!((b["userAgent"].as_str(), b["refreshCount"].as_u64()), (Some("second-agent/2"), Some(1)));
    // The refresh token is `{session}.{generation}.{secret}`: its secret is never shown.
    let rt = s(&second, "refreshToken");
    let secret = rt.rsplit('.').next().unwrap();
    assert!(b.get("refreshToken").is_none() && !b.to_string().contains(secret));
    // Without a login: the most recent sessions of anyone, `limit` at most (times are whole
    // seconds, so which of these three is "newest" is not for a test to say).
    let all = list(gw, &admin, "").await;
    assert_eq!(all.len(), 3);
    assert!(all.iter().any(|v| v["login"] == ADMIN.0));
    let recent = list(gw, &admin, "?limit=1").await;
    assert_eq!(recent.len(), 1);
    assert!(all.contains(&recent[0]));
    assert!(list(gw, &admin, "?login=nobody").await.is_empty());
    env.finish().await;
}

async fn ending_one_session_is_a_logout(on_redis: bool) {
    let Some(env) = Env::start(on_redis).await else { return };
    let gw = &env.gw;
    let ended = gw.login(TRADER).await;
    let kept = gw.login(TRADER).await;
    let access = s(&ended, "accessToken");
    assert_eq!(call(gw, &access).await, 200, "cached before it is ended");
    let admin = gw.access_token(ADMIN).await;
    let path = format!("/admin/sessions/{}", session_of(&ended));
    assert_eq!(admin_call(gw, reqwest::Method::DELETE, &path, &admin).await.status(), 204);
    assert_eq!(call(gw, &access).await, 401);
    assert_eq!(admin_call(gw, reqwest::Method::DELETE, &path, &admin).await.status(), 204, "again: the same");
    assert_eq!(audit(gw, &admin, "?type=session.revoked").await.len(), 1, "ended once");
    assert_eq!(error_code(gw.refresh(&s(&ended, "refreshToken")).await).await, (401, "token.invalid".into()));
    assert_eq!(call(gw, &s(&kept, "accessToken")).await, 200, "only the named session ends");
    assert_eq!(gw.refresh(&s(&kept, "refreshToken")).await.status(), 200);
    let left = list(gw, &admin, "?login=bob").await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["session"], session_of(&kept));
    for unknown in ["/admin/sessions/nosuchsession", "/admin/sessions/a%2Fb", "/admin/sessions/"] {
        let r = admin_call(gw, reqwest::Method::DELETE, unknown, &admin).await;
        assert_eq!(error_code(r).await, (404, "route.none".into()), "{unknown}");
    }
    env.finish().await;
}

async fn ending_a_logins_sessions(on_redis: bool) {
    let Some(env) = Env::start(on_redis).await else { return };
    let gw = &env.gw;
    let pairs = [gw.login(TRADER).await, gw.login(TRADER).await, gw.login(TRADER).await];
    let admin = gw.access_token(ADMIN).await;
    let r = admin_call(gw, reqwest::Method::DELETE, "/admin/sessions?login=bob", &admin).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), serde_json::json!({"revoked": 3}));
    for p in &pairs {
        assert_eq!(call(gw, &s(p, "accessToken")).await, 401);
        assert_eq!(error_code(gw.refresh(&s(p, "refreshToken")).await).await, (401, "token.invalid".into()));
    }
    assert_eq!(call(gw, &admin).await, 200, "the admin's own session is untouched");
    let r = admin_call(gw, reqwest::Method::DELETE, "/admin/sessions?login=bob", &admin).await;
    assert_eq!(r.json::<Value>().await.unwrap(), serde_json::json!({"revoked": 0}), "nothing left");
    env.finish().await;
}

async fn bad_input_is_refused(on_redis: bool) {
    let Some(env) = Env::start(on_redis).await else { return };
    let gw = &env.gw;
    let victim = gw.login(TRADER).await;
    let admin = gw.access_token(ADMIN).await;
    let bad = [
        (reqwest::Method::GET, "/admin/sessions?limit=0"),
        (reqwest::Method::GET, "/admin/sessions?limit=many"),
        (reqwest::Method::GET, "/admin/sessions?limit=100000"),
        (reqwest::Method::GET, "/admin/sessions?user=bob"),
        (reqwest::Method::GET, "/admin/sessions?login=bob&login=alice"),
        (reqwest::Method::GET, "/admin/sessions?login="),
        // Never "every session": a login must be named, and nothing else is a filter.
        (reqwest::Method::DELETE, "/admin/sessions"),
        (reqwest::Method::DELETE, "/admin/sessions?limit=5"),
        (reqwest::Method::DELETE, "/admin/sessions?login=bob&all=1"),
    ];
    for (m, path) in bad {
        let r = admin_call(gw, m.clone(), path, &admin).await;
        assert_eq!(error_code(r).await, (400, "request.malformed".into()), "{m} {path}");
    }
    assert_eq!(call(gw, &s(&victim, "accessToken")).await, 200, "refused requests ended nothing");
    env.finish().await;
}

macro_rules! on_both_stores {
    ($($case:ident),*) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(false).await })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(true).await })*
        }
    };
}

macro_rules! on_both_stores_audit {
    ($($case:ident),*) => {
        mod audit_memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(false).await })*
        }
        mod audit_redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(true).await })*
        }
    };
}

on_both_stores!(
    only_admins_may_call,
    sessions_are_listed,
    ending_one_session_is_a_logout,
    ending_a_logins_sessions,
    bad_input_is_refused
);

/// Two replicas on one Redis: an admin on A ends a session B has seen; B refuses its access
/// token within a second, and B's session list no longer shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_on_a_ends_a_session_b_refuses() {
    let Some(url) = test_redis::shared().await else { return };
    let prefix = test_redis::unique_prefix();
    let up = upstream::start("bo").await;
    let keys = tempfile::tempdir().unwrap();
    let setup = Setup {
        store: format!("kind = \"redis\"\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\n"),
        key_dir: Some(keys.path().to_path_buf()),
        routes: route("api", "/api", &up.url(), ""),
        ..Default::default()
    };
    let a = Gateway::start(setup.clone()).await;
    let b = Gateway::start(setup).await;
    let pair = b.login(TRADER).await;
    let access = s(&pair, "accessToken");
    assert_eq!(call(&b, &access).await, 200);
    let admin = a.access_token(ADMIN).await;
    assert_eq!(list(&a, &admin, "?login=bob").await.len(), 1, "A lists B's session");
    let path = format!("/admin/sessions/{}", session_of(&pair));
    assert_eq!(admin_call(&a, reqwest::Method::DELETE, &path, &admin).await.status(), 204);
    let ended_at = Instant::now();
    while call(&b, &access).await != 401 {
        assert!(ended_at.elapsed() < Duration::from_secs(1), "B still accepts the ended session's token");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(error_code(b.refresh(&s(&pair, "refreshToken")).await).await, (401, "token.invalid".into()));
    assert!(list(&b, &admin, "?login=bob").await.is_empty());
    // B reads A's event: one trail for every replica.
    a.gateway().audit.flush().await;
    let on_b = audit(&b, &admin, "?type=session.revoked").await;
    assert_eq!(on_b.len(), 1);
    assert_eq!(on_b[0]["session"], session_of(&pair));
    let logins = audit(&b, &admin, "?type=login.ok").await;
    assert_eq!(logins.len(), 2);
    assert_ne!(logins[0]["replica"], logins[1]["replica"], "A and B name themselves apart");
    test_redis::cleanup(&url, &prefix).await;
}

/// Rewrites the gateway's users file: `bob`'s entry disabled (`remove`: gone).
fn edit_bob(gw: &Gateway, remove: bool) {
    let path = gw.dir.path().join("users.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let blocks: Vec<String> = text
        .split("\n\n")
        .filter(|b| !(remove && b.contains("login = \"bob\"")))
        .map(|b| {
            if b.contains("login = \"bob\"") {
                format!("{}\ndisabled = true", b.trim_end())
            } else {
                b.into()
            }
        })
        .collect();
    std::fs::write(&path, blocks.join("\n\n") + "\n").unwrap();
}

/// Disabling or removing a user in the users file ends every session of theirs at the reload,
/// and nobody else's.
async fn a_reload_that_disables_a_user_ends_their_sessions(remove: bool) {
    let Some(env) = Env::start(false).await else { return };
    let gw = &env.gw;
    let pairs = [gw.login(TRADER).await, gw.login(TRADER).await];
    let admin = gw.access_token(ADMIN).await;
    for p in &pairs {
        assert_eq!(call(gw, &s(p, "accessToken")).await, 200);
    }
    edit_bob(gw, remove);
    gw.running.as_ref().unwrap().reload().await.unwrap();
    let reloaded = Instant::now();
    for p in &pairs {
        while call(gw, &s(p, "accessToken")).await != 401 {
            assert!(reloaded.elapsed() < Duration::from_secs(1), "a disabled user's token still works");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(error_code(gw.refresh(&s(p, "refreshToken")).await).await.0, 401);
    }
    assert!(list(gw, &admin, "?login=bob").await.is_empty());
    assert_eq!(call(gw, &admin).await, 200, "other users keep their sessions");
    // The reload ends them in a task of its own, which emits the event after the last one ends.
    let mut ev = audit(gw, &admin, "?type=user.disabled").await;
    while ev.is_empty() {
        assert!(reloaded.elapsed() < Duration::from_secs(5), "no user.disabled event");
        tokio::time::sleep(Duration::from_millis(10)).await;
        ev = audit(gw, &admin, "?type=user.disabled").await;
    }
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0]["login"].as_str(), ev[0]["details"]["by"].as_str()), (Some("bob"), Some("reload")));
    assert_eq!(ev[0]["details"]["revoked"], 2);
    assert_eq!(ev[0]["details"]["state"], if remove { "removed" } else { "disabled" });
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_disables_a_user_ends_their_sessions_disabled() {
    a_reload_that_disables_a_user_ends_their_sessions(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_removes_a_user_ends_their_sessions() {
    a_reload_that_disables_a_user_ends_their_sessions(true).await;
}

/// `GET /admin/audit{query}`, once every event `gw` has emitted so far is written (the file and
/// the store are written after the answer, in order; see `bo_gateway::audit`).
async fn audit(gw: &Gateway, admin: &str, query: &str) -> Vec<Value> {
    gw.gateway().audit.flush().await;
    let r = admin_call(gw, reqwest::Method::GET, &format!("/admin/audit{query}"), admin).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// Every auth step leaves its event, with who, from where and the request id; filters work; no
/// event holds a password or a token.
async fn the_audit_trail(on_redis: bool) {
    let Some(env) = Env::start(on_redis).await else { return };
    let gw = &env.gw;
    assert_eq!(gw.try_login(TRADER.0, "wrong-password").await.status(), 401);
    let pair = login_as(gw, TRADER, "audit-agent/1").await;
    let refreshed: Value = gw.refresh(&s(&pair, "refreshToken")).await.json().await.unwrap();
    let ott = gw.issue_ott(&s(&refreshed, "accessToken")).await;
    assert_eq!(gw.verify_ott(s(&ott, "token")).await["valid"], true);
    assert_eq!(gw.verify_ott(s(&ott, "token")).await["valid"], false);
    let r =
        gw.client.post(gw.url("/auth/token/revoke")).bearer_auth(s(&refreshed, "accessToken")).send().await;
    assert_eq!(r.unwrap().status(), 204);
    let admin = gw.access_token(ADMIN).await;
    let r = gw
        .client
        .patch(gw.url("/connectors/settings"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"accessTokenLifeTime": 600}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let victim = gw.login(TRADER).await;
    let path = format!("/admin/sessions/{}", session_of(&victim));
    assert_eq!(admin_call(gw, reqwest::Method::DELETE, &path, &admin).await.status(), 204);

    let all = audit(gw, &admin, "").await;
    assert_eq!(
        types(&all),
        [
            "session.revoked",
            "login.ok",
            "settings.changed",
            "login.ok",
            "logout",
            "ott.refused",
            "ott.verified",
            "ott.issued",
            "refresh.ok",
            "login.ok",
            "login.failed"
        ]
    );
    let failed = &all[10];
    assert_eq!(
        (failed["login"].as_str(), failed["details"]["code"].as_str()),
        (Some("bob"), Some("1.2.0.11"))
    );
    let ok = &all[9];
    assert_eq!(ok["session"], session_of(&pair));
    assert_eq!(
        (ok["clientAddress"].as_str(), ok["userAgent"].as_str()),
        (Some("127.0.0.1"), Some("audit-agent/1"))
    );
    assert_eq!(ok["requestId"].as_str().unwrap().len(), 32);
    assert!(!ok["replica"].as_str().unwrap().is_empty());
    let time = ok["time"].as_str().unwrap();
    assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
    let revoked = &all[0];
    assert_eq!((revoked["login"].as_str(), revoked["details"]["by"].as_str()), (Some("bob"), Some("alice")));
    let settings = &all[2];
    assert_eq!(settings["details"]["by"], "alice");
    assert_eq!(settings["details"]["old"]["accessTokenLifeTime"], 900);
    assert_eq!(settings["details"]["new"]["accessTokenLifeTime"], 600);
    let text = serde_json::to_string(&all).unwrap();
    for secret in [TRADER.1, "wrong-password", ADMIN.1, &s(&pair, "accessToken"), &s(&ott, "token")] {
        assert!(!text.contains(secret), "an event holds a secret");
    }
    for p in [&pair, &refreshed] {
        assert!(!text.contains(s(p, "refreshToken").rsplit('.').next().unwrap()));
    }

    assert_eq!(types(&audit(gw, &admin, "?type=login.ok&limit=2").await), ["login.ok", "login.ok"]);
    assert_eq!(audit(gw, &admin, "?login=alice").await.len(), 2, "the admin's login and settings change");
    let of_session = audit(gw, &admin, &format!("?session={}", session_of(&pair))).await;
    assert_eq!(types(&of_session), ["logout", "ott.issued", "refresh.ok", "login.ok"]);
    assert!(audit(gw, &admin, "?since=2999-01-01T00:00:00Z").await.is_empty());
    assert_eq!(audit(gw, &admin, "?since=2000-01-01T00:00:00%2B01:00").await.len(), all.len());
    for bad in ["?type=login", "?since=yesterday", "?limit=0", "?who=bob", "?login=a&login=b"] {
        let r = admin_call(gw, reqwest::Method::GET, &format!("/admin/audit{bad}"), &admin).await;
        assert_eq!(error_code(r).await, (400, "request.malformed".into()), "{bad}");
    }
    let trader = gw.access_token(TRADER).await;
    let r = admin_call(gw, reqwest::Method::GET, "/admin/audit", &trader).await;
    assert_eq!(error_code(r).await, (403, "forbidden".into()));
    let metrics = reqwest::get(gw.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("bo_gateway_audit_events_total{type=\"login.ok\"} 4"), "{metrics}");
    assert!(metrics.contains("bo_gateway_admin_sessions_ended_total 1"));
    env.finish().await;
}

async fn limits_and_failures_are_audited(on_redis: bool) {
    let Some(env) = Env::start(on_redis).await else { return };
    let gw = &env.gw;
    for _ in 0..5 {
        assert_eq!(gw.try_login(TRADER.0, "nope").await.status(), 401);
    }
    assert_eq!(gw.try_login(TRADER.0, TRADER.1).await.status(), 429);
    assert_eq!(gw.try_login(support::DISABLED.0, support::DISABLED.1).await.status(), 401);
    let admin = gw.access_token(ADMIN).await;
    let limited = audit(gw, &admin, "?type=login.limited").await;
    assert_eq!(limited.len(), 1);
    assert_eq!(
        (limited[0]["login"].as_str(), limited[0]["details"]["code"].as_str()),
        (Some("bob"), Some("2.147.1.27"))
    );
    let disabled = audit(gw, &admin, "?login=carol").await;
    assert_eq!(disabled[0]["details"]["code"], "2.0.2.4");
    env.finish().await;
}

on_both_stores_audit!(the_audit_trail, limits_and_failures_are_audited);

/// `audit.path`: one JSON object a line, there once the writer has caught up; after a
/// logrotate-style rename and a reload, events go to a new file at the path. A file that cannot
/// be written fails no login: it is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_file_is_appended_reopened_and_never_fails_a_login() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let path = logs.join("audit.jsonl");
    let up = upstream::start("bo").await;
    let setup = Setup {
        routes: format!(
            "[audit]\npath = \"{}\"\nkeep = 3\n\n{}",
            path.display(),
            route("api", "/api", &up.url(), "")
        ),
        ..Default::default()
    };
    let gw = Gateway::start(setup).await;
    gw.login(TRADER).await;
    assert_eq!(gw.try_login(TRADER.0, "bad").await.status(), 401);
    gw.gateway().audit.flush().await;
    let lines: Vec<Value> =
        std::fs::read_to_string(&path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(types(&lines), ["login.ok", "login.failed"]);

    std::fs::rename(&path, logs.join("audit.jsonl.1")).unwrap();
    gw.running.as_ref().unwrap().reload().await.unwrap();
    let admin = gw.access_token(ADMIN).await;
    gw.gateway().audit.flush().await;
    let fresh = std::fs::read_to_string(&path).unwrap();
    assert_eq!(fresh.lines().count(), 1, "the event after the reload is in the new file");
    assert!(fresh.contains("\"login\":\"alice\""));
    assert_eq!(std::fs::read_to_string(logs.join("audit.jsonl.1")).unwrap().lines().count(), 2);
    assert_eq!(audit(&gw, &admin, "").await.len(), 3, "the store keeps audit.keep events");

    // The folder goes away: logins go on; the failure is counted.
    std::fs::remove_dir_all(&logs).unwrap();
    gw.running.as_ref().unwrap().reload().await.unwrap_err();
    std::fs::create_dir(&logs).unwrap();
    gw.running.as_ref().unwrap().reload().await.unwrap();
    std::fs::remove_dir_all(&logs).unwrap();
    assert_eq!(gw.try_login(TRADER.0, TRADER.1).await.status(), 200);
    gw.gateway().audit.flush().await;
    let metrics = reqwest::get(gw.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("bo_gateway_audit_write_failures_total{sink=\"file\"} 1"), "{metrics}");
    assert!(metrics.contains("bo_gateway_audit_queued 0"), "{metrics}");
    assert_eq!(audit(&gw, &admin, "?limit=1").await[0]["type"], "login.ok", "the store still has it");
}

/// The reuse grace and theft are told apart in the trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_and_theft_are_audited() {
    let Some(env) = Env::start(false).await else { return };
    let gw = &env.gw;
    let pair = gw.login(TRADER).await;
    let t0 = s(&pair, "refreshToken");
    let next: Value = gw.refresh(&t0).await.json().await.unwrap();
    assert_eq!(gw.refresh(&t0).await.status(), 200, "within the grace");
    assert_eq!(gw.refresh(&s(&next, "refreshToken")).await.status(), 200);
    assert_eq!(error_code(gw.refresh(&t0).await).await, (401, "token.reused".into()));
    let admin = gw.access_token(ADMIN).await;
    let trail = audit(gw, &admin, &format!("?session={}", session_of(&pair))).await;
    assert_eq!(types(&trail), ["refresh.reused", "refresh.ok", "refresh.grace", "refresh.ok", "login.ok"]);
    assert_eq!(trail[0]["login"], "bob");
    env.finish().await;
}

/// The audit file and store are written after the answer, in order, by one writer: with the
/// file a FIFO nobody reads (so the writer is stuck opening it), logins are still answered and
/// the events wait in the queue (none lost, none in the store yet); a graceful shutdown waits
/// for the writer, which then writes every event in the order they happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_writes_wait_for_nobody_and_shutdown_waits_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("audit.fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let _unblock = DrainFifo(fifo.clone());
    let up = upstream::start("bo").await;
    let setup = Setup {
        routes: format!(
            "[audit]\npath = \"{}\"\nkeep = 100\n\n{}",
            fifo.display(),
            route("api", "/api", &up.url(), "")
        ),
        ..Default::default()
    };
    let mut gw = Gateway::start(setup).await;
    let mut expected = Vec::new();
    for i in 0..6 {
        // Bounded only so that a regression fails instead of hanging: each is answered at once.
        let answer = if i % 3 == 2 {
            expected.push("login.failed");
            tokio::time::timeout(Duration::from_secs(20), gw.try_login(TRADER.0, "wrong")).await
        } else {
            expected.push("login.ok");
            tokio::time::timeout(Duration::from_secs(20), gw.try_login(TRADER.0, TRADER.1)).await
        };
        assert!(answer.is_ok(), "a login waited for the audit file");
    }
    let metrics = reqwest::get(gw.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("bo_gateway_audit_queued 6"), "{metrics}");
    assert!(gw.gateway().store.audit_events(100).await.unwrap().is_empty(), "the store comes after the file");

    let running = gw.running.take().unwrap();
    let audit = running.gateway.clone();
    running.shutdown();
    let mut stopped = tokio::spawn(running.wait());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut stopped).await.is_err(),
        "shutdown did not wait for the audit writer"
    );
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let f = std::io::BufReader::new(std::fs::File::open(&fifo).unwrap());
        f.lines().take(6).map(|l| serde_json::from_str::<Value>(&l.unwrap()).unwrap()).collect::<Vec<_>>()
    });
    stopped.await.unwrap();
    assert_eq!(audit.audit.queued.load(std::sync::atomic::Ordering::Relaxed), 0);
    let lines = tokio::task::spawn_blocking(move || reader.join().unwrap()).await.unwrap();
    assert_eq!(types(&lines), expected);
    let stored: Vec<Value> = audit
        .store
        .audit_events(100)
        .await
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut newest_first = expected.clone();
    newest_first.reverse();
    assert_eq!(types(&stored), newest_first, "the store has them too, in order");
}

/// On the way out, pass or fail: the FIFO gets a reader that empties it, so the writer task is
/// never left blocked opening it (the runtime would wait for it for ever). Opened read-write,
/// which on Linux neither blocks nor ever sees end-of-file, before the folder goes.
struct DrainFifo(std::path::PathBuf);

impl Drop for DrainFifo {
    fn drop(&mut self) {
        if let Ok(mut f) = std::fs::OpenOptions::new().read(true).write(true).open(&self.0) {
            std::thread::spawn(move || std::io::copy(&mut f, &mut std::io::sink()));
        }
    }
}
