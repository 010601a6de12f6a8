//! The real `bo-gateway` binary as a child process, for what only a process can show (kill -9,
//! environment such as `SSL_CERT_FILE`).

use std::path::Path;

use serde_json::Value;

pub struct Served {
    pub bin: super::Binary,
    /// `https://127.0.0.1:PORT`
    pub base: String,
    pub client: reqwest::Client,
}

/// Starts the binary with `config` (whose certificate is `dir/gateway.crt`, as
/// [`super::write_config`] writes it) and waits until it serves.
pub fn serve(_bin: &str, config: &Path, dir: &Path, env: &[(&str, &Path)]) -> Served {
    let env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    let bin = super::Binary::spawn_env(config, dir, &env);
    let cert = std::fs::read(dir.join("gateway.crt")).unwrap();
    Served { base: format!("https://{}", bin.https), client: super::client_for(&cert, false), bin }
}

impl Served {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn login(&self, user: (&str, &str)) -> Value {
        let r = self
            .client
            .post(self.url("/auth/token"))
            .json(&serde_json::json!({"login": user.0, "password": user.1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill_9(mut self) {
        self.bin.child.kill().unwrap();
        self.bin.child.wait().unwrap();
    }
}
