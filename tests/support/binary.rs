//! The real `bo-gateway` binary as a child process, for what only a process can show (kill -9,
//! environment such as `SSL_CERT_FILE`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub struct Served {
    pub child: Child,
    /// `https://127.0.0.1:PORT`
    pub base: String,
    pub client: reqwest::Client,
}

/// Starts the binary with `config` (whose certificate is `dir/gateway.crt`, as
/// [`super::write_config`] writes it) and waits for its "bo-gateway serving" log line.
pub fn serve(bin: &str, config: &Path, dir: &Path, env: &[(&str, &Path)]) -> Served {
    let mut cmd = Command::new(bin);
    cmd.args(["--log-format", "json", "--config"]).arg(config).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let https = loop {
        let line = lines.next().expect("gateway exited before serving").unwrap();
        if line.contains("bo-gateway serving") {
            let v: Value = serde_json::from_str(&line).unwrap();
            let s = v["fields"]["https"].as_str().unwrap().to_string();
            break s.trim_start_matches("Some(").trim_end_matches(')').to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let cert = std::fs::read(dir.join("gateway.crt")).unwrap();
    Served { child, base: format!("https://{https}"), client: super::client_for(&cert, false) }
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
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
