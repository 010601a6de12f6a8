//! The one rule for an upstream response head, whichever transport read it: how its body is
//! framed (RFC 9112 §6.3, refusing what another parser could frame differently), how large its
//! head may be, and which status line the client gets. The fast path reads the head as bytes,
//! hyper's path as a `Response`; both ask these functions.

pub use crate::framing::parse_length;
use http::StatusCode;

/// An upstream response head larger than this is refused (502).
pub const MAX_HEAD: usize = 64 * 1024;
/// An upstream response head with more header fields than this is refused (502).
pub const MAX_HEADERS: usize = 100;

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304, or `Content-Length: 0`).
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes. The client gets it chunked, so its connection stays open.
    UntilClose,
}

/// Decides the framing of a final (non-1xx) response from its `Content-Length` and
/// `Transfer-Encoding` field values. Refused: a repeated or unreadable `Content-Length`, a
/// coding other than one `chunked`, and both headers at once, even on a response without a
/// body (a HEAD answer framed both ways is a smuggling sign all the same).
pub fn framing<'a>(
    head_request: bool,
    status: u16,
    lengths: impl IntoIterator<Item = &'a [u8]>,
    codings: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Framing, &'static str> {
    let mut length = None;
    for v in lengths {
        if length.is_some() {
            return Err("repeated Content-Length");
        }
        length = Some(parse_length(v).ok_or("bad Content-Length")?);
    }
    let mut chunked = None;
    for v in codings {
        if chunked.is_some() || !trim(v).eq_ignore_ascii_case(b"chunked") {
            return Err("transfer codings other than one chunked");
        }
        chunked = Some(());
    }
    if length.is_some() && chunked.is_some() {
        return Err("both Content-Length and Transfer-Encoding");
    }
    Ok(match (length, chunked) {
        _ if head_request || status == 204 || status == 304 => Framing::Empty,
        (_, Some(())) => Framing::Chunked,
        (Some(0), None) => Framing::Empty,
        (Some(n), None) => Framing::Length(n),
        (None, None) => Framing::UntilClose,
    })
}

/// The reason phrase the client gets: the status code's own, or, for a code without one, the
/// upstream's (which may be empty).
pub fn reason(status: u16, upstream: &str) -> &str {
    StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or(upstream)
}

/// Whether the response status is one the gateway relays: a 101 only answers an upgrade it
/// asked for, and a status outside 100..=999 is not HTTP.
pub fn valid_status(status: u16, upgrade_requested: bool) -> Result<(), &'static str> {
    match status {
        101 if !upgrade_requested => Err("101 without an upgrade request"),
        100..=999 => Ok(()),
        _ => Err("no valid status"),
    }
}

fn trim(b: &[u8]) -> &[u8] {
    crate::framing::trim_spaces(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(head: bool, status: u16, cl: &[&str], te: &[&str]) -> Result<Framing, &'static str> {
        framing(head, status, cl.iter().map(|s| s.as_bytes()), te.iter().map(|s| s.as_bytes()))
    }

    #[test]
    fn framing_follows_rfc_9112_strictly() {
        assert_eq!(f(false, 200, &["5"], &[]), Ok(Framing::Length(5)));
        assert_eq!(f(false, 200, &["0005"], &[]), Ok(Framing::Length(5)));
        assert_eq!(f(false, 200, &["0"], &[]), Ok(Framing::Empty));
        assert_eq!(f(true, 200, &["5"], &[]), Ok(Framing::Empty));
        assert_eq!(f(false, 204, &[], &[]), Ok(Framing::Empty));
        assert_eq!(f(false, 304, &["7"], &[]), Ok(Framing::Empty));
        assert_eq!(f(false, 200, &[], &["chunked"]), Ok(Framing::Chunked));
        assert_eq!(f(false, 200, &[], &["Chunked "]), Ok(Framing::Chunked));
        assert_eq!(f(false, 200, &[], &[]), Ok(Framing::UntilClose));
        for (cl, te) in [
            (&["5", "5"][..], &[][..]),
            (&["5, 5"], &[]),
            (&["-1"], &[]),
            (&["+1"], &[]),
            (&[""], &[]),
            (&["99999999999999999999999"], &[]),
            (&[], &["gzip, chunked"]),
            (&[], &["gzip"]),
            (&[], &["chunked", "chunked"]),
            (&["5"], &["chunked"]),
        ] {
            assert!(f(false, 200, cl, te).is_err(), "{cl:?} {te:?}");
        }
        assert!(f(true, 200, &["5"], &["chunked"]).is_err(), "HEAD framed both ways");
    }

    #[test]
    fn reason_phrases_are_the_codes_own() {
        assert_eq!(reason(200, "Fine"), "OK");
        assert_eq!(reason(299, "Custom"), "Custom");
        assert_eq!(reason(299, ""), "");
        assert!(valid_status(101, false).is_err());
        assert!(valid_status(101, true).is_ok());
        assert!(valid_status(99, false).is_err());
    }
}
