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

pub type Lines = std::io::Lines<std::io::BufReader<std::process::ChildStderr>>;

/// How [`super::Binary::launch`] starts the binary.
pub struct Launch<'a> {
    /// `--log-format`.
    pub format: &'a str,
    /// Extra environment (`BO_GATEWAY_LOG` is `info,access=warn` unless set here).
    pub env: &'a [(&'a str, &'a std::ffi::OsStr)],
    /// Leave stderr unread once the gateway serves (a stalled log sink) until
    /// [`super::Binary::read_logs`].
    pub unread: bool,
}

impl Default for Launch<'_> {
    fn default() -> Self {
        Self { format: "json", env: &[], unread: false }
    }
}

/// The address in a `Some(ADDR)` field of the "bo-gateway serving" line, in either log format.
fn serving_addr(line: &str, json: bool, name: &str) -> Option<std::net::SocketAddr> {
    let raw = if json {
        let v: Value = serde_json::from_str(line).unwrap();
        v["fields"][name].as_str().unwrap().to_string()
    } else {
        let at = line.find(&format!(" {name}=")).unwrap_or_else(|| panic!("no {name} in {line}"));
        line[at + name.len() + 2..].split(' ').next().unwrap().to_string()
    };
    raw.strip_prefix("Some(")?.strip_suffix(')').map(|a| a.parse().unwrap())
}

impl super::Binary {
    pub fn launch(config: &Path, cwd: &Path, launch: Launch<'_>) -> Self {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_bo-gateway"));
        cmd.arg("--config")
            .arg(config)
            .args(["--log-format", launch.format])
            .env("BO_GATEWAY_LOG", "info,access=warn")
            .current_dir(cwd)
            .stderr(std::process::Stdio::piped());
        for (k, v) in launch.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let json = launch.format == "json";
        let line = loop {
            let line = lines.next().expect("gateway exited before serving").unwrap();
            if line.contains("bo-gateway serving") {
                break line;
            }
        };
        let https = serving_addr(&line, json, "https").expect("no HTTPS listener");
        let admin = serving_addr(&line, json, "admin");
        let (tx, logs) = std::sync::mpsc::channel();
        let mut bin = Self { child, https, admin, logs, unread: Some((lines, tx)) };
        if !launch.unread {
            bin.read_logs();
        }
        bin
    }

    /// Starts reading stderr (for [`super::Binary::take_logs`]) if the test left it unread.
    pub fn read_logs(&mut self) {
        if let Some((lines, tx)) = self.unread.take() {
            std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
    }
}
