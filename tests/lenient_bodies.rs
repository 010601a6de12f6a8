//! SPEC §1: the lenient bodies BO's own clients send (`{login:demo,password:secret}`), against
//! the real gateway with the TraderEvolution prefix, over HTTP/1.1 (the fast path) and HTTP/2
//! (hyper's path).

mod support;

use serde_json::Value;
use support::*;

const PREFIX: &str = "/proftrading/rest";

/// The gateway with the vendor's prefix and a users file that also has the Java client's user.
async fn start() -> (Gateway, upstream::Upstream, tempfile::TempDir) {
    let users = tempfile::tempdir().unwrap();
    let hash = |p: &str| bo_gateway::auth::credentials::hash_password_with(p, 1024, 1, 1).unwrap();
    let file = users.path().join("users.toml");
    std::fs::write(
        &file,
        format!(
            "[[users]]\nlogin = \"demo\"\npassword_hash = \"{}\"\nroles = [\"trader\"]\n\n\
             [[users]]\nlogin = \"alice\"\npassword_hash = \"{}\"\nroles = [\"admin\"]\n",
            hash("secret"),
            hash(ADMIN.1)
        ),
    )
    .unwrap();
    let up = upstream::start("bo").await;
    let setup = Setup {
        server: format!("api_prefix = \"{PREFIX}\""),
        credentials: format!("kind = \"file\"\nusers_file = \"{}\"", file.display()),
        routes: route("bo", "/api", &up.url(), ""),
        ..Default::default()
    };
    (Gateway::start(setup).await, up, users)
}

async fn post(c: &reqwest::Client, gw: &Gateway, path: &str, body: &str) -> reqwest::Response {
    c.post(gw.url(&format!("{PREFIX}{path}")))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_java_clients_login_works_on_both_transports() {
    let (gw, up, _users) = start().await;
    for c in [gw.client.clone(), gw.http2_client()] {
        let r = post(&c, &gw, "/auth/token", "{login:demo,password:secret}").await;
        assert_eq!(r.status(), 200);
        let pair: Value = r.json().await.unwrap();
        assert_eq!(claims(pair["accessToken"].as_str().unwrap())["sub"], "demo");
        let api = c.get(gw.url("/api/x")).bearer_auth(pair["accessToken"].as_str().unwrap());
        assert_eq!(api.send().await.unwrap().status(), 200);
        // Wrong password, unknown login: the same 401 as with standard JSON.
        for body in [
            "{login:demo,password:wrong}",
            "{login:nobody,password:secret}",
            "{\"login\":demo,password:\"x\"}",
        ] {
            let r = post(&c, &gw, "/auth/token", body).await;
            assert_eq!(error_code(r).await, (401, "1.2.0.11".into()), "{body}");
        }
        // Standard JSON still works.
        let r = post(&c, &gw, "/auth/token", r#"{"login":"demo","password":"secret"}"#).await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn bad_lenient_bodies_are_400_and_check_no_password() {
    let (gw, _up, _users) = start().await;
    let exact = "{login:demo,password:secret}";
    let mut bad: Vec<String> = vec![
        // Characters that end a bare token, then something that is not `,` or `}`.
        "{login:de mo,password:secret}".into(),
        "{login:demo,password:sec ret}".into(),
        "{login:demo,password:sec\"ret\"}".into(),
        "{login:demo,password:sec'ret}".into(),
        "{login:demo,password:sec;ret}".into(),
        "{login:demo,password:sec=ret}".into(),
        "{login:demo,password:sec#ret}".into(),
        "{login:demo,password:sec/ret}".into(),
        "{login:demo,password:sec\\ret}".into(),
        "{login:demo:x,password:secret}".into(),
        // Empty values.
        "{login:,password:secret}".into(),
        "{login:demo,password:}".into(),
        // Nested or repeated.
        "{login:{name:demo},password:secret}".into(),
        "{login:[demo],password:secret}".into(),
        "{login:demo,login:demo,password:secret}".into(),
        "{login:demo,\"login\":demo,password:secret}".into(),
        // Other leniencies standard JSON refuses: not taken.
        "{'login':'demo','password':'secret'}".into(),
        "{login=demo;password=secret}".into(),
        "{login:demo,password:secret,}".into(),
        "{login:demo,password:secret}x".into(),
        "/*c*/{login:demo,password:secret}".into(),
        // Not strings: a bare number keeps its JSON meaning.
        "{login:demo,password:123}".into(),
        "{login:null,password:secret}".into(),
    ];
    // Every truncation of the exact body.
    bad.extend((0..exact.len()).map(|n| exact[..n].to_string()));
    for c in [gw.client.clone(), gw.http2_client()] {
        for body in &bad {
            let r = post(&c, &gw, "/auth/token", body).await;
            assert_eq!(error_code(r).await, (400, "request.malformed".into()), "{body:?}");
        }
    }
    // None of them counted as a failed login: the right password still logs in (the limit
    // would have refused it after 5 failures).
    assert_eq!(post(&gw.client, &gw, "/auth/token", exact).await.status(), 200);
}

#[tokio::test]
async fn an_empty_quoted_value_is_a_string_and_a_wrong_login() {
    let (gw, _up, _users) = start().await;
    let r = post(&gw.client, &gw, "/auth/token", "{login:\"\",password:\"\"}").await;
    assert_eq!(error_code(r).await, (401, "1.2.0.11".into()));
}

#[tokio::test]
async fn a_body_cut_short_of_its_length_is_not_complete() {
    let (gw, _up, _users) = start().await;
    // The head promises more than arrives before the client stops sending: no login.
    let exact = "{login:demo,password:secret}";
    let head = format!(
        "POST {PREFIX}/auth/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        exact.len() + 5
    );
    let answer = gw.raw(format!("{head}{exact}").as_bytes()).await;
    assert!(!answer.contains(" 200 "), "{answer}");
}

#[tokio::test]
async fn refresh_ott_verify_and_settings_take_lenient_bodies_too() {
    let (gw, _up, _users) = start().await;
    let login = |body: &'static str| {
        let gw = &gw;
        async move { post(&gw.client, gw, "/auth/token", body).await.json::<Value>().await.unwrap() }
    };
    let pair = login("{login:demo,password:secret}").await;
    // The refresh body (no `token` header).
    let refresh = pair["refreshToken"].as_str().unwrap();
    let r = gw
        .client
        .get(gw.url(&format!("{PREFIX}/auth/token/refresh")))
        .body(format!("{{refreshToken:{refresh}}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = gw
        .client
        .get(gw.url(&format!("{PREFIX}/auth/token/refresh")))
        .body("{refreshToken:}")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (400, "request.malformed".into()));
    // A one-time token verified with a bare value.
    let access = pair["accessToken"].as_str().unwrap();
    let ott: Value = gw
        .client
        .post(gw.url(&format!("{PREFIX}/external/token")))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let v: Value = post(
        &gw.client,
        &gw,
        "/external/token/verify",
        &format!("{{token:{}}}", ott["token"].as_str().unwrap()),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!((v["valid"].as_bool(), v["login"].as_str()), (Some(true), Some("demo")));
    let v: Value =
        post(&gw.client, &gw, "/external/token/verify", "{token:unknown}").await.json().await.unwrap();
    assert_eq!(v["valid"], false);
    // The settings PATCH: a bare number is a number; a bare word is not.
    let admin = login("{login:alice,password:alice-password}").await;
    let admin = admin["accessToken"].as_str().unwrap();
    let patch = |body: &'static str| {
        gw.client.patch(gw.url(&format!("{PREFIX}/connectors/settings"))).bearer_auth(admin).body(body).send()
    };
    let r = patch("{accessTokenLifeTime:600}").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["accessTokenLifeTime"], 600);
    for body in
        ["{accessTokenLifeTime:ten}", "{accessTokenLifeTime:600,unknown:1}", "{accessTokenLifeTime:0}"]
    {
        let r = patch(body).await.unwrap();
        assert_eq!(error_code(r).await, (400, "request.malformed".into()), "{body}");
    }
}
