//! The audit trail of SPEC §7: one event per auth decision worth answering for later (logins,
//! failures, refreshes, theft signals, logouts, sessions ended, settings changed), each written
//! to three places: the log under target `audit`, the `audit.path` JSON-lines file (appended
//! and flushed per event, reopened after a reload so logrotate works), and the store's bounded
//! list that `GET /admin/audit` reads (shared by replicas on Redis).
//!
//! An event carries names, addresses and codes only: never a password, token or key. A write
//! that fails is logged and counted (`bo_gateway_audit_write_failures`); it never fails the
//! request that caused it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;

use crate::gateway::Gateway;

/// Every event type, in the order of the metric's rows.
pub const EVENT_TYPES: [&str; 13] = [
    "login.ok",
    "login.failed",
    "login.limited",
    "refresh.ok",
    "refresh.grace",
    "refresh.reused",
    "logout",
    "session.revoked",
    "ott.issued",
    "ott.verified",
    "ott.refused",
    "settings.changed",
    "user.disabled",
];

/// The request id the transport chose, carried to the endpoints in the request's extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// What every event of one request says about where it came from.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub client_address: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

impl Context {
    pub fn of(headers: &HeaderMap, client: IpAddr, request_id: Option<&RequestId>) -> Self {
        let ua = crate::auth::endpoints::user_agent(headers);
        Self {
            client_address: Some(client.to_string()),
            user_agent: (!ua.is_empty()).then_some(ua),
            request_id: request_id.map(|r| r.0.clone()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub time: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub login: Option<String>,
    pub session: Option<String>,
    pub client_address: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub replica: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub details: Map<String, Value>,
}

impl Event {
    pub fn new(kind: &'static str, ctx: &Context) -> Self {
        Self {
            time: now_rfc3339(),
            kind: kind.to_string(),
            login: None,
            session: None,
            client_address: ctx.client_address.clone(),
            user_agent: ctx.user_agent.clone(),
            request_id: ctx.request_id.clone(),
            replica: String::new(),
            details: Map::new(),
        }
    }

    pub fn login(mut self, login: &str) -> Self {
        self.login = Some(login.to_string());
        self
    }

    pub fn session(mut self, session: &str) -> Self {
        self.session = Some(session.to_string());
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }
}

fn now_rfc3339() -> String {
    use time::format_description::well_known::Rfc3339;
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(now.millisecond() as u32 * 1_000_000).unwrap_or(now);
    now.format(&Rfc3339).unwrap_or_default()
}

/// The audit sinks' state, one per gateway.
pub struct Audit {
    replica: String,
    file: tokio::sync::Mutex<Option<(PathBuf, tokio::fs::File)>>,
    /// Set by a reload: the next event reopens `audit.path` (logrotate moved the old file).
    reopen: AtomicBool,
    pub counts: [AtomicU64; EVENT_TYPES.len()],
    pub store_failures: AtomicU64,
    pub file_failures: AtomicU64,
}

impl Audit {
    pub fn new(replica: String) -> Self {
        Self {
            replica,
            file: tokio::sync::Mutex::new(None),
            reopen: AtomicBool::new(false),
            counts: Default::default(),
            store_failures: AtomicU64::new(0),
            file_failures: AtomicU64::new(0),
        }
    }

    /// After a reload: the file is reopened (by path) at the next event.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    async fn append_file(&self, path: &std::path::Path, line: &[u8]) -> std::io::Result<()> {
        let mut guard = self.file.lock().await;
        let stale = self.reopen.swap(false, Ordering::Relaxed);
        if stale || guard.as_ref().is_none_or(|(p, _)| p != path) {
            *guard = None;
            let f = tokio::fs::OpenOptions::new().create(true).append(true).open(path).await?;
            *guard = Some((path.to_path_buf(), f));
        }
        let Some((_, f)) = guard.as_mut() else { return Ok(()) };
        let written = async {
            f.write_all(line).await?;
            f.flush().await
        }
        .await;
        if written.is_err() {
            // Reopened at the next event rather than written to a broken handle for good.
            *guard = None;
        }
        written
    }
}

/// Writes `ev` to the log, the file and the store. Never fails: a sink that does is logged and
/// counted.
pub async fn emit(gw: &Gateway, mut ev: Event) {
    let audit = &gw.audit;
    ev.replica = audit.replica.clone();
    if let Some(i) = EVENT_TYPES.iter().position(|t| *t == ev.kind) {
        audit.counts[i].fetch_add(1, Ordering::Relaxed);
    }
    let line = match serde_json::to_string(&ev) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "audit event not serialisable");
            return;
        }
    };
    tracing::info!(target: "audit", event = %line);
    let rt = gw.runtime();
    let cfg = &rt.raw.audit;
    if !cfg.path.as_os_str().is_empty() {
        let mut bytes = line.clone().into_bytes();
        bytes.push(b'\n');
        if let Err(e) = audit.append_file(&cfg.path, &bytes).await {
            audit.file_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(path = %cfg.path.display(), error = %e, "audit file write failed");
        }
    }
    if cfg.keep > 0 {
        if let Err(e) = gw.store.append_audit(&line, cfg.keep).await {
            audit.store_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "audit store write failed");
        }
    }
}

/// This process's name in events: the host name and a random suffix per process (replicas on
/// one host stay apart).
pub fn replica_name(suffix: u64) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".into());
    format!("{host}-{:08x}", suffix as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_what_the_spec_names_and_no_secret_fields() {
        let ctx = Context {
            client_address: Some("192.0.2.1".into()),
            user_agent: Some("ua/1".into()),
            request_id: Some("r1".into()),
        };
        let ev = Event::new("login.failed", &ctx).login("bob").detail("code", "1.2.0.11");
        let v = serde_json::to_value(&ev).unwrap();
        for k in ["time", "type", "login", "session", "clientAddress", "userAgent", "requestId", "replica"] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(v["details"]["code"], "1.2.0.11");
        let time = v["time"].as_str().unwrap();
        assert!(time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339).is_ok());
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back.kind, "login.failed");
    }
}
