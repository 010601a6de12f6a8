use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::support::*;

const LEEWAY: u64 = 5;

async fn setup() -> (Gateway, upstream::Upstream, String) {
    let up = upstream::start("bo").await;
    let setup = Setup {
        tokens: format!("leeway = \"{LEEWAY}s\""),
        routes: route("api", "/api", &up.url(), ""),
        ..Default::default()
    };
    let gw = Gateway::start(setup).await;
    let real = gw.access_token(TRADER).await;
    let header: Value =
        serde_json::from_slice(&B64.decode(real.split('.').next().unwrap()).unwrap()).unwrap();
    (gw, up, header["kid"].as_str().unwrap().to_string())
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn claims(overrides: Value) -> Value {
    let mut c = json!({
        "iss": "bo-gateway", "aud": "bo-api", "sub": "bob", "roles": ["trader"],
        "sid": "attacker-session", "jti": "j", "iat": now(), "exp": now() + 600
    });
    for (k, v) in overrides.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

/// A token signed with the gateway's own key: only the claims are wrong (or right).
fn mint(gw: &Gateway, kid: &str, claims: &Value) -> String {
    let pem = std::fs::read(gw.dir.path().join("signing.pem")).unwrap();
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_ed_pem(&pem).unwrap()).unwrap()
}

async fn check(gw: &Gateway, token: &str) -> (u16, String) {
    let r = gw
        .client
        .get(gw.url("/api/x"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    error_code(r).await
}

both_transports! {
    #[tokio::test]
    async fn forged_tokens_are_refused_and_never_cached() {
        let (gw, up, kid) = setup().await;
        let cache_before = gw.gateway().cache.len();
        let good = claims(json!({}));
        let good_payload = B64.encode(good.to_string());

        let none = format!(
            "{}.{}.",
            B64.encode(json!({"alg": "none", "typ": "JWT", "kid": kid}).to_string()),
            good_payload
        );
        let none_upper =
            format!("{}.{}.", B64.encode(json!({"alg": "None", "kid": kid}).to_string()), good_payload);

        // Algorithm confusion: HS256 keyed with the public key as published in the JWKS and as PEM.
        let jwks: Value =
            gw.client.get(gw.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
        let x = jwks["keys"][0]["x"].as_str().unwrap().to_string();
        let mut hs = Header::new(Algorithm::HS256);
        hs.kid = Some(kid.clone());
        let confused_jwk = jsonwebtoken::encode(&hs, &good, &EncodingKey::from_secret(x.as_bytes())).unwrap();
        let confused_raw =
            jsonwebtoken::encode(&hs, &good, &EncodingKey::from_secret(&B64.decode(&x).unwrap())).unwrap();

        // Another key entirely, with our kid and with an unknown one.
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let other_key = EncodingKey::from_ed_pem(other.serialize_pem().as_bytes()).unwrap();
        let mut eh = Header::new(Algorithm::EdDSA);
        eh.kid = Some(kid.clone());
        let wrong_key = jsonwebtoken::encode(&eh, &good, &other_key).unwrap();
        eh.kid = Some("not-a-kid".into());
        let unknown_kid = jsonwebtoken::encode(&eh, &good, &other_key).unwrap();
        eh.kid = None;
        let no_kid = jsonwebtoken::encode(&eh, &good, &other_key).unwrap();

        let real = mint(&gw, &kid, &good);
        let (h, p, s) = {
            let mut it = real.split('.');
            (it.next().unwrap().to_string(), it.next().unwrap().to_string(), it.next().unwrap().to_string())
        };
        let cases: Vec<(&str, String)> = vec![
            ("alg none", none),
            ("alg None", none_upper),
            ("HS256 keyed with the JWK x", confused_jwk),
            ("HS256 keyed with the raw public key", confused_raw),
            ("signed by another key under our kid", wrong_key),
            ("unknown kid", unknown_kid),
            ("no kid", no_kid),
            ("other issuer", mint(&gw, &kid, &claims(json!({"iss": "evil"})))),
            ("other audience", mint(&gw, &kid, &claims(json!({"aud": "other-api"})))),
            ("no exp", mint(&gw, &kid, &claims(json!({"exp": null})))),
            ("exp as string", mint(&gw, &kid, &claims(json!({"exp": "never"})))),
            ("nbf in the future beyond leeway", mint(&gw, &kid, &claims(json!({"nbf": now() + LEEWAY + 60})))),
            ("empty sub", mint(&gw, &kid, &claims(json!({"sub": ""})))),
            (
                "payload swapped",
                format!(
                    "{h}.{}.{s}",
                    B64.encode(claims(json!({"sub": "alice", "roles": ["admin"]})).to_string())
                ),
            ),
            ("signature stripped", format!("{h}.{p}.")),
            ("two segments", format!("{h}.{p}")),
            ("non-base64 header", format!("!!!.{p}.{s}")),
            ("non-base64 payload", format!("{h}.@@@.{s}")),
            ("non-JSON header", format!("{}.{p}.{s}", B64.encode("not json"))),
            ("oversized", format!("{h}.{}.{s}", "A".repeat(9000))),
        ];
        for (what, token) in cases {
            assert_eq!(check(&gw, &token).await, (401, "token.invalid".into()), "{what}");
        }
        assert_eq!(gw.gateway().cache.len(), cache_before, "a refused token entered the cache");
        assert_eq!(up.hits(), 0);
        // And the gateway still serves a real token.
        assert_eq!(gw.client.get(gw.url("/api/x")).bearer_auth(real).send().await.unwrap().status(), 200);
    }
}

both_transports! {
    #[tokio::test]
    async fn exp_and_nbf_at_the_leeway_boundaries() {
        let (gw, _up, kid) = setup().await;
        // Inside the leeway: accepted.
        let t = mint(&gw, &kid, &claims(json!({"exp": now() - (LEEWAY - 3)})));
        assert_eq!(gw.client.get(gw.url("/api/x")).bearer_auth(&t).send().await.unwrap().status(), 200);
        let t = mint(&gw, &kid, &claims(json!({"nbf": now() + (LEEWAY - 3)})));
        assert_eq!(gw.client.get(gw.url("/api/x")).bearer_auth(&t).send().await.unwrap().status(), 200);
        // Beyond it: expired / not yet valid.
        let expired = mint(&gw, &kid, &claims(json!({"exp": now() - LEEWAY - 3})));
        assert_eq!(check(&gw, &expired).await, (401, "1.1.1.11".into()));
        let early = mint(&gw, &kid, &claims(json!({"nbf": now() + LEEWAY + 3})));
        assert_eq!(check(&gw, &early).await, (401, "token.invalid".into()));
    }
}

both_transports! {
    #[tokio::test]
    async fn the_expired_code_only_when_expiry_is_the_one_fault() {
        let (gw, _up, kid) = setup().await;
        let past = now() - LEEWAY - 3;
        // BO clients refresh on `1.1.1.11`: a token with any other fault must not invite that.
        for (what, token) in [
            ("foreign issuer", mint(&gw, &kid, &claims(json!({"exp": past, "iss": "evil"})))),
            ("foreign audience", mint(&gw, &kid, &claims(json!({"exp": past, "aud": "other"})))),
            ("not yet valid", mint(&gw, &kid, &claims(json!({"exp": past, "nbf": now() + LEEWAY + 3})))),
            ("no session", mint(&gw, &kid, &claims(json!({"exp": past, "sid": ""})))),
            ("unknown kid", mint(&gw, "nope", &claims(json!({"exp": past})))),
            ("bad signature", {
                let t = mint(&gw, &kid, &claims(json!({"exp": past})));
                let (rest, sig) = t.rsplit_once('.').unwrap();
                format!("{rest}.{}", sig.chars().rev().collect::<String>())
            }),
        ] {
            assert_eq!(check(&gw, &token).await, (401, "token.invalid".into()), "{what}");
        }
        let expired = mint(&gw, &kid, &claims(json!({"exp": past})));
        let r = gw.client.get(gw.url("/api/x")).bearer_auth(&expired).send().await.unwrap();
        assert_eq!(r.headers()["www-authenticate"], "Bearer error=\"invalid_token\"");
        assert_eq!(error_code(r).await, (401, "1.1.1.11".into()));
        // Metrics still name the reason.
        let metrics = reqwest::get(gw.admin_url("/metrics")).await.unwrap().text().await.unwrap();
        let line = metrics
            .lines()
            .find(|l| l.starts_with("bo_gateway_auth") && l.contains("outcome=\"token.expired\""))
            .unwrap_or_else(|| panic!("no token.expired row in\n{metrics}"));
        assert!(!line.ends_with(" 0"), "{line}");
        assert!(!metrics.contains("1.1.1.11"), "the code is not a metrics reason");
    }
}
