//! The `Date` header value, made at most once a second per thread.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

/// An IMF-fixdate is always this long ("Sun, 06 Nov 1994 08:49:37 GMT").
const LEN: usize = 29;

pub fn now() -> [u8; LEN] {
    thread_local!(static LAST: Cell<(u64, [u8; LEN])> = const { Cell::new((u64::MAX, [b' '; LEN])) });
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    LAST.with(|last| {
        let (at, value) = last.get();
        if at == secs {
            return value;
        }
        let mut value = [b' '; LEN];
        let text = httpdate::fmt_http_date(now);
        let n = text.len().min(LEN);
        value[..n].copy_from_slice(&text.as_bytes()[..n]);
        last.set((secs, value));
        value
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_date_parses_back() {
        let d = super::now();
        let text = std::str::from_utf8(&d).unwrap();
        assert!(httpdate::parse_http_date(text).is_ok(), "{text}");
    }
}
