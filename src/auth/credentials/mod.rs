//! Checking a login and password: `file` (argon2id users file, on idle-priority threads with bounded
//! concurrency so a login storm cannot starve proxied traffic) or `http` (the BO itself).

mod file;
mod http;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

pub use file::{FileUsers, User, hash_password, hash_password_with};
pub use http::HttpCheck;

use crate::config::{ConfigError, CredentialsConfig};
use crate::error::GatewayError;

/// The result of a password check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid { roles: Vec<String> },
    Disabled,
    Invalid,
}

/// What the gateway knows of a login outside a password check (refresh, OTT verification).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub roles: Vec<String>,
    pub disabled: bool,
}

/// Whether a login may still use its sessions, as the source says at a refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Active,
    Disabled,
    Removed,
}

impl Standing {
    /// The `state` detail of the `user.disabled` event.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
            Self::Removed => "removed",
        }
    }
}

pub enum Credentials {
    File(FileUsers),
    Http(HttpCheck),
}

/// Login names and roles must be usable as header values (`X-Auth-*`).
pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && !s.chars().any(|c| c.is_control() || c == ',')
}

/// A login with surrounding whitespace or a control character anywhere is never a login (SPEC
/// §1): both sources answer it as a wrong login (the users file, which refuses such names at
/// load, after the same dummy hash as any unknown login; the BO is not asked).
pub(crate) fn well_formed_login(s: &str) -> bool {
    s.trim() == s && !s.chars().any(char::is_control)
}

/// Bounds concurrent password hashing to half the cores (at least one).
pub fn hashing_limit() -> Arc<Semaphore> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    Arc::new(Semaphore::new((cores / 2).max(1)))
}

impl Credentials {
    pub fn load(cfg: &CredentialsConfig, file: &Path) -> Result<Self, ConfigError> {
        match cfg.kind.as_str() {
            "file" if !cfg.user_url.is_empty() => Err(ConfigError::new(
                file,
                "credentials.user_url",
                "only for kind = \"http\" (a users file is read at each refresh anyway)",
            )),
            "file" => FileUsers::load(cfg, file).map(Self::File),
            "http" => HttpCheck::load(cfg, file).map(Self::Http),
            other => Err(ConfigError::new(
                file,
                "credentials.kind",
                format!("`{other}` is not \"file\" or \"http\""),
            )),
        }
    }

    /// A login in the form the source knows it (SPEC §1): the users file's exact spelling; for
    /// `http`, whose BO may ignore case, case-folded; without surrounding whitespace or control
    /// characters. The one name a login goes by in the gateway: its failure counter, its
    /// sessions (and so the store's per-login index and the tokens' `sub`), its audit events and
    /// the admin API's `?login=` all use it, so `Bob` and `bob` are one login where the source
    /// takes them for one.
    pub fn canonical_login(&self, login: &str) -> String {
        let core = login.trim_matches(|c: char| c.is_whitespace() || c.is_control());
        match self {
            Self::File(_) => core.to_string(),
            Self::Http(_) => http::fold(core),
        }
    }

    /// The logins `self` accepts that `next` (a reloaded users file) disables or no longer has:
    /// whose sessions a reload ends. Only a users file can say so; the `http` source is asked
    /// about a login when it logs in and, with `user_url`, at each refresh (`standing`).
    pub fn no_longer_accepted(&self, next: &Credentials) -> Vec<(String, Standing)> {
        let (Self::File(old), Self::File(new)) = (self, next) else { return Vec::new() };
        old.users()
            .filter(|u| !u.disabled)
            .filter_map(|u| match new.user(&u.login) {
                None => Some((u.login.clone(), Standing::Removed)),
                Some(n) if n.disabled => Some((u.login.clone(), Standing::Disabled)),
                Some(_) => None,
            })
            .collect()
    }

    /// The login's current roles and state as far as the gateway holds them; `None` if it no
    /// longer exists.
    pub fn account(&self, login: &str) -> Option<Account> {
        match self {
            Self::File(f) => f.user(login).map(|u| Account { roles: u.roles.clone(), disabled: u.disabled }),
            // The BO is the authority on who exists: asked at login, and at refresh through
            // `standing` when it can be.
            Self::Http(h) => Some(Account { roles: h.roles(login), disabled: false }),
        }
    }

    /// Whether a refresh must ask the source (`standing`) before rotating: only the `http`
    /// source with `user_url`. Asking first means an unreachable BO spends no refresh token.
    pub fn asks_at_refresh(&self) -> bool {
        matches!(self, Self::Http(h) if h.asks_at_refresh())
    }

    /// Asks the source whether `login` (canonical) may still refresh. The users file answers
    /// from memory; the BO over HTTP (see `http`), or `Active` when it has nothing to ask.
    pub async fn standing(&self, login: &str) -> Result<Standing, GatewayError> {
        match self {
            Self::File(f) => Ok(match f.user(login) {
                Some(u) if u.disabled => Standing::Disabled,
                Some(_) => Standing::Active,
                None => Standing::Removed,
            }),
            Self::Http(h) => h.standing(login).await,
        }
    }
}

/// Checks a password: argon2id on a thread of its own at idle CPU priority (at most `limit` at a
/// time), or a call to the BO. Passwords are never logged or kept.
pub async fn check_password(
    creds: Arc<Credentials>,
    limit: &Semaphore,
    login: String,
    password: String,
) -> Result<Verdict, GatewayError> {
    if let Credentials::Http(h) = creds.as_ref() {
        return h.check(&login, &password).await;
    }
    let _permit = hashing_slot(limit, HASH_WAIT).await?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A thread per check (its start costs microseconds beside milliseconds of argon2), so its
    // priority can be lowered for good without touching the runtime's blocking pool.
    std::thread::Builder::new()
        .name("bo-gateway-hash".into())
        .spawn(move || {
            lower_priority();
            let verdict = match creds.as_ref() {
                Credentials::File(f) => f.verify_blocking(&login, &password),
                Credentials::Http(_) => Verdict::Invalid,
            };
            let _ = tx.send(verdict);
        })
        .map_err(|e| GatewayError::Internal(format!("password check thread: {e}")))?;
    rx.await.map_err(|_| GatewayError::Internal("password check failed".into()))
}

/// Longest a password check waits for a hashing slot. Past it the login gets 503
/// `credentials.unavailable`: under a login flood, or on cores proxying saturates (hashing runs
/// at idle priority), logins are refused promptly rather than queued without end, each holding
/// a connection and a password.
const HASH_WAIT: Duration = Duration::from_secs(5);

async fn hashing_slot(limit: &Semaphore, wait: Duration) -> Result<SemaphorePermit<'_>, GatewayError> {
    match tokio::time::timeout(wait, limit.acquire()).await {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(_)) => Err(GatewayError::CredentialsUnavailable("hashing pool closed".into())),
        Err(_) => Err(GatewayError::CredentialsUnavailable("password checks saturated".into())),
    }
}

/// Hashing runs only on CPU time nothing else wants: SCHED_IDLE on Linux (a proxying thread that
/// wakes preempts it at once), else the lowest normal priority. So a login storm slows logins,
/// never the proxied traffic sharing the cores.
fn lower_priority() {
    use thread_priority::{ThreadPriority, set_current_thread_priority};
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
            thread_native_id,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        if set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle).is_ok() {
            return;
        }
    }
    if let Err(e) = set_current_thread_priority(ThreadPriority::Min) {
        tracing::debug!(error = ?e, "could not lower the hashing thread's priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_login_that_cannot_get_a_hashing_slot_in_time_is_refused_not_queued() {
        let limit = Semaphore::new(1);
        let held = hashing_slot(&limit, Duration::from_millis(50)).await.unwrap();
        let started = std::time::Instant::now();
        let refused = hashing_slot(&limit, Duration::from_millis(50)).await;
        assert!(matches!(refused, Err(GatewayError::CredentialsUnavailable(_))));
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(held);
        assert!(hashing_slot(&limit, Duration::from_millis(50)).await.is_ok(), "a freed slot is taken");
    }

    #[test]
    fn user_url_is_for_the_http_source_only() {
        let cfg = CredentialsConfig { user_url: "http://127.0.0.1:1/users".into(), ..Default::default() };
        let e = Credentials::load(&cfg, Path::new("gateway.toml")).err().unwrap();
        assert_eq!(e.key, "credentials.user_url");
    }

    #[test]
    fn the_http_source_knows_logins_case_folded() {
        let cfg = CredentialsConfig {
            kind: "http".into(),
            url: "http://127.0.0.1:1/auth/token".into(),
            ..Default::default()
        };
        let creds = Credentials::load(&cfg, Path::new("gateway.toml")).unwrap();
        assert_eq!(creds.canonical_login(" Bob\t"), "bob");
        assert_eq!(creds.canonical_login("ÄDMIN"), "ädmin");
        assert!(!creds.asks_at_refresh());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn hashing_threads_run_at_idle_priority() {
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, thread_schedule_policy,
        };
        let policy = std::thread::spawn(|| {
            super::lower_priority();
            thread_schedule_policy().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(policy, ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle));
        // The caller's own thread is untouched.
        assert_ne!(thread_schedule_policy().unwrap(), policy);
    }
}
