//! The Bearer header parser and token decoding: arbitrary header bytes never panic, and nothing
//! but a token signed by the gateway's key verifies.
#![no_main]

use std::sync::OnceLock;

use bo_gateway::auth::keys::KeySet;
use bo_gateway::auth::tokens::{TokenSettings, bearer_token, verify_signature};
use bo_gateway::config::TokensConfig;
use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;

fn keys() -> &'static (KeySet, TokenSettings) {
    static KEYS: OnceLock<(KeySet, TokenSettings)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("bo-gateway-fuzz-{}", std::process::id()));
        let cfg = TokensConfig {
            signing_key: dir.join("signing.pem"),
            generate_signing_key: true,
            ..Default::default()
        };
        let keys = KeySet::load(&cfg, std::path::Path::new("fuzz.toml")).expect("keys");
        let settings = TokenSettings::new("bo-gateway".into(), "bo-api".into(), 30);
        (keys, settings)
    })
}

fuzz_target!(|data: &[u8]| {
    let (keys, settings) = keys();
    let mut headers = HeaderMap::new();
    let Ok(value) = HeaderValue::from_bytes(data) else { return };
    headers.insert(header::AUTHORIZATION, value);
    if let Ok(token) = bearer_token(&headers) {
        assert!(token.len() <= 8192);
        assert!(verify_signature(token, keys, settings).is_err(), "a fuzzed token verified");
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = verify_signature(s, keys, settings);
    }
});
