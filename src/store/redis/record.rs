//! How a `SessionRecord` is laid out in the Redis hash `sess:{id}` (numbers in decimal, digests
//! and the sealed successor in hex), and the conversions the store needs.

use super::unavailable;
use crate::store::{SessionRecord, SessionState, StoreError, TokenHash};

pub(super) fn hex(h: &[u8]) -> String {
    use std::fmt::Write;
    h.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

pub(super) fn unhex(s: &str) -> Result<Vec<u8>, StoreError> {
    let bad = || unavailable("malformed hex in a session record");
    if s.len() % 2 != 0 {
        return Err(bad());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2).ok_or_else(bad)?, 16).map_err(|_| bad()))
        .collect()
}

pub(super) fn digest(s: &str) -> Result<TokenHash, StoreError> {
    unhex(s)?.try_into().map_err(|_| unavailable("malformed digest in a session record"))
}

/// The hash fields of `sess:{id}`, in the order [`record_from`] reads them.
pub(super) const SESSION_FIELDS: [&str; 15] = [
    "login", "ca", "lr", "rc", "addr", "ua", "exp", "amax", "st", "gen", "kh", "cur", "prev", "ps", "sealed",
];

pub(super) fn record_from(v: &[Option<String>]) -> Result<Option<SessionRecord>, StoreError> {
    let Some([login, ca, lr, rc, addr, ua, exp, amax, st, generation, kh, cur, prev, ps, sealed]) = v
        .iter()
        .map(|f| f.as_deref())
        .collect::<Option<Vec<_>>>()
        .and_then(|f| <[&str; 15]>::try_from(f).ok())
    else {
        return Ok(None);
    };
    Ok(Some(SessionRecord {
        login: login.to_string(),
        created_at: num(ca)?,
        last_refresh_at: num(lr)?,
        refresh_count: num(rc)?,
        client_address: addr.to_string(),
        user_agent: ua.to_string(),
        expires_at: num(exp)?,
        access_expires_max: num(amax)?,
        state: match st {
            "live" => SessionState::Live,
            "ended" => SessionState::Ended,
            _ => SessionState::Stolen,
        },
        generation: num(generation)?,
        key_hash: digest(kh)?,
        current_hash: digest(cur)?,
        previous_hash: digest(prev)?,
        previous_spent_at: num(ps)?,
        sealed: unhex(sealed)?,
    }))
}

pub(super) fn num(s: &str) -> Result<u64, StoreError> {
    // Scores come back from sorted sets as floats ("1.7e9" never, but "1700000000" or "1e3").
    s.parse::<u64>().or_else(|_| s.parse::<f64>().map(|f| f as u64)).map_err(unavailable)
}

/// The hash fields of a new session, as `create_session` writes them.
pub(super) fn fields(r: &SessionRecord) -> [(&'static str, String); 15] {
    [
        ("login", r.login.clone()),
        ("ca", r.created_at.to_string()),
        ("lr", r.last_refresh_at.to_string()),
        ("rc", r.refresh_count.to_string()),
        ("addr", r.client_address.clone()),
        ("ua", r.user_agent.clone()),
        ("exp", r.expires_at.to_string()),
        ("amax", r.access_expires_max.to_string()),
        ("st", state_name(r.state).into()),
        ("gen", r.generation.to_string()),
        ("kh", hex(&r.key_hash)),
        ("cur", hex(&r.current_hash)),
        ("prev", hex(&r.previous_hash)),
        ("ps", r.previous_spent_at.to_string()),
        ("sealed", hex(&r.sealed)),
    ]
}

/// The `st` field: what rotate.lua and revoke_fn.lua compare against.
fn state_name(s: SessionState) -> &'static str {
    match s {
        SessionState::Live => "live",
        SessionState::Ended => "ended",
        SessionState::Stolen => "stolen",
    }
}
