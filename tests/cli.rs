//! The real binary: check-config, hash-password, serving the shipped config, SIGTERM.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_bo-gateway");

/// A copy of the shipped `config/` in a scratch folder, with ephemeral ports.
fn shipped_config_copy(dir: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(dir.join("config")).unwrap();
    let gw = std::fs::read_to_string(root.join("config/gateway.toml")).unwrap();
    let gw = gw.replace("127.0.0.1:8443", "127.0.0.1:0").replace("127.0.0.1:9901", "127.0.0.1:0");
    std::fs::write(dir.join("config/gateway.toml"), gw).unwrap();
    std::fs::copy(root.join("config/users.toml"), dir.join("config/users.toml")).unwrap();
}

#[test]
fn unknown_key_is_refused_with_its_name_and_status_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:0\"\nlisten_adr = \"x\"\n").unwrap();
    for args in [vec!["check-config", "--config"], vec!["--config"]] {
        let out = Command::new(BIN).args(&args).arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("server.listen_adr"), "{err}");
        assert!(err.contains("bad.toml"), "{err}");
    }
}

#[test]
fn bad_values_and_missing_files_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users.toml"), "").unwrap();
    // Valid apart from the piece each case adds.
    let base = "[tokens]\nsigning_key = \"k.pem\"\ngenerate_signing_key = true\n\
                [tls]\ncert = \"c.crt\"\nkey = \"c.key\"\ngenerate_self_signed = true\n";
    let creds = "[credentials]\nusers_file = \"users.toml\"\n";
    let cases = [
        ("[tokens]\nalgorithm = \"none\"\n".to_string(), "tokens.algorithm"),
        ("[server]\nidle_timeout = \"soon\"\n".to_string(), "server.idle_timeout"),
        (
            format!("{base}[credentials]\nusers_file = \"/nonexistent/users.toml\"\n"),
            "credentials.users_file",
        ),
        (
            format!("{base}{creds}[[routes]]\nname = \"r\"\nupstreams = [\"ftp://x\"]\n"),
            "routes[0].upstreams[0]",
        ),
        (
            format!(
                "{base}{creds}[[routes]]\nname = \"r\"\nupstreams = [\"http://127.0.0.1:1\"]\nauth = \"maybe\"\n"
            ),
            "routes[0].auth",
        ),
        (format!("{base}{creds}[store]\nkind = \"postgres\"\n"), "store.kind"),
        (
            format!(
                "{base}{creds}[[routes]]\nname = \"r\"\nupstreams = [\"http://127.0.0.1:1\"]\nhost = \"a b/c\"\n"
            ),
            "routes[0].host",
        ),
        (
            format!(
                "{base}{creds}[[routes]]\nname = \"r\"\nupstreams = [\"http://127.0.0.1:1\"]\n\
                 upstream_headers = {{ Authorization = \"Bearer inline\" }}\n"
            ),
            "routes[0].upstream_headers.Authorization",
        ),
    ];
    let ok = dir.path().join("ok.toml");
    std::fs::write(&ok, format!("{base}{creds}")).unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg("--config")
        .arg(&ok)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "base config: {}", String::from_utf8_lossy(&out.stderr));
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN)
            .arg("check-config")
            .arg("--config")
            .arg(&path)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "expected {key} in: {err}");
    }
}

#[test]
fn hash_password_prints_an_argon2id_hash() {
    let mut child =
        Command::new(BIN).arg("hash-password").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
}

#[tokio::test]
async fn serves_the_shipped_config_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    shipped_config_copy(dir.path());
    let check = Command::new(BIN).arg("check-config").current_dir(dir.path()).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));

    let mut gw = support::Binary::spawn(Path::new("config/gateway.toml"), dir.path());
    // The dev certificate and signing key were generated into the ignored certs/ folder.
    for f in ["certs/gateway.crt", "certs/gateway.key", "certs/token-signing.pem"] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    let cert = std::fs::read(dir.path().join("certs/gateway.crt")).unwrap();
    let client = support::client_for(&cert, false);
    let r = client
        .post(format!("https://{}/auth/token", gw.https))
        .json(&serde_json::json!({"login": "demo", "password": "demo-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the README's demo user logs in");
    assert_eq!(gw.terminate(Duration::from_secs(10)), Some(0), "no clean exit after SIGTERM");
}
