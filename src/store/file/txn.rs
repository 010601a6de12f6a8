//! The file store's tables and the decisions that span several of them, each run inside one
//! write transaction (the writer thread's), which is what makes them atomic.

use redb::{MultimapTableDefinition, ReadableTable, TableDefinition, WriteTransaction};

use super::DbError;
use crate::store::session::{Decision, SessionState};
use crate::store::{FailureCount, Presented, Reservation, Rotation, SessionInfo, SessionRecord, Successor};

/// session id → `SessionRecord` as JSON (a few hundred bytes, constant per session).
pub(super) const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions_v2");
/// login → ids of its sessions (the session list's index); purged with the sessions.
pub(super) const SESSIONS_BY_LOGIN: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("sessions_by_login");
/// (created, session id) → (): the most recent sessions, newest last; purged with the sessions.
pub(super) const SESSIONS_BY_CREATED: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("sessions_by_created");
/// sequence number → audit event (JSON); the newest `audit.keep` are kept.
pub(super) const AUDIT: TableDefinition<u64, &str> = TableDefinition::new("audit");
/// OTT hash → (login, expires)
pub(super) const OTTS: TableDefinition<[u8; 32], (&str, u64)> = TableDefinition::new("otts");
/// revoked session id → revoked until
pub(super) const REVOKED: TableDefinition<&str, u64> = TableDefinition::new("revoked");
/// failure key → (count, window ends)
pub(super) const FAILURES: TableDefinition<&str, (u32, u64)> = TableDefinition::new("failures");
pub(super) const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// The tables of the one-record-per-refresh-token layout (before bounded sessions). Their
/// refresh tokens have a form the gateway no longer issues and are refused as `token.invalid`
/// before the store is asked, so the tables are dropped when the database is opened.
pub(super) const LEGACY_SESSIONS: TableDefinition<&str, (&str, [u8; 32], u64, u64, bool)> =
    TableDefinition::new("sessions");
pub(super) const LEGACY_REFRESH: TableDefinition<[u8; 32], (&str, u64, bool)> =
    TableDefinition::new("refresh");

fn decode(bytes: &[u8]) -> Result<SessionRecord, DbError> {
    serde_json::from_slice(bytes).map_err(|e| DbError::corrupt(format!("session record: {e}")))
}

pub(super) fn encode(rec: &SessionRecord) -> Result<Vec<u8>, DbError> {
    serde_json::to_vec(rec).map_err(|e| DbError::corrupt(format!("session record: {e}")))
}

pub(super) fn create_in(txn: &WriteTransaction, id: &str, rec: &SessionRecord) -> Result<(), DbError> {
    put(txn, id, rec)?;
    txn.open_multimap_table(SESSIONS_BY_LOGIN)?.insert(rec.login.as_str(), id)?;
    txn.open_table(SESSIONS_BY_CREATED)?.insert((rec.created_at, id), ())?;
    Ok(())
}

/// One purge step over sessions: up to `chunk` records after `from`; the expired ones go, with
/// their index entries. Returns how many went and where the next step starts (`None`: done).
pub(super) fn purge_sessions_in(
    txn: &WriteTransaction,
    from: Option<&str>,
    chunk: usize,
    now: u64,
) -> Result<(usize, Option<String>), DbError> {
    let mut table = txn.open_table(SESSIONS)?;
    let (mut seen, mut last, mut doomed) = (0usize, None, Vec::new());
    {
        let range = match from {
            Some(k) => table.range::<&str>((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded))?,
            None => table.range::<&str>(..)?,
        };
        for item in range {
            let (key, value) = item?;
            let id = key.value().to_string();
            match decode(value.value()) {
                Ok(rec) if !rec.expired(now) => {}
                Ok(rec) => doomed.push((id.clone(), Some((rec.login, rec.created_at)))),
                Err(_) => doomed.push((id.clone(), None)),
            }
            last = Some(id);
            seen += 1;
            if seen >= chunk {
                break;
            }
        }
    }
    let mut index = txn.open_multimap_table(SESSIONS_BY_LOGIN)?;
    let mut by_created = txn.open_table(SESSIONS_BY_CREATED)?;
    for (id, indexed) in &doomed {
        table.remove(id.as_str())?;
        if let Some((login, created)) = indexed {
            index.remove(login.as_str(), id.as_str())?;
            by_created.remove((*created, id.as_str()))?;
        }
    }
    Ok((doomed.len(), if seen >= chunk { last } else { None }))
}

pub(super) fn load(txn: &WriteTransaction, session: &str) -> Result<Option<SessionRecord>, DbError> {
    let table = txn.open_table(SESSIONS)?;
    let found = table.get(session)?.map(|g| decode(g.value())).transpose()?;
    Ok(found)
}

fn put(txn: &WriteTransaction, session: &str, rec: &SessionRecord) -> Result<(), DbError> {
    txn.open_table(SESSIONS)?.insert(session, encode(rec)?.as_slice())?;
    Ok(())
}

fn record_revocation(txn: &WriteTransaction, session: &str, until: u64) -> Result<(), DbError> {
    let mut revoked = txn.open_table(REVOKED)?;
    let prev = revoked.get(session)?.map(|g| g.value()).unwrap_or(0);
    revoked.insert(session, prev.max(until))?;
    Ok(())
}

pub(super) fn revoke_in(txn: &WriteTransaction, session: &str) -> Result<Option<u64>, DbError> {
    let Some(mut rec) = load(txn, session)? else { return Ok(None) };
    if rec.state == SessionState::Live {
        rec.state = SessionState::Ended;
        put(txn, session, &rec)?;
    }
    record_revocation(txn, session, rec.access_expires_max)?;
    Ok(Some(rec.access_expires_max))
}

pub(super) fn rotate_in(
    txn: &WriteTransaction,
    p: &Presented,
    next: &Successor,
    grace_secs: u64,
    now: u64,
) -> Result<Rotation, DbError> {
    let Some(mut rec) = load(txn, &p.session)? else { return Ok(Rotation::Unknown) };
    let decision = rec.present(p, next, grace_secs, now);
    if decision != Decision::Unknown {
        put(txn, &p.session, &rec)?;
    }
    let info = || SessionInfo { id: p.session.clone(), login: rec.login.clone() };
    Ok(match decision {
        Decision::Rotated => Rotation::Rotated(info()),
        Decision::Replayed(sealed) => Rotation::Replayed { session: info(), sealed },
        Decision::Theft => {
            record_revocation(txn, &p.session, rec.access_expires_max)?;
            Rotation::Reused { session: p.session.clone(), revoked_until: rec.access_expires_max }
        }
        Decision::Unknown => Rotation::Unknown,
    })
}

pub(super) fn reserve_in(
    txn: &WriteTransaction,
    keys: &[(String, u32)],
    window_secs: u64,
    now: u64,
) -> Result<Reservation, DbError> {
    let mut t = txn.open_table(FAILURES)?;
    let mut counts = Vec::with_capacity(keys.len());
    for (key, max) in keys {
        let f = match t.get(key.as_str())?.map(|g| g.value()) {
            Some((count, resets_at)) if resets_at > now => FailureCount { count, resets_at },
            _ => FailureCount { count: 0, resets_at: now + window_secs },
        };
        if f.count >= *max {
            return Ok(Reservation::Refused { resets_at: f.resets_at });
        }
        counts.push(f);
    }
    for ((key, _), f) in keys.iter().zip(counts) {
        t.insert(key.as_str(), (f.count.saturating_add(1), f.resets_at))?;
    }
    Ok(Reservation::Granted)
}

pub(super) fn release_in(txn: &WriteTransaction, key: &str, now: u64) -> Result<(), DbError> {
    let mut t = txn.open_table(FAILURES)?;
    let current = t.get(key)?.map(|g| g.value());
    if let Some((count, resets_at)) = current.filter(|(_, r)| *r > now) {
        t.insert(key, (count.saturating_sub(1), resets_at))?;
    }
    Ok(())
}

/// Appends `event` after the last sequence number and drops what falls beyond `keep`.
pub(super) fn append_audit_in(txn: &WriteTransaction, event: &str, keep: usize) -> Result<(), DbError> {
    let mut t = txn.open_table(AUDIT)?;
    let next = t.last()?.map_or(0, |(k, _)| k.value() + 1);
    t.insert(next, event)?;
    let keep = keep as u64;
    if next + 1 > keep {
        let cut = next + 1 - keep;
        // Only entries in front of the window: at most a few per append once trimmed.
        let doomed: Vec<u64> =
            t.range(..cut)?.map(|item| item.map(|(k, _)| k.value())).collect::<Result<_, _>>()?;
        for k in doomed {
            t.remove(k)?;
        }
    }
    Ok(())
}
