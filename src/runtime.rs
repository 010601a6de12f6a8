//! `Runtime`: one validated, immutable snapshot of everything the config decides (routes, keys,
//! users, limits). A request loads it once at its start; a reload swaps it whole.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use ipnet::IpNet;

use crate::auth::credentials::Credentials;
use crate::auth::keys::{Generation, KeySet};
use crate::auth::tokens::TokenSettings;
use crate::config::{ConfigError, RawConfig, RouteConfig};
use crate::gate::cors::CorsPolicy;
use crate::proxy::{Balance, Upstream, UpstreamPool};
use crate::routes::{AuthMode, Route, RouteTable, normalize_path};
use crate::store::ConnectorSettings;

pub struct Listen {
    pub https: Option<SocketAddr>,
    pub plain: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

pub struct LoginLimits {
    pub per_login: u32,
    pub per_address: u32,
    pub window_secs: u64,
}

pub struct Runtime {
    pub source: PathBuf,
    pub raw: RawConfig,
    pub listen: Listen,
    pub api_prefix: String,
    pub trusted_proxies: Vec<IpNet>,
    pub max_body_bytes: u64,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_connections: usize,
    pub h2_max_concurrent_streams: u32,
    pub worker_threads: usize,
    pub fast_path: bool,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
    pub keys: KeySet,
    pub token_settings: TokenSettings,
    /// Lifetimes until an admin changes them through /connectors/settings.
    pub default_lifetimes: ConnectorSettings,
    pub credentials: Arc<Credentials>,
    pub login_limits: LoginLimits,
    /// `tokens.refresh_reuse_grace` in seconds; 0 turns the grace off.
    pub refresh_reuse_grace_secs: u64,
    pub routes: RouteTable,
    /// `[cors]`; `None` when off (no allowed origins).
    pub cors: Option<CorsPolicy>,
    /// `None` when there is no HTTPS listener.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Runtime {
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }

    /// Reads, parses and validates the config at `path` and every file it names. Development
    /// keys and certificates (`generate_*` flags) are created here when missing.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let raw = RawConfig::load(path)?;
        Self::from_raw(raw, path)
    }

    /// `check-config`: as [`Runtime::load`], but writes nothing; returns what serving would
    /// generate (development keys and certificates that are missing).
    pub fn check(path: &Path) -> Result<(Self, Vec<String>), ConfigError> {
        let raw = RawConfig::load(path)?;
        let mut generation = Generation::dry_run();
        let rt = Self::from_raw_with(raw, path, &mut generation)?;
        Ok((rt, generation.planned))
    }

    pub fn from_raw(raw: RawConfig, path: &Path) -> Result<Self, ConfigError> {
        Self::from_raw_with(raw, path, &mut Generation::default())
    }

    fn from_raw_with(raw: RawConfig, path: &Path, generation: &mut Generation) -> Result<Self, ConfigError> {
        let err = |key: &str, reason: String| ConfigError::new(path, key, reason);
        let s = &raw.server;
        let addr = |key: &str, v: &str| -> Result<Option<SocketAddr>, ConfigError> {
            if v.is_empty() {
                return Ok(None);
            }
            SocketAddr::from_str(v).map(Some).map_err(|_| err(key, format!("`{v}` is not an address:port")))
        };
        let listen = Listen {
            https: addr("server.listen", &s.listen)?,
            plain: addr("server.plain_listen", &s.plain_listen)?,
            admin: addr("server.admin_listen", &s.admin_listen)?,
        };
        if listen.https.is_none() && listen.plain.is_none() {
            return Err(err("server.listen", "set listen or plain_listen (or both)".into()));
        }
        let api_prefix = match s.api_prefix.trim_end_matches('/') {
            "" => String::new(),
            p if p.starts_with('/') && normalize_path(p).is_ok_and(|n| n == p) => p.to_string(),
            p => {
                return Err(err(
                    "server.api_prefix",
                    format!("`{p}` must be a normalised path starting with /"),
                ));
            }
        };
        let trusted_proxies = s
            .trusted_proxies
            .iter()
            .map(|t| {
                IpNet::from_str(t)
                    .or_else(|_| IpAddr::from_str(t).map(IpNet::from))
                    .map_err(|_| err("server.trusted_proxies", format!("`{t}` is not a CIDR or address")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if s.max_body_bytes == 0 {
            return Err(err("server.max_body_bytes", "must be greater than 0".into()));
        }
        check_audit(&raw.audit).map_err(|(key, why)| err(key, why))?;
        if s.max_header_bytes < 8192 {
            return Err(err("server.max_header_bytes", "must be at least 8192".into()));
        }
        if s.max_headers == 0 || s.max_connections == 0 || s.h2_max_concurrent_streams == 0 {
            let key = match (s.max_headers, s.max_connections) {
                (0, _) => "server.max_headers",
                (_, 0) => "server.max_connections",
                _ => "server.h2_max_concurrent_streams",
            };
            return Err(err(key, "must be greater than 0".into()));
        }
        for (key, d) in
            [("server.header_read_timeout", s.header_read_timeout), ("server.idle_timeout", s.idle_timeout)]
        {
            if d.0.is_zero() {
                return Err(err(key, "must be greater than 0".into()));
            }
        }

        let t = &raw.tokens;
        let keys = KeySet::load_with(t, path, generation)?;
        if t.issuer.is_empty() {
            return Err(err("tokens.issuer", "must not be empty".into()));
        }
        if t.audience.is_empty() {
            return Err(err("tokens.audience", "must not be empty".into()));
        }
        let default_lifetimes = ConnectorSettings {
            access_token_life_time: t.access_lifetime.0.as_secs(),
            refresh_token_life_time: t.refresh_lifetime.0.as_secs(),
            one_time_token_life_time: t.one_time_lifetime.0.as_secs(),
        };
        validate_lifetimes(&default_lifetimes).map_err(|(k, why)| {
            let key = match k {
                "accessTokenLifeTime" => "tokens.access_lifetime",
                "refreshTokenLifeTime" => "tokens.refresh_lifetime",
                _ => "tokens.one_time_lifetime",
            };
            err(key, why)
        })?;
        let refresh_reuse_grace_secs = t.refresh_reuse_grace.0.as_secs();
        let token_settings = TokenSettings::new(t.issuer.clone(), t.audience.clone(), t.leeway.0.as_secs());

        let credentials = Arc::new(Credentials::load(&raw.credentials, path)?);
        let st = &raw.store;
        match st.kind.as_str() {
            "memory" => {}
            "file" if st.path.as_os_str().is_empty() => {
                return Err(err("store.path", "is required when store.kind is \"file\"".into()));
            }
            "file" => {}
            "redis" => {
                crate::store::redis_target(st).map_err(|(key, why)| err(key, why))?;
            }
            other => return Err(err("store.kind", format!("`{other}` is not memory, file or redis"))),
        }
        let ll = &raw.login_limits;
        let login_limits = LoginLimits {
            per_login: ll.failures_per_login,
            per_address: ll.failures_per_address,
            window_secs: ll.window.0.as_secs().max(1),
        };

        let mut routes = Vec::new();
        for (i, r) in raw.routes.iter().enumerate() {
            routes.push(build_route(r, i, path)?);
        }
        for (i, r) in routes.iter().enumerate() {
            if routes[..i].iter().any(|o| o.name == r.name) {
                return Err(err(&format!("routes[{i}].name"), format!("duplicate route name `{}`", r.name)));
            }
            if routes[..i].iter().any(|o| o.prefix == r.prefix && o.host == r.host) {
                return Err(err(
                    &format!("routes[{i}].prefix"),
                    format!("another route has prefix `{}` and the same host", r.prefix),
                ));
            }
        }

        let cors = CorsPolicy::from_config(&raw.cors, path)?;
        let tls = match listen.https {
            Some(_) => Some(crate::tls::server_config_with(&raw.tls, path, generation)?),
            None => None,
        };
        Ok(Self {
            source: path.to_path_buf(),
            listen,
            api_prefix,
            trusted_proxies,
            max_body_bytes: s.max_body_bytes,
            max_header_bytes: s.max_header_bytes,
            max_headers: s.max_headers,
            max_connections: s.max_connections,
            h2_max_concurrent_streams: s.h2_max_concurrent_streams,
            worker_threads: s.worker_threads,
            fast_path: s.fast_path,
            header_read_timeout: s.header_read_timeout.0,
            idle_timeout: s.idle_timeout.0,
            shutdown_grace: s.shutdown_grace.0,
            keys,
            token_settings,
            default_lifetimes,
            credentials,
            login_limits,
            refresh_reuse_grace_secs,
            routes: RouteTable::new(routes),
            cors,
            tls,
            raw,
        })
    }
}

/// SPEC §1 ranges: 1 s to 30 days; one-time tokens at most 10 minutes. Returns the bad field.
pub fn validate_lifetimes(s: &ConnectorSettings) -> Result<(), (&'static str, String)> {
    const MAX: u64 = 30 * 86_400;
    for (name, v, max) in [
        ("accessTokenLifeTime", s.access_token_life_time, MAX),
        ("refreshTokenLifeTime", s.refresh_token_life_time, MAX),
        ("oneTimeTokenLifeTime", s.one_time_token_life_time, 600),
    ] {
        if v < 1 || v > max {
            return Err((name, format!("{v} s is outside 1..={max} s")));
        }
    }
    Ok(())
}

fn build_route(r: &RouteConfig, i: usize, path: &Path) -> Result<Route, ConfigError> {
    let key = |k: &str| format!("routes[{i}].{k}");
    let err = |k: &str, reason: String| ConfigError::new(path, key(k), reason);
    if r.name.is_empty() {
        return Err(err("name", "every route needs a name".into()));
    }
    let prefix = match r.prefix.as_str() {
        "/" => "/".to_string(),
        p => {
            let p = p.trim_end_matches('/');
            if !p.starts_with('/') || normalize_path(p).map_or(true, |n| n != p) {
                return Err(err(
                    "prefix",
                    format!("`{}` must be a normalised path starting with /", r.prefix),
                ));
            }
            p.to_string()
        }
    };
    let host = match r.host.trim() {
        "" => None,
        h if !crate::routes::valid_host(h.as_bytes()) => {
            return Err(err(
                "host",
                format!("`{h}` is not a host name (letters, digits, `-`, `.`, `_`, optional :port)"),
            ));
        }
        h => Some(crate::routes::host_name(h).to_ascii_lowercase()),
    };
    let methods = if r.methods.is_empty() {
        None
    } else {
        let mut ms = Vec::new();
        for m in &r.methods {
            let up = m.to_ascii_uppercase();
            ms.push(
                Method::from_bytes(up.as_bytes())
                    .map_err(|_| err("methods", format!("`{m}` is not a method")))?,
            );
        }
        // HEAD is GET without the body (RFC 9110 §9.3.2): a GET route answers it too.
        if ms.contains(&Method::GET) && !ms.contains(&Method::HEAD) {
            ms.push(Method::HEAD);
        }
        Some(ms)
    };
    let allow = methods
        .as_ref()
        .map(|ms| ms.iter().map(Method::as_str).collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    let allow_header = HeaderValue::from_str(&allow).map_err(|_| err("methods", "not header-safe".into()))?;
    let auth = match r.auth.as_str() {
        "required" => AuthMode::Required,
        "public" => AuthMode::Public,
        other => return Err(err("auth", format!("`{other}` is not \"required\" or \"public\""))),
    };
    let balance = match r.balance.as_str() {
        "round_robin" => Balance::RoundRobin,
        "least_requests" => Balance::LeastRequests,
        other => return Err(err("balance", format!("`{other}` is not round_robin or least_requests"))),
    };
    if r.upstreams.is_empty() {
        return Err(err("upstreams", "at least one upstream is required".into()));
    }
    if r.max_connections == 0 {
        return Err(err("max_connections", "must be greater than 0".into()));
    }
    let upstreams = r
        .upstreams
        .iter()
        .enumerate()
        .map(|(j, u)| {
            Upstream::parse(u, r.connect_timeout.0, r.max_connections)
                .map_err(|why| ConfigError::new(path, format!("routes[{i}].upstreams[{j}]"), why))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (k, d) in [
        ("connect_timeout", r.connect_timeout),
        ("timeout", r.timeout),
        ("health_check.interval", r.health_check.interval),
    ] {
        if d.0.is_zero() {
            return Err(err(k, "must be greater than 0".into()));
        }
    }
    let health_path = match r.health_check.path.as_str() {
        "" => None,
        p if p.starts_with('/') && http::uri::PathAndQuery::from_str(p).is_ok() => Some(p.to_string()),
        p => return Err(err("health_check.path", format!("`{p}` must be a path starting with /"))),
    };
    let mut upstream_headers = Vec::new();
    for (name, value) in &r.upstream_headers {
        let hk = format!("upstream_headers.{name}");
        let hname =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| err(&hk, "not a header name".into()))?;
        if crate::proxy::is_hop_by_hop(&hname) || hname == http::header::HOST {
            return Err(err(&hk, "hop-by-hop headers and Host cannot be set".into()));
        }
        let text = match value.strip_prefix("env:") {
            Some(var) => {
                std::env::var(var).map_err(|_| err(&hk, format!("environment variable {var} is not set")))?
            }
            // SPEC §5: secrets come from files or the environment, never only inline.
            None if is_credential_header(&hname) => {
                return Err(err(
                    &hk,
                    format!("`{name}` carries a credential: give its value as env:NAME, not inline"),
                ));
            }
            None => value.clone(),
        };
        let hvalue = HeaderValue::from_str(&text).map_err(|_| err(&hk, "value is not header-safe".into()))?;
        upstream_headers.push((hname, hvalue));
    }
    let pool = UpstreamPool::new(r.name.clone(), upstreams, balance, health_path, r.health_check.interval.0);
    Ok(Route {
        name: r.name.as_str().into(),
        prefix,
        host,
        methods,
        allow_header,
        auth,
        strip_prefix: r.strip_prefix,
        forward_authorization: r.forward_authorization,
        forward_token_header: r.forward_token_header,
        cors: r.cors,
        timeout: r.timeout.0,
        upstream_headers,
        pool: Arc::new(pool),
        stats: std::sync::OnceLock::new(),
    })
}

/// Header names whose values are credentials (`Authorization`, `Cookie`, API keys, tokens).
/// (`Proxy-Authorization` is hop-by-hop, refused before this is asked.)
fn is_credential_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(n, "authorization" | "cookie")
        || ["token", "secret", "password", "api-key", "apikey", "api_key"].iter().any(|w| n.contains(w))
}

/// `[audit]`: a bounded number of events kept, and a path whose folder exists (the file itself
/// is created at the first event; `check-config` writes nothing).
fn check_audit(a: &crate::config::AuditConfig) -> Result<(), (&'static str, String)> {
    if a.keep > 1_000_000 {
        return Err(("audit.keep", format!("{} is more than 1000000", a.keep)));
    }
    if a.path.as_os_str().is_empty() {
        return Ok(());
    }
    match a.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) if !dir.is_dir() => Err(("audit.path", format!("folder {} does not exist", dir.display()))),
        _ if a.path.is_dir() => Err(("audit.path", format!("{} is a folder", a.path.display()))),
        _ => Ok(()),
    }
}
