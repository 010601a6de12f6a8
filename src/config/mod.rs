//! The raw configuration as written in `gateway.toml` (SPEC §5). Every table refuses unknown
//! keys: a misspelt auth setting silently ignored would be a security hole. Validation into the
//! serving form lives in [`crate::runtime`].

mod duration;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use duration::{ConfigDuration, parse_duration};

/// A configuration problem: which file, which key, and why. Exit status 64 (EX_USAGE) in main.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(file: &Path, key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { file: file.to_path_buf(), key: key.into(), reason: reason.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}: key `{}`: {}", self.file.display(), self.key, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: ServerConfig,
    pub tls: TlsConfig,
    pub tokens: TokensConfig,
    pub credentials: CredentialsConfig,
    pub store: StoreConfig,
    pub login_limits: LoginLimitsConfig,
    pub cors: CorsConfig,
    pub audit: AuditConfig,
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// HTTPS listener; empty disables it (then `plain_listen` must be set).
    pub listen: String,
    /// Plain HTTP listener, for running behind a TLS-terminating load balancer.
    pub plain_listen: String,
    /// Plain HTTP admin listener (/healthz, /readyz, /metrics); empty disables it.
    pub admin_listen: String,
    /// Prefix of the auth endpoints, e.g. "/proftrading/rest".
    pub api_prefix: String,
    /// CIDRs (or single addresses) whose X-Forwarded-* and X-Request-Id are trusted.
    pub trusted_proxies: Vec<String>,
    pub max_body_bytes: u64,
    /// Largest request head (request line + headers) on HTTP/1.1; larger: 431.
    pub max_header_bytes: usize,
    /// Most header fields in one request; more: 431.
    pub max_headers: usize,
    /// Concurrent client connections on the main listeners; past it new ones are refused.
    pub max_connections: usize,
    /// Streams one HTTP/2 client connection may have open at once.
    pub h2_max_concurrent_streams: u32,
    /// Async worker threads; 0 = one per available core. 1 runs a single-threaded runtime.
    pub worker_threads: usize,
    /// Serve plain HTTP/1.1 requests to routes on the fast path (`crate::fastpath`).
    pub fast_path: bool,
    pub header_read_timeout: ConfigDuration,
    pub idle_timeout: ConfigDuration,
    pub shutdown_grace: ConfigDuration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8443".into(),
            plain_listen: String::new(),
            admin_listen: "127.0.0.1:9901".into(),
            api_prefix: String::new(),
            trusted_proxies: Vec::new(),
            max_body_bytes: 10 * 1024 * 1024,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_connections: 10_000,
            h2_max_concurrent_streams: 100,
            worker_threads: 0,
            fast_path: true,
            header_read_timeout: ConfigDuration::secs(10),
            idle_timeout: ConfigDuration::secs(60),
            shutdown_grace: ConfigDuration::secs(30),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// PEM bundle of CAs; when set, clients must present a certificate they signed (mTLS).
    pub client_ca: PathBuf,
    /// Development only: create a self-signed certificate and key at `cert`/`key` when missing.
    pub generate_self_signed: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert: "certs/gateway.crt".into(),
            key: "certs/gateway.key".into(),
            client_ca: PathBuf::new(),
            generate_self_signed: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    /// EdDSA, ES256, RS256 or HS256. Pinned: a token naming another algorithm is refused.
    pub algorithm: String,
    /// PEM private key (EdDSA, ES256, RS256).
    pub signing_key: PathBuf,
    /// HS256: file holding the shared secret.
    pub secret_file: PathBuf,
    /// HS256: environment variable holding the shared secret.
    pub secret_env: String,
    /// Development only: create `signing_key` (or `secret_file`) when missing.
    pub generate_signing_key: bool,
    /// Keys still accepted for verification (PEM public or private keys; HS256: secret files).
    pub previous_keys: Vec<PathBuf>,
    /// Verified tokens kept in memory; 0 turns the cache off.
    pub cache_capacity: usize,
    pub issuer: String,
    pub audience: String,
    pub access_lifetime: ConfigDuration,
    pub refresh_lifetime: ConfigDuration,
    /// How long a spent refresh token, presented again while its successor is unspent, gets
    /// that successor back instead of counting as theft; 0 turns it off.
    pub refresh_reuse_grace: ConfigDuration,
    pub one_time_lifetime: ConfigDuration,
    pub leeway: ConfigDuration,
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            algorithm: "EdDSA".into(),
            signing_key: "certs/token-signing.pem".into(),
            secret_file: PathBuf::new(),
            secret_env: String::new(),
            generate_signing_key: false,
            previous_keys: Vec::new(),
            cache_capacity: 100_000,
            issuer: "bo-gateway".into(),
            audience: "bo-api".into(),
            access_lifetime: ConfigDuration::secs(900),
            refresh_lifetime: ConfigDuration::secs(8 * 3600),
            refresh_reuse_grace: ConfigDuration::secs(10),
            one_time_lifetime: ConfigDuration::secs(30),
            leeway: ConfigDuration::secs(30),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CredentialsConfig {
    /// "file" (argon2id users file) or "http" (the BO checks the password).
    pub kind: String,
    pub users_file: PathBuf,
    pub url: String,
    pub timeout: ConfigDuration,
    pub roles_file: PathBuf,
    /// `http` only, optional: asked at each refresh whether the login may still refresh
    /// (`auth::credentials::http`). Empty: the BO is asked at login only.
    pub user_url: String,
}

impl Default for CredentialsConfig {
    fn default() -> Self {
        Self {
            kind: "file".into(),
            users_file: "config/users.toml".into(),
            url: String::new(),
            timeout: ConfigDuration::secs(5),
            roles_file: PathBuf::new(),
            user_url: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// "memory", "file" (embedded, persistent) or "redis" (shared by replicas).
    pub kind: String,
    pub path: PathBuf,
    /// Redis: exactly one of `url`, `sentinels` (with `master_name`) or `cluster`; the rules are
    /// `store::redis::Target::from_config`'s.
    pub url: String,
    /// `host:port` of Redis Sentinels watching the master named `master_name`.
    pub sentinels: Vec<String>,
    pub master_name: String,
    /// `host:port` of some Redis Cluster nodes (the others are discovered).
    pub cluster: Vec<String>,
    /// Name of the environment variable holding the Redis password; empty: none.
    pub password_env: String,
    /// Replicas that must hold a state change before it is answered (`WAIT`); 0: none.
    pub min_replica_acks: u32,
    pub key_prefix: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: "memory".into(),
            path: PathBuf::new(),
            url: String::new(),
            sentinels: Vec::new(),
            master_name: String::new(),
            cluster: Vec::new(),
            password_env: String::new(),
            min_replica_acks: 0,
            key_prefix: "bo-gateway:".into(),
        }
    }
}

/// `[audit]` (SPEC §7): where auth events go besides the log target `audit`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// JSON lines file, appended and flushed per event, reopened on reload; empty: none.
    pub path: PathBuf,
    /// Most recent events kept in the store for `GET /admin/audit` (0: none kept).
    pub keep: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { path: PathBuf::new(), keep: 10_000 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginLimitsConfig {
    pub failures_per_login: u32,
    pub failures_per_address: u32,
    pub window: ConfigDuration,
}

impl Default for LoginLimitsConfig {
    fn default() -> Self {
        Self { failures_per_login: 5, failures_per_address: 50, window: ConfigDuration::secs(900) }
    }
}

/// `[cors]`: browser front ends on other origins (SPEC §2). Off while `allowed_origins` is
/// empty; validated into `crate::gate::cors::CorsPolicy`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Exact origins (`https://host[:port]`), or `"*"` for any (not with credentials).
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    pub allowed_headers: Vec<String>,
    pub allow_credentials: bool,
    pub max_age: ConfigDuration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            allowed_methods: ["GET", "POST", "PUT", "PATCH", "DELETE"].map(String::from).to_vec(),
            allowed_headers: ["Authorization", "Content-Type", "token"].map(String::from).to_vec(),
            allow_credentials: false,
            max_age: ConfigDuration::secs(600),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    pub name: String,
    pub prefix: String,
    pub host: String,
    pub methods: Vec<String>,
    pub upstreams: Vec<String>,
    pub balance: String,
    pub auth: String,
    pub strip_prefix: bool,
    pub forward_authorization: bool,
    /// Forward the client's `token` header (the refresh token's header) upstream.
    pub forward_token_header: bool,
    /// The gateway's CORS policy applies here (`[cors]`); false leaves CORS to the upstream.
    pub cors: bool,
    pub connect_timeout: ConfigDuration,
    pub timeout: ConfigDuration,
    /// Connections open to each upstream at most (in use or idle); further requests wait up to
    /// `connect_timeout` for one, then 503 `upstream.busy`.
    pub max_connections: usize,
    pub health_check: HealthCheckConfig,
    pub upstream_headers: BTreeMap<String, String>,
}

impl Default for RouteConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            prefix: "/".into(),
            host: String::new(),
            methods: Vec::new(),
            upstreams: Vec::new(),
            balance: "round_robin".into(),
            auth: "required".into(),
            strip_prefix: false,
            forward_authorization: false,
            forward_token_header: false,
            cors: true,
            connect_timeout: ConfigDuration::secs(2),
            max_connections: 256,
            timeout: ConfigDuration::secs(30),
            health_check: HealthCheckConfig::default(),
            upstream_headers: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    /// Empty: passive only (an upstream is healthy until connections to it fail).
    pub path: String,
    pub interval: ConfigDuration,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self { path: String::new(), interval: ConfigDuration::secs(5) }
    }
}

impl RawConfig {
    /// Reads and parses a config file. Parse errors name the file and the offending key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path, "", format!("cannot read: {e}")))?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let key = key_at(text, e.span());
            ConfigError::new(path, key, e.message().trim().to_string())
        })
    }
}

/// The dotted key a toml error points at: the table header above the span plus the key on the
/// span's line, so "unknown field" errors read `server.listen_addr` rather than a byte offset.
fn key_at(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else { return String::new() };
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = text[line_start..line_end].trim();
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
        .unwrap_or_default();
    if line.starts_with('[') {
        return line.trim_matches(|c| c == '[' || c == ']').trim().to_string();
    }
    let key = line.split('=').next().unwrap_or("").trim().trim_matches('"');
    match (table.is_empty(), key.is_empty()) {
        (_, true) => table,
        (true, false) => key.to_string(),
        (false, false) => format!("{table}.{key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_spec() {
        let c = RawConfig::parse(Path::new("t.toml"), "").unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:8443");
        assert_eq!(c.server.admin_listen, "127.0.0.1:9901");
        assert_eq!(c.server.max_body_bytes, 10_485_760);
        assert_eq!(c.tokens.algorithm, "EdDSA");
        assert_eq!(c.tokens.cache_capacity, 100_000);
        assert_eq!(c.tokens.access_lifetime.0.as_secs(), 900);
        assert_eq!(c.tokens.refresh_lifetime.0.as_secs(), 28_800);
        assert_eq!(c.tokens.refresh_reuse_grace.0.as_secs(), 10);
        assert_eq!(c.tokens.one_time_lifetime.0.as_secs(), 30);
        assert_eq!(c.login_limits.failures_per_login, 5);
        assert_eq!(c.store.kind, "memory");
    }

    #[test]
    fn unknown_key_is_named() {
        let err =
            RawConfig::parse(Path::new("g.toml"), "[server]\nlisten = \"x\"\nlisten_adr = 1\n").unwrap_err();
        assert_eq!(err.key, "server.listen_adr");
        assert!(err.reason.contains("unknown field"), "{}", err.reason);
        assert!(err.to_string().starts_with("g.toml: key `server.listen_adr`"));
    }

    #[test]
    fn unknown_key_in_a_route_is_named() {
        let text = "[[routes]]\nname = \"a\"\nupstreams = [\"http://127.0.0.1:1\"]\nauht = \"public\"\n";
        let err = RawConfig::parse(Path::new("g.toml"), text).unwrap_err();
        assert_eq!(err.key, "routes.auht");
    }

    #[test]
    fn durations_need_units() {
        let err = RawConfig::parse(Path::new("g.toml"), "[server]\nidle_timeout = \"60\"\n").unwrap_err();
        assert_eq!(err.key, "server.idle_timeout");
        let err = RawConfig::parse(Path::new("g.toml"), "[server]\nidle_timeout = 60\n").unwrap_err();
        assert_eq!(err.key, "server.idle_timeout");
    }
}
