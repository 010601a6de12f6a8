//! Shared test helpers: a real gateway (real TLS, ephemeral ports) in front of real in-process
//! upstreams, and clients that speak to it.
#![allow(dead_code)]

pub mod binary;
pub mod redis;
pub mod redis_procs;
pub mod scripted;
pub mod sessions;
pub mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bo_gateway::{Running, Runtime};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const ADMIN: (&str, &str) = ("alice", "alice-password");
pub const TRADER: (&str, &str) = ("bob", "bob-password");
pub const DISABLED: (&str, &str) = ("carol", "carol-password");

/// Cheap argon2id hashes (1 MiB, 1 pass) so tests log in fast; the shipped users use the
/// recommended cost.
fn cheap_hash(password: &str) -> String {
    bo_gateway::auth::credentials::hash_password_with(password, 1024, 1, 1).unwrap()
}

fn users_toml() -> &'static str {
    static USERS: OnceLock<String> = OnceLock::new();
    USERS.get_or_init(|| {
        format!(
            "[[users]]\nlogin = \"{}\"\npassword_hash = \"{}\"\nroles = [\"admin\", \"trader\"]\n\n\
             [[users]]\nlogin = \"{}\"\npassword_hash = \"{}\"\nroles = [\"trader\"]\n\n\
             [[users]]\nlogin = \"{}\"\npassword_hash = \"{}\"\nroles = [\"trader\"]\ndisabled = true\n",
            ADMIN.0,
            cheap_hash(ADMIN.1),
            TRADER.0,
            cheap_hash(TRADER.1),
            DISABLED.0,
            cheap_hash(DISABLED.1)
        )
    })
}

/// The parts of a test config; each string is TOML lines appended to its table.
#[derive(Default, Clone)]
pub struct Setup {
    pub server: String,
    pub tls: String,
    pub tokens: String,
    pub login_limits: String,
    /// Lines of the `[store]` table (memory when empty).
    pub store: String,
    /// Where the token signing key lives; replicas that must accept each other's tokens share
    /// one folder. Default: the gateway's own temporary folder.
    pub key_dir: Option<PathBuf>,
    /// Whole `[[routes]]` tables.
    pub routes: String,
    /// The body of `[credentials]`; the users file of the test users when empty.
    pub credentials: String,
    /// File name (in the test's folder) of the signing key; "signing.pem" when empty.
    pub signing_key: String,
    /// Lines of the `[cors]` table (off when empty).
    pub cors: String,
}

impl Setup {
    pub fn routes(routes: impl Into<String>) -> Self {
        Self { routes: routes.into(), ..Default::default() }
    }
}

/// A `[[routes]]` table in front of `upstream`.
pub fn route(name: &str, prefix: &str, upstream: &str, extra: &str) -> String {
    format!("[[routes]]\nname = \"{name}\"\nprefix = \"{prefix}\"\nupstreams = [\"{upstream}\"]\n{extra}\n")
}

pub struct Gateway {
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub plain: Option<SocketAddr>,
    pub client: reqwest::Client,
    pub cert_pem: Vec<u8>,
}

thread_local! {
    /// The transport the tests of this thread run on (`both_transports!`); `None`: as configured.
    static FAST_PATH: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Runs the gateways this thread starts with the fast path on or off (unless a test's own
/// `[server]` lines say).
pub fn set_fast_path(on: bool) {
    FAST_PATH.with(|f| f.set(Some(on)));
}

/// Defines a test twice, as module `$name` with `fast_path` and `hyper_path`: the same case on
/// both transports, as the store conformance suite runs on every store.
#[macro_export]
macro_rules! both_transports {
    ($(#[$attr:meta])* async fn $name:ident() $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(#[$attr])*
            async fn fast_path() {
                $crate::support::set_fast_path(true);
                $body
            }
            $(#[$attr])*
            async fn hyper_path() {
                $crate::support::set_fast_path(false);
                $body
            }
        }
    };
}

pub fn write_config(dir: &Path, setup: &Setup) -> PathBuf {
    let d = dir.display();
    let k = setup.key_dir.as_deref().unwrap_or(dir).display();
    std::fs::write(dir.join("users.toml"), users_toml()).unwrap();
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
{server}

[tls]
cert = "{d}/gateway.crt"
key = "{d}/gateway.key"
generate_self_signed = true
{tls}

[tokens]
signing_key = "{k}/{key}"
generate_signing_key = true
{tokens}

[credentials]
{credentials}

[login_limits]
{login_limits}

[store]
{store}

[cors]
{cors}

{routes}
"#,
        server = match FAST_PATH.with(|f| f.get()) {
            Some(on) if !setup.server.contains("fast_path") => format!("{}\nfast_path = {on}", setup.server),
            _ => setup.server.clone(),
        },
        tls = setup.tls,
        tokens = setup.tokens,
        login_limits = setup.login_limits,
        store = setup.store,
        cors = setup.cors,
        routes = setup.routes,
        credentials = if setup.credentials.is_empty() {
            format!("kind = \"file\"\nusers_file = \"{d}/users.toml\"")
        } else {
            setup.credentials.clone()
        },
        key = if setup.signing_key.is_empty() { "signing.pem" } else { &setup.signing_key },
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

impl Gateway {
    pub async fn start(setup: Setup) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), &setup);
        let runtime = Runtime::load(&path).unwrap_or_else(|e| panic!("config: {e}"));
        let running = bo_gateway::start(runtime).await.unwrap();
        let cert_pem = std::fs::read(dir.path().join("gateway.crt")).unwrap();
        let client = client_for(&cert_pem, false);
        Self {
            https: running.https_addr.unwrap(),
            admin: running.admin_addr.unwrap(),
            plain: running.plain_addr,
            running: Some(running),
            dir,
            client,
            cert_pem,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{}", self.https, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub fn http2_client(&self) -> reqwest::Client {
        client_for(&self.cert_pem, true)
    }

    pub fn gateway(&self) -> &Arc<bo_gateway::Gateway> {
        &self.running.as_ref().unwrap().gateway
    }

    /// Logs in and returns the token pair as JSON.
    pub async fn login(&self, user: (&str, &str)) -> Value {
        let r = self.try_login(user.0, user.1).await;
        assert_eq!(r.status(), 200, "login of {}", user.0);
        r.json().await.unwrap()
    }

    /// `POST /auth/token` with these credentials: the raw answer.
    pub async fn try_login(&self, login: &str, password: &str) -> reqwest::Response {
        let body = serde_json::json!({"login": login, "password": password});
        self.client.post(self.url("/auth/token")).json(&body).send().await.unwrap()
    }

    /// `GET /auth/token/refresh` with the refresh token in the `token` header: the raw answer.
    pub async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.client.get(self.url("/auth/token/refresh")).header("token", refresh_token).send().await.unwrap()
    }

    /// `POST /external/token` as the holder of `access`: the JSON answer.
    pub async fn issue_ott(&self, access: &str) -> Value {
        let r = self.client.post(self.url("/external/token")).bearer_auth(access).send().await.unwrap();
        assert_eq!(r.status(), 200, "issuing a one-time token");
        r.json().await.unwrap()
    }

    /// `POST /external/token/verify` with `{"token": token}`: the JSON answer.
    pub async fn verify_ott(&self, token: impl serde::Serialize) -> Value {
        let body = serde_json::json!({"token": token});
        self.client
            .post(self.url("/external/token/verify"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn access_token(&self, user: (&str, &str)) -> String {
        self.login(user).await["accessToken"].as_str().unwrap().to_string()
    }

    /// A raw HTTP/1.1 exchange over TLS: writes `request` as is and reads until the server
    /// closes or `read_for` elapses. For framing tests a normal client would refuse to send.
    pub async fn raw(&self, request: &[u8]) -> String {
        raw_tls(self.https, &self.cert_pem, request).await
    }
}

pub fn client_for(cert_pem: &[u8], http2: bool) -> reqwest::Client {
    let cert = reqwest::Certificate::from_pem(cert_pem).unwrap();
    let b = reqwest::Client::builder().tls_certs_only([cert]).pool_max_idle_per_host(8);
    let b = if http2 { b.http2_prior_knowledge() } else { b.http1_only() };
    b.build().unwrap()
}

/// A TLS connector offering only HTTP/2 (ALPN `h2`).
pub fn h2_connector(cert_pem: &[u8]) -> tokio_rustls::TlsConnector {
    let mut cfg = (*tls_config(cert_pem)).clone();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

fn tls_config(cert_pem: &[u8]) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(cert_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(bo_gateway::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

pub fn tls_connector(cert_pem: &[u8]) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(cert_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(bo_gateway::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

pub async fn raw_tls(addr: SocketAddr, cert_pem: &[u8], request: &[u8]) -> String {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tls_connector(cert_pem).connect(name, tcp).await.unwrap();
    tls.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The JSON error code of an error response.
pub async fn error_code(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    (status, v["errors"][0].as_str().unwrap_or("<none>").to_string())
}

/// The claims of a JWT (payload decoded, not verified).
pub fn claims(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// One TLS connection for sending several raw requests in a row (keep-alive checks).
pub struct RawConn {
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    buf: Vec<u8>,
}

/// A parsed raw response: status, lower-cased head, body.
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawConn {
    pub async fn open(gw: &Gateway) -> Self {
        Self::connect(gw.https, &gw.cert_pem).await
    }

    /// A connection to any TLS listener (e.g. a [`Binary`]'s) whose certificate is `cert_pem`.
    pub async fn connect(addr: SocketAddr, cert_pem: &[u8]) -> Self {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let stream = tls_connector(cert_pem).connect(name, tcp).await.unwrap();
        Self { stream, buf: Vec::new() }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        match tokio::time::timeout(std::time::Duration::from_secs(5), self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    /// Reads one response (Content-Length framed, or up to the close). `None`: the server closed.
    pub async fn response(&mut self) -> Option<RawResponse> {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if !self.fill().await {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse::<usize>().unwrap());
        let chunked = head.lines().any(|l| l.trim() == "transfer-encoding: chunked");
        let no_body = (100..200).contains(&status) || status == 204 || status == 304;
        let body = match len {
            _ if no_body => {
                self.buf.drain(..head_end);
                Vec::new()
            }
            _ if chunked => self.chunked_body(head_end).await?,
            Some(n) => {
                while self.buf.len() < head_end + n {
                    if !self.fill().await {
                        break;
                    }
                }
                let end = (head_end + n).min(self.buf.len());
                let body = self.buf[head_end..end].to_vec();
                self.buf.drain(..end);
                body
            }
            None => {
                while self.fill().await {}
                let body = self.buf[head_end..].to_vec();
                self.buf.clear();
                body
            }
        };
        Some(RawResponse { status, head, body })
    }

    /// Decodes a chunked body that starts at `at` (trailers read and dropped).
    async fn chunked_body(&mut self, at: usize) -> Option<Vec<u8>> {
        self.buf.drain(..at);
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                if !self.fill().await {
                    return None;
                }
            };
            let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16).ok()?;
            self.buf.drain(..line_end + 2);
            if size == 0 {
                // Trailer lines up to the empty one.
                loop {
                    let end = loop {
                        if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                            break i;
                        }
                        if !self.fill().await {
                            return None;
                        }
                    };
                    self.buf.drain(..end + 2);
                    if end == 0 {
                        return Some(body);
                    }
                }
            }
            while self.buf.len() < size + 2 {
                if !self.fill().await {
                    return None;
                }
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
    }

    /// True when the server has closed the connection (no more bytes within a few seconds).
    pub async fn is_closed(&mut self) -> bool {
        !self.fill().await
    }
}

impl RawConn {
    /// Reads a response head (taking it off the connection), leaving the body unread.
    pub async fn response_head_only(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..i]).to_ascii_lowercase();
                self.buf.drain(..i + 4);
                return head;
            }
            if !self.fill().await {
                return String::from_utf8_lossy(&self.buf).to_ascii_lowercase();
            }
        }
    }
}

/// The real `bo-gateway` binary, serving `config` with JSON logs; killed on drop.
pub struct Binary {
    pub child: std::process::Child,
    pub https: SocketAddr,
    pub admin: Option<SocketAddr>,
    logs: std::sync::mpsc::Receiver<String>,
    /// Its stderr while the test leaves it unread (see [`binary::Launch::unread`]).
    unread: Option<(binary::Lines, std::sync::mpsc::Sender<String>)>,
}

impl Binary {
    pub fn spawn(config: &Path, cwd: &Path) -> Self {
        Self::spawn_with_log(config, cwd, "info,access=warn")
    }

    /// As `spawn`, with `BO_GATEWAY_LOG` set to `filter`.
    pub fn spawn_with_log(config: &Path, cwd: &Path, filter: &str) -> Self {
        Self::spawn_env(config, cwd, &[("BO_GATEWAY_LOG", filter.as_ref())])
    }

    /// As `spawn`, with extra environment variables (e.g. `SSL_CERT_FILE`).
    pub fn spawn_env(config: &Path, cwd: &Path, env: &[(&str, &std::ffi::OsStr)]) -> Self {
        Self::launch(config, cwd, binary::Launch { env, ..Default::default() })
    }

    /// The log lines written since the last call.
    pub fn take_logs(&self) -> Vec<String> {
        self.logs.try_iter().collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A line of /proc/PID/status in KiB, e.g. "VmHWM" (peak resident set) or "VmRSS".
    pub fn status_kib(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Sends SIGTERM and waits (up to `limit`) for the exit status.
    pub fn terminate(&mut self, limit: std::time::Duration) -> Option<i32> {
        let pid = self.pid().to_string();
        std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An address that refuses connections: a socket bound but never listening. It is leaked, so
/// the port stays reserved for the test process and no other test's listener can take it (a
/// listener bound and dropped frees its port, and a parallel test may then be served there).
pub fn refused_addr() -> SocketAddr {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    std::mem::forget(s);
    addr
}
