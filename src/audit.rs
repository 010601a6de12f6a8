//! The audit trail of SPEC §7: one event per auth decision worth answering for later (logins,
//! failures, refreshes, theft signals, logouts, sessions ended, settings changed), each written
//! to three places: the log under target `audit`, the `audit.path` JSON-lines file (appended
//! and flushed per event, reopened after a reload so logrotate works), and the store's bounded
//! list that `GET /admin/audit` reads (shared by replicas on Redis).
//!
//! The log line is written when the event happens; the file and the store are written by one
//! task, in order, from an unbounded queue (nothing is dropped; `bo_gateway_audit_queued` shows
//! what waits), so a slow disk or store never holds up the request. Graceful shutdown waits for
//! the queue ([`Audit::flush`]).
//!
//! An event carries names, addresses and codes only: never a password, token or key. A write
//! that fails is logged and counted (`bo_gateway_audit_write_failures`); it never fails the
//! request that caused it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use crate::gateway::Gateway;
use crate::store::Store;

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

/// One item of the writer's queue, handled in order.
enum Job {
    /// A serialised event (newline-terminated), and where it goes as configured when emitted.
    Event { line: String, path: Option<PathBuf>, keep: usize },
    /// Reopen `audit.path` before the next event: a reload (logrotate moved the old file).
    /// Events queued before it still go to the old file.
    Reopen,
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

/// The audit sinks' state, one per gateway: the count per event type, taken when the event is
/// emitted, and the queue to the one writer task that owns the file and the store writes.
pub struct Audit {
    replica: String,
    queue: mpsc::UnboundedSender<Job>,
    pub counts: [AtomicU64; EVENT_TYPES.len()],
    /// Events emitted and not yet written by both sinks.
    pub queued: Arc<AtomicU64>,
    pub store_failures: Arc<AtomicU64>,
    pub file_failures: Arc<AtomicU64>,
}

impl Audit {
    /// Starts the writer task (so: inside the runtime). It ends when `self` is dropped and the
    /// queue is empty.
    pub fn new(replica: String, store: Arc<dyn Store>) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let audit = Self {
            replica,
            queue,
            counts: Default::default(),
            queued: Arc::default(),
            store_failures: Arc::default(),
            file_failures: Arc::default(),
        };
        let writer = Writer {
            store,
            file: None,
            queued: audit.queued.clone(),
            store_failures: audit.store_failures.clone(),
            file_failures: audit.file_failures.clone(),
        };
        tokio::spawn(writer.run(rx));
        audit
    }

    /// After a reload: events emitted from now on go to a newly opened `audit.path`.
    pub fn reopen(&self) {
        let _ = self.queue.send(Job::Reopen);
    }

    /// Waits until every event emitted before the call is written to the file and the store
    /// (tried: a failing sink is counted, not retried). For shutdown, and for tests.
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.queue.send(Job::Flush(done)).is_ok() {
            let _ = written.await;
        }
    }
}

/// The one task that writes events, in the order they were emitted: file first (flushed per
/// event), then the store. Neither ever holds up the request that emitted the event.
struct Writer {
    store: Arc<dyn Store>,
    file: Option<(PathBuf, tokio::fs::File)>,
    queued: Arc<AtomicU64>,
    store_failures: Arc<AtomicU64>,
    file_failures: Arc<AtomicU64>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Job>) {
        while let Some(job) = rx.recv().await {
            match job {
                Job::Event { line, path, keep } => {
                    self.write(&line, path.as_deref(), keep).await;
                    self.queued.fetch_sub(1, Ordering::Relaxed);
                }
                Job::Reopen => self.file = None,
                Job::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    }

    async fn write(&mut self, line: &str, path: Option<&Path>, keep: usize) {
        if let Some(path) = path {
            if let Err(e) = self.append_file(path, line.as_bytes()).await {
                self.file_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(path = %path.display(), error = %e, "audit file write failed");
            }
        }
        if keep > 0 {
            let event = line.strip_suffix('\n').unwrap_or(line);
            if let Err(e) = self.store.append_audit(event, keep).await {
                self.store_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "audit store write failed");
            }
        }
    }

    async fn append_file(&mut self, path: &Path, line: &[u8]) -> std::io::Result<()> {
        if self.file.as_ref().is_none_or(|(p, _)| p != path) {
            self.file = None;
            let f = tokio::fs::OpenOptions::new().create(true).append(true).open(path).await?;
            self.file = Some((path.to_path_buf(), f));
        }
        let Some((_, f)) = self.file.as_mut() else { return Ok(()) };
        let written = async {
            f.write_all(line).await?;
            f.flush().await
        }
        .await;
        if written.is_err() {
            // Reopened at the next event rather than written to a broken handle for good.
            self.file = None;
        }
        written
    }
}

/// Records `ev`: counted and logged (target `audit`) at once, then queued for the file and the
/// store, which one writer task writes in order ([`Audit::flush`] waits for it). Never fails and
/// never waits: a sink that fails is logged and counted.
pub fn emit(gw: &Gateway, mut ev: Event) {
    let audit = &gw.audit;
    ev.replica = audit.replica.clone();
    if let Some(i) = EVENT_TYPES.iter().position(|t| *t == ev.kind) {
        audit.counts[i].fetch_add(1, Ordering::Relaxed);
    }
    let mut line = match serde_json::to_string(&ev) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "audit event not serialisable");
            return;
        }
    };
    tracing::info!(target: "audit", event = %line);
    let rt = gw.runtime();
    let cfg = &rt.raw.audit;
    let path = (!cfg.path.as_os_str().is_empty()).then(|| cfg.path.clone());
    if path.is_none() && cfg.keep == 0 {
        return;
    }
    line.push('\n');
    audit.queued.fetch_add(1, Ordering::Relaxed);
    if audit.queue.send(Job::Event { line, path, keep: cfg.keep }).is_err() {
        // Only once the runtime is going away; the log line above has it.
        audit.queued.fetch_sub(1, Ordering::Relaxed);
        tracing::warn!("audit writer gone; event logged only");
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
