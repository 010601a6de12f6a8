//! `store.kind = "file"` through the real binary: sessions, spent tokens, used OTTs,
//! revocations and settings survive `kill -9`.

mod support;

use std::path::Path;

use serde_json::Value;
use support::binary::Served;
use support::{ADMIN, Setup, TRADER, error_code, route, upstream};

const BIN: &str = env!("CARGO_BIN_EXE_bo-gateway");

trait Calls {
    async fn refresh(&self, rt: &Value) -> reqwest::Response;
    async fn verify(&self, ott: &str) -> Value;
    async fn call(&self, at: &Value) -> u16;
}

impl Calls for Served {
    async fn refresh(&self, rt: &Value) -> reqwest::Response {
        let url = self.url("/auth/token/refresh");
        self.client.get(url).header("token", rt.as_str().unwrap()).send().await.unwrap()
    }

    async fn verify(&self, ott: &str) -> Value {
        let url = self.url("/external/token/verify");
        let r = self.client.post(url).json(&serde_json::json!({ "token": ott })).send().await.unwrap();
        r.json().await.unwrap()
    }

    async fn call(&self, at: &Value) -> u16 {
        let r = self.client.get(self.url("/api/x")).bearer_auth(at.as_str().unwrap()).send().await;
        r.unwrap().status().as_u16()
    }
}

fn serve(config: &Path, dir: &Path) -> Served {
    support::binary::serve(BIN, config, dir, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let up = upstream::start("bo").await;
    let setup = Setup {
        store: format!("kind = \"file\"\npath = \"{}/data/state.redb\"\n", dir.path().display()),
        routes: route("api", "/api", &up.url(), ""),
        ..Default::default()
    };
    let config = support::write_config(dir.path(), &setup);

    let gw = serve(&config, dir.path());
    let first = gw.login(TRADER).await;
    let r = gw.refresh(&first["refreshToken"]).await;
    assert_eq!(r.status(), 200);
    let second: Value = r.json().await.unwrap();
    let url = format!("{}/external/token", gw.base);
    let at = first["accessToken"].as_str().unwrap();
    let issue = || async { gw.client.post(&url).bearer_auth(at).send().await.unwrap().json::<Value>().await };
    let used_ott = issue().await.unwrap()["token"].as_str().unwrap().to_string();
    let live_ott = issue().await.unwrap()["token"].as_str().unwrap().to_string();
    assert_eq!(gw.verify(&used_ott).await["valid"], true);
    let logged_out = gw.login(TRADER).await;
    let r = gw
        .client
        .post(format!("{}/auth/token/revoke", gw.base))
        .bearer_auth(logged_out["accessToken"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let admin = gw.login(ADMIN).await;
    let r = gw
        .client
        .patch(format!("{}/connectors/settings", gw.base))
        .bearer_auth(admin["accessToken"].as_str().unwrap())
        .json(&serde_json::json!({ "refreshTokenLifeTime": 7200 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    gw.kill_9();

    let gw = serve(&config, dir.path());
    // Issued before the crash: still refreshes.
    let r = gw.refresh(&second["refreshToken"]).await;
    assert_eq!(r.status(), 200, "a refresh token issued before kill -9 refreshes after it");
    let third: Value = r.json().await.unwrap();
    assert_eq!(third["refreshTokenLifeTime"], 7200, "settings survived");
    assert_eq!(gw.verify(&used_ott).await["valid"], false, "a used OTT stays used");
    assert_eq!(gw.verify(&live_ott).await["valid"], true, "an unused OTT still works once");
    assert_eq!(gw.call(&logged_out["accessToken"]).await, 401, "a logout survives the restart");
    assert_eq!(gw.call(&third["accessToken"]).await, 200);
    // Spent before the crash: still spent, and presenting it revokes the session.
    assert_eq!(error_code(gw.refresh(&first["refreshToken"]).await).await, (401, "token.reused".into()));
    assert_eq!(gw.call(&third["accessToken"]).await, 401);
    gw.kill_9();
}

/// A database written before bounded sessions (one record per refresh token, other table
/// types) opens; its sessions are dropped (their tokens are refused as `token.invalid` before
/// the store is asked), its revocations are still honoured.
#[tokio::test]
async fn a_database_from_before_bounded_sessions_opens_without_its_old_sessions() {
    type LegacySessions =
        redb::TableDefinition<'static, &'static str, (&'static str, [u8; 32], u64, u64, bool)>;
    type LegacyRefresh = redb::TableDefinition<'static, [u8; 32], (&'static str, u64, bool)>;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let sessions: LegacySessions = redb::TableDefinition::new("sessions");
            let refresh: LegacyRefresh = redb::TableDefinition::new("refresh");
            let revoked: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("revoked");
            txn.open_table(sessions)
                .unwrap()
                .insert("old", ("bob", [1; 32], u64::MAX, u64::MAX, false))
                .unwrap();
            txn.open_table(refresh).unwrap().insert([1; 32], ("old", u64::MAX, false)).unwrap();
            txn.open_table(revoked).unwrap().insert("gone", u64::MAX).unwrap();
        }
        txn.commit().unwrap();
    }
    let cfg = bo_gateway::config::StoreConfig { kind: "file".into(), path, ..Default::default() };
    let store = bo_gateway::store::open(&cfg).await.unwrap();
    assert_eq!(store.session("old").await.unwrap(), None);
    assert_eq!(store.live_revocations(0).await.unwrap(), vec![("gone".to_string(), u64::MAX)]);
    // The revocation and the open marker: nothing of the old sessions is left.
    assert_eq!(store.entries().await.unwrap(), 2);
}

/// A database written before the index by creation existed gets it at the next open: the most
/// recent sessions are listed from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_creation_index_is_built_for_an_older_database() {
    use bo_gateway::store::{FileStore, NewSession, Store};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    {
        let store = FileStore::open(&path).await.unwrap();
        for (i, id) in ["old1", "old2"].iter().enumerate() {
            let first = bo_gateway::auth::refresh::RefreshToken::first(id);
            let s = NewSession {
                id: id.to_string(),
                login: "bob".into(),
                key_hash: first.proof_hash(),
                secret_hash: first.secret_hash(),
                refresh_expires: 2_000,
                access_expires: 1_100,
                created_at: 1_000 + i as u64,
                client_address: "192.0.2.1".into(),
                user_agent: String::new(),
            };
            store.create_session(s).await.unwrap();
        }
    }
    // As an older release left it: no creation index. (The store's writer thread lets the
    // file go once it has seen the store dropped.)
    let started = std::time::Instant::now();
    let db = loop {
        match redb::Database::open(&path) {
            Ok(db) => break db,
            Err(_) if started.elapsed() < std::time::Duration::from_secs(5) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    let txn = db.begin_write().unwrap();
    let def: redb::TableDefinition<(u64, &str), ()> = redb::TableDefinition::new("sessions_by_created");
    assert!(txn.delete_table(def).unwrap());
    txn.commit().unwrap();
    drop(db);
    let store = FileStore::open(&path).await.unwrap();
    assert_eq!(store.recent_sessions(10, 1_500).await.unwrap(), ["old2", "old1"]);
}
