//! The hot path and the session round trips, measured with criterion.
//!
//! `cargo bench --bench hot_path`. Figures and how to read them: benches/README.md.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use bo_gateway::auth::cache::{Revocations, TokenCache};
use bo_gateway::auth::keys::KeySet;
use bo_gateway::auth::refresh::RefreshToken;
use bo_gateway::auth::tokens::{self, TokenSettings, issue_access, now_secs, random_token, token_hash};
use bo_gateway::config::TokensConfig;
use bo_gateway::routes::normalize_path;
use bo_gateway::store::{MemoryStore, NewSession, Store};
use criterion::{Criterion, criterion_group, criterion_main};

fn keys(dir: &Path, algorithm: &str) -> KeySet {
    let mut cfg =
        TokensConfig { algorithm: algorithm.into(), generate_signing_key: true, ..Default::default() };
    if algorithm == "HS256" {
        cfg.secret_file = dir.join(format!("{algorithm}.secret"));
    } else {
        cfg.signing_key = dir.join(format!("{algorithm}.pem"));
    }
    KeySet::load(&cfg, Path::new("bench.toml")).unwrap()
}

fn bearer(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let now = now_secs();
    for alg in ["EdDSA", "ES256", "HS256", "RS256"] {
        let keys = keys(dir.path(), alg);
        let settings = TokenSettings::new("bo-gateway".into(), "bo-api".into(), 30);
        let roles = vec!["trader".to_string()];
        let (jwt, _) = issue_access(&keys, &settings, "alice", &roles, &random_token(16), 900, now).unwrap();
        let revocations = Revocations::new();

        let cache = TokenCache::new(100_000);
        tokens::verify(&jwt, &keys, &settings, &cache, &revocations, now).unwrap();
        c.bench_function(&format!("bearer/{alg}/cache_hit"), |b| {
            b.iter(|| tokens::verify(black_box(&jwt), &keys, &settings, &cache, &revocations, now).unwrap())
        });
        let off = TokenCache::new(0);
        c.bench_function(&format!("bearer/{alg}/cache_miss"), |b| {
            b.iter(|| tokens::verify(black_box(&jwt), &keys, &settings, &off, &revocations, now).unwrap())
        });
        if alg == "EdDSA" {
            c.bench_function("sign/EdDSA", |b| {
                b.iter(|| issue_access(&keys, &settings, "alice", &roles, "sid", 900, now).unwrap())
            });
            // A hit with a live revocation elsewhere: the revoked-set lookup is on the path.
            revocations.revoke("another-session", now + 900);
            c.bench_function("bearer/EdDSA/cache_hit_with_revocations", |b| {
                b.iter(|| {
                    tokens::verify(black_box(&jwt), &keys, &settings, &cache, &revocations, now).unwrap()
                })
            });
        }
    }
}

/// The ES256 signature check alone: the per-key table (`auth::es256`) against aws-lc.
fn es256(c: &mut Criterion) {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, ParsedPublicKey,
    };
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let message = [b'x'; 300];
    let sig = pair.sign(&rng, &message).unwrap();
    let public = pair.public_key().as_ref();
    let ours = bo_gateway::auth::es256::PublicKey::new(public).unwrap();
    let aws = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public).unwrap();
    c.bench_function("es256/verify/table", |b| {
        b.iter(|| assert!(ours.verify(black_box(&message), sig.as_ref())))
    });
    c.bench_function("es256/verify/aws_lc", |b| {
        b.iter(|| aws.verify_sig(black_box(&message), sig.as_ref()).unwrap())
    });
    c.bench_function("es256/key_table", |b| {
        b.iter(|| bo_gateway::auth::es256::PublicKey::new(black_box(public)).unwrap())
    });
}

fn paths(c: &mut Criterion) {
    c.bench_function("path/normal", |b| {
        b.iter(|| normalize_path(black_box("/api/v1/accounts/42/orders")).unwrap())
    });
    c.bench_function("path/dotted", |b| {
        b.iter(|| normalize_path(black_box("/api/./v1//x/../accounts/%34%32")).unwrap())
    });
}

fn store(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let now = now_secs();
    let new_session = |first: &RefreshToken| NewSession {
        id: first.session.clone(),
        login: "alice".into(),
        key_hash: first.proof_hash(),
        secret_hash: first.secret_hash(),
        refresh_expires: now + 3600,
        access_expires: now + 900,
        created_at: now,
        client_address: "127.0.0.1".into(),
        user_agent: String::new(),
    };
    let mut current = RefreshToken::first(&random_token(16));
    rt.block_on(store.create_session(new_session(&current))).unwrap();
    // One rotation per iteration, including making and hashing the next token, as the endpoint does.
    c.bench_function("store/memory/refresh_rotation", |b| {
        b.iter(|| {
            let next = current.successor();
            let succ = current.successor_record(&next, now + 3600, now + 900).unwrap();
            let r = rt.block_on(store.rotate_refresh(&current.presented(), &succ, 10, now)).unwrap();
            assert!(matches!(r, bo_gateway::store::Rotation::Rotated(_)));
            current = next;
        })
    });
    c.bench_function("store/memory/login_session", |b| {
        b.iter(|| {
            rt.block_on(store.create_session(new_session(&RefreshToken::first(&random_token(16))))).unwrap()
        })
    });
    c.bench_function("store/memory/ott_issue_verify", |b| {
        b.iter(|| {
            let h = token_hash(&random_token(32));
            rt.block_on(async {
                store.put_ott(&h, "alice", now + 30).await.unwrap();
                assert!(store.consume_ott(&h, now).await.unwrap().is_some());
            })
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(3));
    targets = bearer, es256, paths, store
}
criterion_main!(benches);
