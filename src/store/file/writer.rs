//! Opening the database (proved writable at start) and the writer thread that applies queued
//! operations in group-committed write transactions.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, Durability};
use tokio::sync::mpsc;

use super::txn::{
    AUDIT, FAILURES, LEGACY_REFRESH, LEGACY_SESSIONS, META, OTTS, REVOKED, SESSIONS, SESSIONS_BY_CREATED,
    SESSIONS_BY_LOGIN,
};
use super::{DbError, Finish, Job, MAX_BATCH, unavailable};
use crate::store::StoreError;

pub(super) fn open_db(path: &Path) -> Result<Database, StoreError> {
    let shown = path.display();
    let fail = |what: &str, e: &dyn std::fmt::Display| StoreError::Open {
        key: "store.path",
        reason: format!("`{shown}`: {what}: {e}"),
    };
    if path.as_os_str().is_empty() {
        return Err(StoreError::Open { key: "store.path", reason: "is required for kind \"file\"".into() });
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| fail("cannot create its folder", &e))?;
    }
    let db = Database::create(path).map_err(|e| fail("cannot open", &e))?;
    let probe = || -> Result<(), DbError> {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        txn.open_table(SESSIONS)?;
        txn.open_multimap_table(SESSIONS_BY_LOGIN)?;
        backfill_by_created(&txn)?;
        txn.open_table(AUDIT)?;
        // Sessions of the old layout cannot refresh any more (see `txn::LEGACY_SESSIONS`).
        txn.delete_table(LEGACY_SESSIONS)?;
        txn.delete_table(LEGACY_REFRESH)?;
        txn.open_table(OTTS)?;
        txn.open_table(REVOKED)?;
        txn.open_table(FAILURES)?;
        txn.open_table(META)?.insert("opened_at", wall_secs().to_string().as_str())?;
        txn.commit()?;
        Ok(())
    };
    probe().map_err(|e| fail("cannot write (read-only file system or disk full?)", &e))?;
    Ok(db)
}

/// The writer thread: one transaction per batch of queued jobs, one fsync per batch.
pub(super) fn writer(db: Arc<Database>, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let mut txn = match db.begin_write() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "store: cannot begin a write transaction");
                for job in batch {
                    drop(job);
                }
                continue;
            }
        };
        txn.set_durability(Durability::Immediate);
        let mut done: Vec<Finish> = Vec::with_capacity(batch.len());
        let mut failed = None;
        for job in batch {
            if failed.is_some() {
                // Dropping a job drops its reply channel: its caller sees "write abandoned".
                continue;
            }
            match job(&txn) {
                Ok(finish) => done.push(finish),
                Err(e) => failed = Some(e),
            }
        }
        let outcome = match failed {
            Some(e) => {
                let _ = txn.abort();
                Err(e)
            }
            None => txn.commit().map_err(unavailable),
        };
        if let Err(e) = &outcome {
            tracing::error!(error = %e, "store: write transaction failed");
        }
        for finish in done {
            finish(outcome.clone());
        }
    }
}

fn wall_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Indexes by creation the sessions of a database written before that index existed (once: the
/// index is empty only then, or when there are no sessions at all).
fn backfill_by_created(txn: &redb::WriteTransaction) -> Result<(), DbError> {
    use redb::{ReadableTable, ReadableTableMetadata};
    let mut index = txn.open_table(SESSIONS_BY_CREATED)?;
    if !index.is_empty()? {
        return Ok(());
    }
    for item in txn.open_table(SESSIONS)?.iter()? {
        let (id, rec) = item?;
        if let Ok(rec) = serde_json::from_slice::<crate::store::SessionRecord>(rec.value()) {
            index.insert((rec.created_at, id.value()), ())?;
        }
    }
    Ok(())
}
