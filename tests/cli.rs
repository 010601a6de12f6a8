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
    let before = files_under(dir.path());
    let check = Command::new(BIN).arg("check-config").current_dir(dir.path()).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    // check-config writes nothing, and says what serving would generate.
    assert_eq!(files_under(dir.path()), before, "check-config wrote files");
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        said.contains("serving would generate a self-signed development certificate at certs/gateway.crt"),
        "{said}"
    );
    assert!(
        said.contains("serving would generate a development token signing key at certs/token-signing.pem"),
        "{said}"
    );

    let mut gw = support::Binary::spawn(Path::new("config/gateway.toml"), dir.path());
    // The dev certificate and signing key were generated into the ignored certs/ folder.
    for f in ["certs/gateway.crt", "certs/gateway.key", "certs/token-signing.pem"] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    // Now that they exist, there is nothing left to generate.
    let check = Command::new(BIN).arg("check-config").current_dir(dir.path()).output().unwrap();
    assert!(check.status.success());
    assert!(!String::from_utf8_lossy(&check.stdout).contains("would generate"));
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

/// Every file under `dir`, recursively, relative to it.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    out.sort();
    out
}

#[test]
fn check_config_writes_nothing_even_when_it_refuses() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users.toml"), "").unwrap();
    let base = "[credentials]\nusers_file = \"users.toml\"\n\
                [tls]\ncert = \"certs/c.crt\"\nkey = \"certs/c.key\"\ngenerate_self_signed = true\n";
    let hs256 =
        "[tokens]\nalgorithm = \"HS256\"\nsecret_file = \"keys/secret\"\ngenerate_signing_key = true\n";
    let rs256 =
        "[tokens]\nalgorithm = \"RS256\"\nsigning_key = \"keys/rs.pem\"\ngenerate_signing_key = true\n";
    std::fs::write(dir.path().join("hs.toml"), format!("{base}{hs256}")).unwrap();
    std::fs::write(dir.path().join("rs.toml"), format!("{base}{rs256}")).unwrap();
    // The in-memory certificate still lets the rest be checked: a bad client CA is refused.
    std::fs::write(dir.path().join("bad.toml"), format!("{base}client_ca = \"missing-ca.pem\"\n{hs256}"))
        .unwrap();
    let before = files_under(dir.path());
    let run = |file: &str| {
        Command::new(BIN).args(["check-config", "--config", file]).current_dir(dir.path()).output().unwrap()
    };
    let out = run("hs.toml");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("a development HS256 secret at keys/secret"), "{said}");
    assert!(said.contains("certificate at certs/c.crt (key certs/c.key)"), "{said}");
    let out = run("rs.toml");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("a development token signing key at keys/rs.pem"));
    let out = run("bad.toml");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tls.client_ca"));
    assert_eq!(files_under(dir.path()), before, "check-config wrote files");
}
