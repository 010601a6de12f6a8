//! `store.kind = "file"`: an embedded redb database at `store.path`, for one gateway whose
//! sessions must survive a restart or a `kill -9`.
//!
//! Why redb: pure Rust (no C library to build or link), ACID with copy-on-write pages and a
//! checksummed commit slot, so a crash at any point leaves either the old or the new state;
//! every commit here is `Durability::Immediate` (fsync) before the caller gets an answer.
//!
//! All writes go through one writer thread that applies whatever is queued in a single write
//! transaction and commits once (group commit). That makes each operation atomic by
//! construction (redb has one writer; the thread applies operations one after another) and
//! spreads one fsync over every request that arrived meanwhile. Reads use redb's concurrent read
//! transactions on tokio's blocking pool. Nothing here blocks a runtime thread.

mod txn;
mod writer;

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableTable, ReadableTableMetadata, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::*;
use txn::{
    AUDIT, FAILURES, META, OTTS, REVOKED, SESSIONS, SESSIONS_BY_CREATED, SESSIONS_BY_LOGIN, append_audit_in,
    create_in, purge_sessions_in, release_in, reserve_in, revoke_in, rotate_in,
};
use writer::{open_db, writer};

/// Operations applied per write transaction at most, so one commit stays short.
const MAX_BATCH: usize = 512;
/// Entries a purge step looks at per transaction, so purging never holds the writer for long.
const PURGE_CHUNK: usize = 2048;

type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Job = Box<dyn FnOnce(&WriteTransaction) -> Result<Finish, StoreError> + Send>;

pub struct FileStore {
    db: Arc<Database>,
    jobs: mpsc::UnboundedSender<Job>,
    path: PathBuf,
}

/// redb's error, boxed: it is large, and every closure here returns it.
#[derive(Debug)]
struct DbError(Box<redb::Error>);

impl<E: Into<redb::Error>> From<E> for DbError {
    fn from(e: E) -> Self {
        Self(Box::new(e.into()))
    }
}

impl DbError {
    fn corrupt(why: String) -> Self {
        Self(Box::new(redb::StorageError::Corrupted(why).into()))
    }
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Whether the session `id` has a record that has not expired by `now`.
fn is_live(
    sessions: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
    now: u64,
) -> Result<bool, DbError> {
    Ok(sessions.get(id)?.is_some_and(|g| {
        serde_json::from_slice::<SessionRecord>(g.value()).is_ok_and(|r| r.expires_at > now)
    }))
}

impl FileStore {
    /// Opens (or creates) the database and proves it writable with one durable commit, so an
    /// unwritable path or a full disk stops the gateway at start rather than at the first login.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let path = path.to_path_buf();
        let p = path.clone();
        let db = tokio::task::spawn_blocking(move || open_db(&p))
            .await
            .map_err(|e| StoreError::Open { key: "store.path", reason: e.to_string() })??;
        let db = Arc::new(db);
        let (jobs, rx) = mpsc::unbounded_channel();
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name("bo-store-writer".into())
            .spawn(move || writer(writer_db, rx))
            .map_err(|e| StoreError::Open { key: "store.path", reason: format!("writer thread: {e}") })?;
        Ok(Self { db, jobs, path })
    }

    /// Runs `f` inside the writer's next transaction; answers once that transaction is durable.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, DbError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |txn| {
            let v = f(txn).map_err(unavailable)?;
            Ok(Box::new(move |outcome: Result<(), StoreError>| {
                let _ = tx.send(outcome.map(|()| v));
            }))
        });
        self.jobs.send(job).map_err(|_| unavailable("writer stopped"))?;
        rx.await.map_err(|_| unavailable("write abandoned"))?
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&redb::ReadTransaction) -> Result<T, DbError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(unavailable)?;
            f(&txn).map_err(unavailable)
        })
        .await
        .map_err(unavailable)?
    }
}

/// Purges one table in bounded steps: each step is its own transaction that looks at up to
/// `PURGE_CHUNK` entries after the last key seen and deletes the expired ones.
macro_rules! purge_table {
    ($store:expr, $table:expr, $owned:ty, $kr:ty, |$k:ident| $borrow:expr, |$v:ident| $expired:expr) => {{
        let mut removed = 0usize;
        let mut from: Option<$owned> = None;
        loop {
            let start = from.take();
            let (n, next) = $store
                .write(move |txn| {
                    let mut t = txn.open_table($table)?;
                    let (mut seen, mut last, mut doomed) = (0usize, None::<$owned>, Vec::<$owned>::new());
                    {
                        let range = match &start {
                            Some($k) => t.range::<$kr>((Bound::Excluded($borrow), Bound::Unbounded))?,
                            None => t.range::<$kr>(..)?,
                        };
                        for item in range {
                            let (key, value) = item?;
                            let key: $owned = key.value().to_owned();
                            let $v = value.value();
                            if $expired {
                                doomed.push(key.clone());
                            }
                            last = Some(key);
                            seen += 1;
                            if seen >= PURGE_CHUNK {
                                break;
                            }
                        }
                    }
                    for $k in &doomed {
                        t.remove($borrow)?;
                    }
                    Ok((doomed.len(), if seen >= PURGE_CHUNK { last } else { None }))
                })
                .await?;
            removed += n;
            match next {
                Some(k) => from = Some(k),
                None => break,
            }
        }
        removed
    }};
}

#[async_trait]
impl Store for FileStore {
    fn kind(&self) -> &'static str {
        "file"
    }

    async fn create_session(&self, s: NewSession) -> Result<(), StoreError> {
        let rec = SessionRecord::new(&s);
        self.write(move |txn| create_in(txn, &s.id, &rec)).await
    }

    async fn rotate_refresh(
        &self,
        presented: &Presented,
        next: &Successor,
        grace_secs: u64,
        now: u64,
    ) -> Result<Rotation, StoreError> {
        let (presented, next) = (presented.clone(), next.clone());
        self.write(move |txn| rotate_in(txn, &presented, &next, grace_secs, now)).await
    }

    async fn revoke_session(&self, session: &str) -> Result<Option<u64>, StoreError> {
        let session = session.to_string();
        self.write(move |txn| revoke_in(txn, &session)).await
    }

    async fn sessions_of(&self, login: &str, now: u64) -> Result<Vec<String>, StoreError> {
        let login = login.to_string();
        self.read(move |txn| {
            let sessions = txn.open_table(SESSIONS)?;
            let mut out = Vec::new();
            for id in txn.open_multimap_table(SESSIONS_BY_LOGIN)?.get(login.as_str())? {
                let id = id?.value().to_string();
                if is_live(&sessions, &id, now)? {
                    out.push(id);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn recent_sessions(&self, limit: usize, now: u64) -> Result<Vec<String>, StoreError> {
        self.read(move |txn| {
            let sessions = txn.open_table(SESSIONS)?;
            let mut out = Vec::new();
            for item in txn.open_table(SESSIONS_BY_CREATED)?.iter()?.rev() {
                if out.len() >= limit {
                    break;
                }
                let id = item?.0.value().1.to_string();
                if is_live(&sessions, &id, now)? {
                    out.push(id);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn session(&self, session: &str) -> Result<Option<SessionRecord>, StoreError> {
        let session = session.to_string();
        let bytes = self
            .read(move |txn| Ok(txn.open_table(SESSIONS)?.get(session.as_str())?.map(|g| g.value().to_vec())))
            .await?;
        bytes.map(|b| serde_json::from_slice(&b).map_err(unavailable)).transpose()
    }

    async fn append_audit(&self, event: &str, keep: usize) -> Result<(), StoreError> {
        let event = event.to_string();
        self.write(move |txn| append_audit_in(txn, &event, keep)).await
    }

    async fn audit_events(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        self.read(move |txn| {
            let mut out = Vec::new();
            for item in txn.open_table(AUDIT)?.iter()?.rev().take(limit) {
                out.push(item?.1.value().to_string());
            }
            Ok(out)
        })
        .await
    }

    async fn put_ott(&self, hash: &TokenHash, login: &str, expires: u64) -> Result<(), StoreError> {
        let (hash, login) = (*hash, login.to_string());
        self.write(move |txn| {
            txn.open_table(OTTS)?.insert(hash, (login.as_str(), expires))?;
            Ok(())
        })
        .await
    }

    async fn consume_ott(&self, hash: &TokenHash, now: u64) -> Result<Option<String>, StoreError> {
        let hash = *hash;
        self.write(move |txn| {
            let mut otts = txn.open_table(OTTS)?;
            let taken = otts.remove(hash)?.map(|g| {
                let (login, exp) = g.value();
                (login.to_string(), exp)
            });
            Ok(taken.filter(|(_, exp)| *exp > now).map(|(login, _)| login))
        })
        .await
    }

    async fn settings(&self) -> Result<Option<ConnectorSettings>, StoreError> {
        let text = self
            .read(|txn| Ok(txn.open_table(META)?.get("settings")?.map(|g| g.value().to_string())))
            .await?;
        text.map(|t| serde_json::from_str(&t).map_err(unavailable)).transpose()
    }

    async fn put_settings(&self, settings: ConnectorSettings) -> Result<(), StoreError> {
        let text = serde_json::to_string(&settings).map_err(unavailable)?;
        self.write(move |txn| {
            txn.open_table(META)?.insert("settings", text.as_str())?;
            Ok(())
        })
        .await
    }

    async fn login_failures(&self, key: &str, now: u64) -> Result<Option<FailureCount>, StoreError> {
        let key = key.to_string();
        let found =
            self.read(move |txn| Ok(txn.open_table(FAILURES)?.get(key.as_str())?.map(|g| g.value()))).await?;
        Ok(found.map(|(count, resets_at)| FailureCount { count, resets_at }).filter(|f| f.resets_at > now))
    }

    async fn reserve_attempt(
        &self,
        keys: &[(&str, u32)],
        window_secs: u64,
        now: u64,
    ) -> Result<Reservation, StoreError> {
        let keys: Vec<(String, u32)> = keys.iter().map(|(k, m)| ((*k).to_string(), *m)).collect();
        self.write(move |txn| reserve_in(txn, &keys, window_secs, now)).await
    }

    async fn release_attempt(&self, key: &str, now: u64) -> Result<(), StoreError> {
        let key = key.to_string();
        self.write(move |txn| release_in(txn, &key, now)).await
    }

    async fn clear_login_failures(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_string();
        self.write(move |txn| {
            txn.open_table(FAILURES)?.remove(key.as_str())?;
            Ok(())
        })
        .await
    }

    async fn entries(&self) -> Result<usize, StoreError> {
        self.read(|txn| {
            let n = txn.open_table(SESSIONS)?.len()?
                + txn.open_multimap_table(SESSIONS_BY_LOGIN)?.len()?
                + txn.open_table(SESSIONS_BY_CREATED)?.len()?
                + txn.open_table(AUDIT)?.len()?
                + txn.open_table(OTTS)?.len()?
                + txn.open_table(REVOKED)?.len()?
                + txn.open_table(FAILURES)?.len()?
                + txn.open_table(META)?.len()?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|txn| {
            txn.open_table(META)?;
            Ok(())
        })
        .await
    }

    /// Table by table in bounded steps, each its own transaction, so logins and refreshes queue
    /// behind at most one short step.
    async fn purge_expired(&self, now: u64) -> Result<usize, StoreError> {
        let mut sessions = 0;
        let mut from: Option<String> = None;
        loop {
            let start = from.take();
            let (n, next) =
                self.write(move |txn| purge_sessions_in(txn, start.as_deref(), PURGE_CHUNK, now)).await?;
            sessions += n;
            match next {
                Some(k) => from = Some(k),
                None => break,
            }
        }
        Ok(sessions
            + purge_table!(self, OTTS, [u8; 32], [u8; 32], |k| *k, |v| v.1 <= now)
            + purge_table!(self, REVOKED, String, &str, |k| k.as_str(), |v| v < now)
            + purge_table!(self, FAILURES, String, &str, |k| k.as_str(), |v| v.1 <= now))
    }

    async fn live_revocations(&self, now: u64) -> Result<Vec<Revoked>, StoreError> {
        self.read(move |txn| {
            let mut out = Vec::new();
            for item in txn.open_table(REVOKED)?.iter()? {
                let (k, v) = item?;
                if v.value() >= now {
                    out.push((k.value().to_string(), v.value()));
                }
            }
            Ok(out)
        })
        .await
    }
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore").field("path", &self.path).finish()
    }
}
