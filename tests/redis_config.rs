//! The `[store]` keys of issue 17 as an operator writes them: one topology only, refused at
//! start with the key named; the password from the variable `password_env` names.

mod support;

use bo_gateway::config::StoreConfig;
use bo_gateway::runtime::Runtime;
use bo_gateway::store;
use support::redis::OwnRedis;
use support::{Setup, write_config};

fn refusal(store: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &Setup { store: store.into(), ..Default::default() });
    match Runtime::load(&path) {
        Ok(_) => panic!("accepted: {store}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn one_topology_and_its_keys_or_a_clear_error() {
    let e = refusal("kind = \"redis\"\nurl = \"redis://127.0.0.1:1\"\ncluster = [\"127.0.0.1:2\"]");
    assert!(e.contains("key `store.cluster`") && e.contains("only one of"), "{e}");
    let e = refusal("kind = \"redis\"\nsentinels = [\"127.0.0.1:26379\"]");
    assert!(e.contains("key `store.master_name`"), "{e}");
    let e = refusal("kind = \"redis\"");
    assert!(e.contains("key `store.url`") && e.contains("store.sentinels"), "{e}");
    let e = refusal("kind = \"redis\"\ncluster = [\"no-port\"]");
    assert!(e.contains("key `store.cluster`") && e.contains("`no-port` is not host:port"), "{e}");
    let e = refusal(
        "kind = \"redis\"\nurl = \"redis://127.0.0.1:1\"\npassword_env = \"BO_GATEWAY_TEST_NO_SUCH_VAR\"",
    );
    assert!(e.contains("key `store.password_env`") && e.contains("BO_GATEWAY_TEST_NO_SUCH_VAR"), "{e}");
    let e = refusal("kind = \"redis\"\nurl = \"redis://127.0.0.1:1\"\nmin_replica_acks = -1");
    assert!(e.contains("min_replica_acks"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_password_comes_from_the_environment() {
    let Some(redis) = OwnRedis::start().await else { return };
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    // A variable cargo sets for every test run stands for the operator's (tests never set
    // environment variables: not thread-safe).
    let var = "CARGO_PKG_NAME";
    let password = std::env::var(var).expect("cargo sets CARGO_PKG_NAME when running tests");
    let _: () =
        redis::cmd("CONFIG").arg("SET").arg("requirepass").arg(&password).query_async(&mut c).await.unwrap();
    let mut cfg = StoreConfig { kind: "redis".into(), url: redis.url(), ..Default::default() };
    let without = store::open(&cfg).await.unwrap();
    assert!(without.ping().await.is_err(), "no password, no service");
    cfg.password_env = var.into();
    let with = store::open(&cfg).await.unwrap();
    with.ping().await.unwrap();
    with.put_ott(&[1; 32], "alice", 2_000_000_000).await.unwrap();
}
