//! Session load shared by the store benches (`stores`, `redis_cluster`): refresh rotations on
//! concurrently rotating sessions, against any `Store`.

use std::sync::Arc;
use std::time::Instant;

use bo_gateway::auth::refresh::RefreshToken;
use bo_gateway::auth::tokens::random_token;
use bo_gateway::store::{NewSession, Rotation, Store};

/// The benches' clock: fixed, so expiry never interferes.
pub const NOW: u64 = 1_000_000;

/// A session whose first refresh token is `first`, for `login`.
pub fn new_session(first: &RefreshToken, login: String) -> NewSession {
    NewSession {
        id: first.session.clone(),
        login,
        key_hash: first.proof_hash(),
        secret_hash: first.secret_hash(),
        refresh_expires: NOW + 28_800,
        access_expires: NOW + 900,
        created_at: NOW,
        client_address: "127.0.0.1".into(),
        user_agent: String::new(),
    }
}

/// `total` refresh rotations spread over `tasks` sessions rotating concurrently (each of
/// `login(first token)`); rotations per second.
pub async fn refresh(
    store: &Arc<dyn Store>,
    tasks: usize,
    total: usize,
    login: impl Fn(&RefreshToken) -> String,
) -> f64 {
    let mut heads = Vec::new();
    for _ in 0..tasks {
        let first = RefreshToken::first(&random_token(16));
        store.create_session(new_session(&first, login(&first))).await.unwrap();
        heads.push(first);
    }
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for mut current in heads {
        let store = store.clone();
        set.spawn(async move {
            for _ in 0..total / tasks {
                let next = current.successor();
                let succ = current.successor_record(&next, NOW + 28_800, NOW + 900).unwrap();
                let r = store.rotate_refresh(&current.presented(), &succ, 10, NOW).await.unwrap();
                assert!(matches!(r, Rotation::Rotated(_)));
                current = next;
            }
        });
    }
    set.join_all().await;
    (total / tasks * tasks) as f64 / started.elapsed().as_secs_f64()
}
