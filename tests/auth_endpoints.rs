//! SPEC §1: the authentication endpoints over real TLS against the real gateway.

#[macro_use]
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

async fn gateway_with_upstream() -> (Gateway, upstream::Upstream) {
    let up = upstream::start("bo").await;
    let gw = Gateway::start(Setup::routes(route("bo", "/api", &up.url(), ""))).await;
    (gw, up)
}

both_transports! {
    #[tokio::test]
    async fn login_returns_the_vendor_fields_and_a_complete_jwt() {
        let (gw, _up) = gateway_with_upstream().await;
        let pair = gw.login(ADMIN).await;
        assert_eq!(pair["accessTokenLifeTime"], 900);
        assert_eq!(pair["refreshTokenLifeTime"], 28800);
        let c = claims(pair["accessToken"].as_str().unwrap());
        // `{session}.{generation}.{proof and secret}`: opaque to clients, 48 random bytes in it.
        let refresh = pair["refreshToken"].as_str().unwrap();
        let (prefix, secret) = refresh.rsplit_once('.').unwrap();
        assert_eq!(prefix, format!("{}.0", c["sid"].as_str().unwrap()));
        assert_eq!(secret.len(), 64);
        assert_eq!(c["iss"], "bo-gateway");
        assert_eq!(c["aud"], "bo-api");
        assert_eq!(c["sub"], ADMIN.0);
        assert_eq!(c["roles"], json!(["admin", "trader"]));
        for k in ["sid", "jti", "iat", "exp"] {
            assert!(!c[k].is_null(), "claim {k} missing");
        }
        assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 900);
    }
}

both_transports! {
    #[tokio::test]
    async fn wrong_password_and_unknown_login_look_the_same() {
        let (gw, _up) = gateway_with_upstream().await;
        let mut answers = Vec::new();
        for (login, password) in [(ADMIN.0, "wrong"), ("nobody", "wrong"), ("", "")] {
            let r = gw.try_login(login, password).await;
            let status = r.status().as_u16();
            let www = r.headers().get("www-authenticate").cloned();
            answers.push((status, www, r.text().await.unwrap()));
        }
        assert_eq!(answers[0].0, 401);
        assert!(answers[0].2.contains("1.2.0.11"), "{}", answers[0].2);
        assert_eq!(answers[0], answers[1]);
        assert_eq!(answers[1], answers[2]);
    }
}

both_transports! {
    #[tokio::test]
    async fn disabled_user_is_refused_with_its_code() {
        let (gw, _up) = gateway_with_upstream().await;
        let r = gw.try_login(DISABLED.0, DISABLED.1).await;
        assert_eq!(error_code(r).await, (401, "2.0.2.4".into()));
        // The wrong password for a disabled user does not reveal that it is disabled.
        let r = gw.try_login(DISABLED.0, "x").await;
        assert_eq!(error_code(r).await, (401, "1.2.0.11".into()));
    }
}

both_transports! {
    #[tokio::test]
    async fn malformed_and_oversized_bodies() {
        let (gw, _up) = gateway_with_upstream().await;
        for body in ["{", "[]", "{\"login\": \"a\"}", "{\"login\": 1, \"password\": \"x\"}", ""] {
            let r = gw.client.post(gw.url("/auth/token")).body(body).send().await.unwrap();
            assert_eq!(error_code(r).await, (400, "request.malformed".into()), "body {body:?}");
        }
        let big = format!("{{\"login\": \"{}\", \"password\": \"x\"}}", "a".repeat(100_000));
        let r = gw.client.post(gw.url("/auth/token")).body(big).send().await.unwrap();
        assert_eq!(error_code(r).await, (413, "request.too_large".into()));
        let r = gw.client.get(gw.url("/auth/token")).send().await.unwrap();
        assert_eq!(r.headers()["allow"], "POST");
        assert_eq!(error_code(r).await, (405, "method.not_allowed".into()));
    }
}

both_transports! {
    #[tokio::test]
    async fn refresh_rotates_and_reuse_revokes_the_session() {
        let (gw, up) = gateway_with_upstream().await;
        let first = gw.login(TRADER).await;
        let r1 = first["refreshToken"].as_str().unwrap();

        let r = gw.refresh(r1).await;
        assert_eq!(r.status(), 200);
        let second: Value = r.json().await.unwrap();
        let r2 = second["refreshToken"].as_str().unwrap();
        assert_ne!(r1, r2);
        let a2 = second["accessToken"].as_str().unwrap();
        assert_eq!(claims(a2)["sid"], claims(first["accessToken"].as_str().unwrap())["sid"], "same session");
        let ok = gw.client.get(gw.url("/api/x")).bearer_auth(a2).send().await.unwrap();
        assert_eq!(ok.status(), 200);

        // Another session of the same user is untouched by what follows.
        let other = gw.login(TRADER).await;

        // r2 is spent too: r1 is now two generations old, beyond any grace. Theft: the whole
        // session goes.
        let third: Value = gw.refresh(r2).await.json().await.unwrap();
        let r = gw.refresh(r1).await;
        assert_eq!(error_code(r).await, (401, "token.reused".into()));
        let r = gw.client.get(gw.url("/api/x")).bearer_auth(a2).send().await.unwrap();
        assert_eq!(error_code(r).await, (401, "token.invalid".into()));
        let r = gw.refresh(third["refreshToken"].as_str().unwrap()).await;
        assert_eq!(error_code(r).await, (401, "token.invalid".into()));

        let r = gw
            .client
            .get(gw.url("/api/x"))
            .bearer_auth(other["accessToken"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = gw.refresh(other["refreshToken"].as_str().unwrap()).await;
        assert_eq!(r.status(), 200);
        assert_eq!(up.hits(), 2);
    }
}

both_transports! {
    #[tokio::test]
    async fn refresh_accepts_a_json_body_and_names_its_errors() {
        let (gw, _up) = gateway_with_upstream().await;
        let pair = gw.login(TRADER).await;
        let r = gw
            .client
            .get(gw.url("/auth/token/refresh"))
            .json(&json!({"refreshToken": pair["refreshToken"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = gw.client.get(gw.url("/auth/token/refresh")).send().await.unwrap();
        assert_eq!(error_code(r).await, (401, "token.missing".into()));
        let r = gw.refresh("not-a-real-token").await;
        assert_eq!(error_code(r).await, (401, "token.invalid".into()));
        let r = gw.client.get(gw.url("/auth/token/refresh")).body("{nope").send().await.unwrap();
        assert_eq!(error_code(r).await, (400, "request.malformed".into()));
    }
}

/// `n` refreshes with `token` at once: each answer's status and JSON.
async fn refresh_burst(gw: &Gateway, token: &str, n: usize) -> Vec<(u16, Value)> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (c, url, t) = (gw.client.clone(), gw.url("/auth/token/refresh"), token.to_string());
        tasks.spawn(async move {
            let r = c.get(url).header("token", t).send().await.unwrap();
            (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
        });
    }
    tasks.join_all().await
}

both_transports! {
    #[tokio::test]
    async fn without_grace_concurrent_refreshes_of_one_token_yield_exactly_one_success() {
        let up = upstream::start("bo").await;
        let setup = Setup {
            tokens: "refresh_reuse_grace = \"0s\"".into(),
            routes: route("bo", "/api", &up.url(), ""),
            ..Default::default()
        };
        let gw = Gateway::start(setup).await;
        let pair = gw.login(TRADER).await;
        let answers = refresh_burst(&gw, pair["refreshToken"].as_str().unwrap(), 8).await;
        let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
        assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
        // The first loser finds theft and revokes the session; the rest find it ended.
        let codes: Vec<&Value> =
            answers.iter().filter(|(s, _)| *s != 200).map(|(_, v)| &v["errors"][0]).collect();
        assert!(codes.iter().any(|c| *c == "token.reused"), "{answers:?}");
        assert!(codes.iter().all(|c| *c == "token.reused" || *c == "token.invalid"), "{answers:?}");
    }
}

both_transports! {
    /// SPEC §1 reuse grace: two tabs refreshing at once both end up holding the one live token.
    #[tokio::test]
    async fn within_the_grace_concurrent_refreshes_all_get_the_one_successor() {
        let (gw, up) = gateway_with_upstream().await;
        let pair = gw.login(TRADER).await;
        let answers = refresh_burst(&gw, pair["refreshToken"].as_str().unwrap(), 8).await;
        assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
        let successor = answers[0].1["refreshToken"].as_str().unwrap();
        assert!(answers.iter().all(|(_, v)| v["refreshToken"] == successor), "{answers:?}");
        // Each answer has its own freshly signed access token, and each works.
        let mut jtis: Vec<String> =
            answers.iter().map(|(_, v)| claims(v["accessToken"].as_str().unwrap())["jti"].to_string()).collect();
        jtis.sort();
        jtis.dedup();
        assert_eq!(jtis.len(), 8);
        for (_, v) in &answers {
            let r = gw
                .client
                .get(gw.url("/api/x"))
                .bearer_auth(v["accessToken"].as_str().unwrap())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        // The successor is the live token: it rotates; after that the first token is theft.
        let next: Value = gw.refresh(successor).await.json().await.unwrap();
        assert!(next["refreshToken"].is_string(), "{next}");
        let r = gw.refresh(pair["refreshToken"].as_str().unwrap()).await;
        assert_eq!(error_code(r).await, (401, "token.reused".into()));
        assert_eq!(up.hits(), 8);
    }
}

both_transports! {
    /// A client retrying after a timeout, one second later: the same successor, nothing revoked.
    #[tokio::test]
    async fn a_retried_refresh_within_the_grace_gets_the_same_successor() {
        let (gw, _up) = gateway_with_upstream().await;
        let pair = gw.login(TRADER).await;
        let r1 = pair["refreshToken"].as_str().unwrap();
        let first: Value = gw.refresh(r1).await.json().await.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let r = gw.refresh(r1).await;
        assert_eq!(r.status(), 200);
        let again: Value = r.json().await.unwrap();
        assert_eq!(again["refreshToken"], first["refreshToken"]);
        assert_ne!(again["accessToken"], first["accessToken"]);
        assert_eq!(again["refreshTokenLifeTime"], 28800);
    }
}

both_transports! {
    #[tokio::test]
    async fn one_time_tokens_verify_once() {
        let (gw, _up) = gateway_with_upstream().await;
        let access = gw.access_token(TRADER).await;
        let r = gw.client.post(gw.url("/external/token")).send().await.unwrap();
        assert_eq!(error_code(r).await, (401, "token.missing".into()));
        let ott = gw.issue_ott(&access).await;
        assert_eq!(ott["lifeTime"], 30);
        let token = ott["token"].as_str().unwrap();

        let v = gw.verify_ott(token).await;
        assert_eq!(v["valid"], true);
        assert_eq!(v["login"], TRADER.0);
        let fresh = v["accessToken"].as_str().unwrap();
        assert_eq!(claims(fresh)["sub"], TRADER.0);
        assert!(
            v["refreshToken"].is_string()
                && v["accessTokenLifeTime"] == 900
                && v["refreshTokenLifeTime"] == 28800
        );
        assert_eq!(gw.client.get(gw.url("/api/y")).bearer_auth(fresh).send().await.unwrap().status(), 200);

        for t in [token, "unknown-token", ""] {
            let v: Value = gw.verify_ott(t).await;
            assert_eq!(v, json!({"valid": false}), "token {t:?}");
        }
        let r = gw.client.post(gw.url("/external/token/verify")).body("nope").send().await.unwrap();
        assert_eq!(error_code(r).await, (400, "request.malformed".into()));
    }
}

both_transports! {
    #[tokio::test]
    async fn sixteen_concurrent_verifies_of_one_ott_give_one_valid() {
        let (gw, _up) = gateway_with_upstream().await;
        let access = gw.access_token(TRADER).await;
        let ott: Value = gw.issue_ott(&access).await;
        let token = ott["token"].as_str().unwrap().to_string();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (c, url, t) = (gw.client.clone(), gw.url("/external/token/verify"), token.clone());
            tasks.spawn(async move {
                let v: Value = c.post(url).json(&json!({"token": t})).send().await.unwrap().json().await.unwrap();
                v["valid"] == true
            });
        }
        let valid = tasks.join_all().await.into_iter().filter(|v| *v).count();
        assert_eq!(valid, 1);
    }
}

both_transports! {
    #[tokio::test]
    async fn expired_one_time_token_is_not_valid() {
        let up = upstream::start("bo").await;
        let setup = Setup {
            tokens: "one_time_lifetime = \"1s\"".into(),
            routes: route("bo", "/api", &up.url(), ""),
            ..Default::default()
        };
        let gw = Gateway::start(setup).await;
        let access = gw.access_token(TRADER).await;
        let ott: Value = gw.issue_ott(&access).await;
        assert_eq!(ott["lifeTime"], 1);
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let v: Value = gw.verify_ott(&ott["token"]).await;
        assert_eq!(v, json!({"valid": false}));
    }
}

both_transports! {
    #[tokio::test]
    async fn revoke_ends_the_session_everywhere_it_is_used() {
        let (gw, _up) = gateway_with_upstream().await;
        let pair = gw.login(TRADER).await;
        let access = pair["accessToken"].as_str().unwrap();
        assert_eq!(gw.client.get(gw.url("/api/x")).bearer_auth(access).send().await.unwrap().status(), 200);
        let r = gw.client.post(gw.url("/auth/token/revoke")).bearer_auth(access).send().await.unwrap();
        assert_eq!(r.status(), 204);
        let r = gw.client.get(gw.url("/api/x")).bearer_auth(access).send().await.unwrap();
        assert_eq!(error_code(r).await, (401, "token.invalid".into()));
        let r = gw.refresh(pair["refreshToken"].as_str().unwrap()).await;
        assert_eq!(error_code(r).await, (401, "token.invalid".into()));
        let r = gw.client.post(gw.url("/auth/token/revoke")).send().await.unwrap();
        assert_eq!(error_code(r).await, (401, "token.missing".into()));
    }
}

both_transports! {
    #[tokio::test]
    async fn expired_access_token_is_refused_even_from_the_cache() {
        let up = upstream::start("bo").await;
        let setup = Setup {
            tokens: "access_lifetime = \"1s\"\nleeway = \"0s\"".into(),
            routes: route("bo", "/api", &up.url(), ""),
            ..Default::default()
        };
        let gw = Gateway::start(setup).await;
        let access = gw.access_token(TRADER).await;
        assert_eq!(gw.client.get(gw.url("/api/x")).bearer_auth(&access).send().await.unwrap().status(), 200);
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let r = gw.client.get(gw.url("/api/x")).bearer_auth(&access).send().await.unwrap();
        assert_eq!(error_code(r).await, (401, "1.1.1.11".into()));
    }
}

both_transports! {
    #[tokio::test]
    async fn settings_are_admin_only_validated_and_applied() {
        let (gw, _up) = gateway_with_upstream().await;
        let admin = gw.access_token(ADMIN).await;
        let trader = gw.access_token(TRADER).await;
        let url = gw.url("/connectors/settings");

        let r = gw.client.get(&url).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            v,
            json!({"accessTokenLifeTime": 900, "refreshTokenLifeTime": 28800, "oneTimeTokenLifeTime": 30})
        );

        let r = gw.client.get(&url).bearer_auth(&trader).send().await.unwrap();
        assert_eq!(error_code(r).await, (403, "forbidden".into()));
        let r = gw
            .client
            .patch(&url)
            .bearer_auth(&trader)
            .json(&json!({"accessTokenLifeTime": 60}))
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r).await, (403, "forbidden".into()));
        let r = gw.client.get(&url).send().await.unwrap();
        assert_eq!(error_code(r).await, (401, "token.missing".into()));

        for bad in [
            json!({"accessTokenLifeTime": 0}),
            json!({"refreshTokenLifeTime": 2_592_001}),
            json!({"oneTimeTokenLifeTime": 601}),
            json!({"accessTokenLifeTime": "60"}),
            json!({"accessTokenLifeTime": -5}),
            json!({"accessTokenLifetime": 60}),
            json!({"accessTokenLifeTime": 60, "oneTimeTokenLifeTime": 0}),
        ] {
            let r = gw.client.patch(&url).bearer_auth(&admin).json(&bad).send().await.unwrap();
            assert_eq!(error_code(r).await, (400, "request.malformed".into()), "{bad}");
        }
        let v: Value = gw.client.get(&url).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
        assert_eq!(v["accessTokenLifeTime"], 900, "a refused PATCH changes nothing");

        let r = gw
            .client
            .patch(&url)
            .bearer_auth(&admin)
            .json(&json!({"accessTokenLifeTime": 60, "oneTimeTokenLifeTime": 600}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            v,
            json!({"accessTokenLifeTime": 60, "refreshTokenLifeTime": 28800, "oneTimeTokenLifeTime": 600})
        );

        let pair = gw.login(TRADER).await;
        assert_eq!(pair["accessTokenLifeTime"], 60);
        let c = claims(pair["accessToken"].as_str().unwrap());
        assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 60);
    }
}

both_transports! {
    #[tokio::test]
    async fn jwks_publishes_the_key_that_signs() {
        let (gw, _up) = gateway_with_upstream().await;
        let access = gw.access_token(TRADER).await;
        let header: Value = {
            use base64::Engine;
            let h = access.split('.').next().unwrap();
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap()
        };
        assert_eq!(header["alg"], "EdDSA");
        let jwks: Value =
            gw.client.get(gw.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0]["kid"], header["kid"]);
        assert_eq!(keys[0]["kty"], "OKP");
        assert_eq!(keys[0]["crv"], "Ed25519");
        assert!(keys[0].get("d").is_none(), "private part must never be published");
    }
}

both_transports! {
    #[tokio::test]
    async fn login_limits_lock_out_even_the_right_password_until_the_window_passes() {
        let (gw, _up) = {
            let up = upstream::start("bo").await;
            let setup = Setup {
                login_limits: "failures_per_login = 2\nfailures_per_address = 100\nwindow = \"2s\"".into(),
                routes: route("bo", "/api", &up.url(), ""),
                ..Default::default()
            };
            (Gateway::start(setup).await, up)
        };
        let attempt = |password: &'static str| {
            let (c, url) = (gw.client.clone(), gw.url("/auth/token"));
            async move { c.post(url).json(&json!({"login": TRADER.0, "password": password})).send().await.unwrap() }
        };
        assert_eq!(attempt("bad").await.status(), 401);
        assert_eq!(attempt("bad").await.status(), 401);
        let r = attempt(TRADER.1).await;
        assert!(r.headers().get("retry-after").is_some());
        assert_eq!(error_code(r).await, (429, "2.147.1.27".into()));
        tokio::time::sleep(Duration::from_millis(2200)).await;
        assert_eq!(attempt(TRADER.1).await.status(), 200);
    }
}

both_transports! {
    #[tokio::test]
    async fn api_prefix_moves_the_endpoints() {
        let up = upstream::start("bo").await;
        let setup = Setup {
            server: "api_prefix = \"/proftrading/rest\"".into(),
            routes: route("bo", "/api", &up.url(), ""),
            ..Default::default()
        };
        let gw = Gateway::start(setup).await;
        let r = gw
            .client
            .post(gw.url("/proftrading/rest/auth/token"))
            .json(&json!({"login": TRADER.0, "password": TRADER.1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = gw.try_login(TRADER.0, TRADER.1).await;
        assert_eq!(error_code(r).await, (404, "route.none".into()));
        assert_eq!(gw.client.get(gw.url("/.well-known/jwks.json")).send().await.unwrap().status(), 200);
    }
}

both_transports! {
    #[tokio::test]
    async fn auth_endpoints_answer_with_one_trailing_slash() {
        let up = upstream::start("bo").await;
        let setup = Setup {
            server: "api_prefix = \"/proftrading/rest\"".into(),
            routes: route("bo", "/", &up.url(), "auth = \"public\""),
            ..Default::default()
        };
        let gw = Gateway::start(setup).await;
        let body = json!({"login": TRADER.0, "password": TRADER.1});
        for c in [gw.client.clone(), gw.http2_client()] {
            let r = c.post(gw.url("/proftrading/rest/auth/token/")).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let pair: Value = r.json().await.unwrap();
            let r = c
                .get(gw.url("/proftrading/rest/auth/token/refresh/"))
                .header("token", pair["refreshToken"].as_str().unwrap())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let r = c.get(gw.url("/proftrading/rest/auth/token/")).send().await.unwrap();
            assert_eq!(r.headers()["allow"], "POST");
            assert_eq!(error_code(r).await, (405, "method.not_allowed".into()));
            let r = c.post(gw.url("/proftrading/rest/external/token/")).send().await.unwrap();
            assert_eq!(error_code(r).await, (401, "token.missing".into()));
        }
        assert_eq!(up.hits(), 0, "no auth endpoint with a slash went to the catch-all route");
        // One slash only, and nothing else: these are the catch-all route's.
        for path in
            ["/proftrading/rest/auth/tokenx", "/proftrading/rest/auth/token/x", "/proftrading/restauth/token"]
        {
            assert_eq!(gw.client.post(gw.url(path)).send().await.unwrap().status(), 200, "{path}");
        }
        assert_eq!(up.hits(), 3);
    }
}

both_transports! {
    #[tokio::test]
    async fn every_supported_algorithm_issues_and_verifies() {
        let up = upstream::start("bo").await;
        for (alg, extra, kty) in [
            ("ES256", "", Some("EC")),
            ("RS256", "", Some("RSA")),
            ("HS256", "secret_file = \"{dir}/hs256.secret\"", None),
            ("EdDSA", "", Some("OKP")),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let tokens =
                format!("algorithm = \"{alg}\"\n{}", extra.replace("{dir}", &dir.path().display().to_string()));
            let gw = Gateway::start(Setup {
                tokens,
                routes: route("bo", "/api", &up.url(), ""),
                ..Default::default()
            })
            .await;
            let access = gw.access_token(TRADER).await;
            let header: Value = {
                use base64::Engine;
                let h = access.split('.').next().unwrap();
                serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).unwrap())
                    .unwrap()
            };
            assert_eq!(header["alg"], alg);
            assert_eq!(
                gw.client.get(gw.url("/api/x")).bearer_auth(&access).send().await.unwrap().status(),
                200,
                "{alg}"
            );
            // One character of the signature changed: refused, whatever the algorithm.
            let mut tampered = access.clone().into_bytes();
            let at = tampered.len() - 10;
            tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(tampered).unwrap();
            let r = gw.client.get(gw.url("/api/x")).bearer_auth(&tampered).send().await.unwrap();
            assert_eq!(error_code(r).await, (401, "token.invalid".into()), "{alg}");
            let jwks: Value =
                gw.client.get(gw.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
            match kty {
                Some(kty) => assert_eq!(jwks["keys"][0]["kty"], kty, "{alg}"),
                None => assert_eq!(jwks["keys"], json!([]), "HS256 secrets are never published"),
            }
        }
    }
}

both_transports! {
    #[tokio::test]
    async fn login_limits_per_address_see_through_trusted_proxies() {
        let up = upstream::start("bo").await;
        let setup = Setup {
            server: "trusted_proxies = [\"127.0.0.1\"]".into(),
            login_limits: "failures_per_login = 100\nfailures_per_address = 2\nwindow = \"1m\"".into(),
            routes: route("bo", "/api", &up.url(), ""),
            ..Default::default()
        };
        let gw = Gateway::start(setup).await;
        let attempt = |client_ip: &'static str, login: &'static str, password: &'static str| {
            let (c, url) = (gw.client.clone(), gw.url("/auth/token"));
            async move {
                c.post(url)
                    .header("X-Forwarded-For", client_ip)
                    .json(&json!({"login": login, "password": password}))
                    .send()
                    .await
                    .unwrap()
            }
        };
        // Two failures from one client address (behind our trusted balancer), on different logins.
        assert_eq!(attempt("198.51.100.7", "a", "x").await.status(), 401);
        assert_eq!(attempt("198.51.100.7", "b", "x").await.status(), 401);
        let r = attempt("198.51.100.7", TRADER.0, TRADER.1).await;
        assert_eq!(error_code(r).await, (429, "2.147.1.27".into()), "the address is locked");
        // Another client behind the same balancer is not.
        assert_eq!(attempt("198.51.100.8", TRADER.0, TRADER.1).await.status(), 200);
    }
}

both_transports! {
    /// SPEC §1: logout is not theft. The refresh token of a logged-out session, even one just
    /// spent and inside the grace, is `token.invalid`, and no refresh is counted as reuse.
    #[tokio::test]
    async fn logout_then_refresh_is_invalid_not_theft() {
        let (gw, _up) = gateway_with_upstream().await;
        let pair = gw.login(TRADER).await;
        let r1 = pair["refreshToken"].as_str().unwrap();
        let second: Value = gw.refresh(r1).await.json().await.unwrap();
        let access = second["accessToken"].as_str().unwrap();
        let r = gw.client.post(gw.url("/auth/token/revoke")).bearer_auth(access).send().await.unwrap();
        assert_eq!(r.status(), 204);
        for token in [second["refreshToken"].as_str().unwrap(), r1, r1] {
            let r = gw.refresh(token).await;
            assert_eq!(error_code(r).await, (401, "token.invalid".into()));
        }
        let metrics = reqwest::get(gw.admin_url("/metrics")).await.unwrap().text().await.unwrap();
        let reused = metrics
            .lines()
            .find(|l| l.starts_with("bo_gateway_refreshes_total") && l.contains("token.reused"))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or("0");
        assert_eq!(reused, "0", "{metrics}");
    }
}

both_transports! {
    /// Refresh tokens issued before bounded sessions (43 characters, no session in them) are
    /// refused cleanly after the upgrade.
    #[tokio::test]
    async fn refresh_tokens_of_the_old_form_are_invalid() {
        let (gw, _up) = gateway_with_upstream().await;
        let legacy = bo_gateway::auth::tokens::random_token(32);
        let r = gw.refresh(&legacy).await;
        assert_eq!(error_code(r).await, (401, "token.invalid".into()));
    }
}
