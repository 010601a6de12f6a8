//! The file store's tables and the two decisions that span several of them, each run inside one
//! write transaction (the writer thread's), which is what makes them atomic.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::DbError;
use crate::store::{Rotation, SessionInfo};

/// session id → (login, current refresh hash, refresh expires, latest access exp, revoked)
pub(super) const SESSIONS: TableDefinition<&str, (&str, [u8; 32], u64, u64, bool)> =
    TableDefinition::new("sessions");
/// refresh hash → (session id, expires, spent)
pub(super) const REFRESH: TableDefinition<[u8; 32], (&str, u64, bool)> = TableDefinition::new("refresh");
/// OTT hash → (login, expires)
pub(super) const OTTS: TableDefinition<[u8; 32], (&str, u64)> = TableDefinition::new("otts");
/// revoked session id → revoked until
pub(super) const REVOKED: TableDefinition<&str, u64> = TableDefinition::new("revoked");
/// failure key → (count, window ends)
pub(super) const FAILURES: TableDefinition<&str, (u32, u64)> = TableDefinition::new("failures");
pub(super) const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

pub(super) fn revoke_in(txn: &WriteTransaction, session: &str) -> Result<Option<u64>, DbError> {
    let mut sessions = txn.open_table(SESSIONS)?;
    let Some((login, current, rexp, amax)) = sessions.get(session)?.map(|g| {
        let (login, cur, rexp, amax, _) = g.value();
        (login.to_string(), cur, rexp, amax)
    }) else {
        return Ok(None);
    };
    sessions.insert(session, (login.as_str(), current, rexp, amax, true))?;
    let mut refresh = txn.open_table(REFRESH)?;
    let rec = refresh.get(current)?.map(|g| {
        let (s, exp, _) = g.value();
        (s.to_string(), exp)
    });
    if let Some((s, exp)) = rec {
        refresh.insert(current, (s.as_str(), exp, true))?;
    }
    let mut revoked = txn.open_table(REVOKED)?;
    let prev = revoked.get(session)?.map(|g| g.value()).unwrap_or(0);
    revoked.insert(session, prev.max(amax))?;
    Ok(Some(amax))
}

pub(super) fn rotate_in(
    txn: &WriteTransaction,
    presented: [u8; 32],
    next: [u8; 32],
    refresh_expires: u64,
    access_expires: u64,
    now: u64,
) -> Result<Rotation, DbError> {
    let rec = txn.open_table(REFRESH)?.get(presented)?.map(|g| {
        let (s, exp, spent) = g.value();
        (s.to_string(), exp, spent)
    });
    let Some((session, expires, spent)) = rec else { return Ok(Rotation::Unknown) };
    if expires <= now {
        return Ok(Rotation::Unknown);
    }
    if spent {
        return Ok(match revoke_in(txn, &session)? {
            Some(until) => Rotation::Reused { session, revoked_until: until },
            None => Rotation::Unknown,
        });
    }
    let mut refresh = txn.open_table(REFRESH)?;
    refresh.insert(presented, (session.as_str(), expires, true))?;
    let mut sessions = txn.open_table(SESSIONS)?;
    let found = sessions.get(session.as_str())?.map(|g| {
        let (login, _, _, amax, revoked) = g.value();
        (login.to_string(), amax, revoked)
    });
    let Some((login, amax, revoked)) = found else { return Ok(Rotation::Unknown) };
    if revoked {
        return Ok(Rotation::Unknown);
    }
    let amax = amax.max(access_expires);
    sessions.insert(session.as_str(), (login.as_str(), next, refresh_expires, amax, false))?;
    refresh.insert(next, (session.as_str(), refresh_expires, false))?;
    Ok(Rotation::Rotated(SessionInfo { id: session, login }))
}
