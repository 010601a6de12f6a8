//! The one rule for an upstream response head, whichever transport read it: how its body is
//! framed (RFC 9112 §6.3, refusing what another parser could frame differently), how large its
//! head may be, and which status line the client gets; and the one reader of response heads
//! as bytes, for both transports (hyper's path reads an upgrade's answer as a `Response`,
//! judged by the same functions).

use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::{Buf, BytesMut};
use http::StatusCode;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::Failure;
use super::headers::named_in;
pub use crate::framing::parse_length;

/// An upstream response head larger than this is refused (502).
pub const MAX_HEAD: usize = 64 * 1024;
/// An upstream response head with more header fields than this is refused (502).
pub const MAX_HEADERS: usize = 100;
/// Reads a response head may take (each one re-parses it): more is refused (502).
const MAX_HEAD_READS: u32 = 64;
/// What one read of a response head asks for.
const READ_SIZE: usize = 16 * 1024;

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

pub struct ResponseHead {
    pub len: usize,
    pub status: u16,
    pub framing: Framing,
    /// The upstream keeps the connection open after this response.
    pub reusable: bool,
    /// Where the reason phrase and each header's name and value are in the buffer parsed, so
    /// the client's head is written without parsing again.
    reason: Range<usize>,
    pub headers: Vec<(Range<usize>, Range<usize>)>,
}

impl ResponseHead {
    /// The upstream's reason phrase, in the buffer the head was parsed from.
    pub fn reason<'b>(&self, buf: &'b [u8]) -> &'b str {
        std::str::from_utf8(&buf[self.reason.clone()]).unwrap_or("")
    }
}

pub enum Parsed {
    Complete(ResponseHead),
    /// An interim (1xx) response of this length, which the client does not get.
    Interim(usize),
    Partial,
    Invalid(&'static str),
}

/// Parses the response head at the start of `buf`, answering a request with method HEAD when
/// `head_request`, and one asking for an upgrade when `upgrade` (its 101 is then the final
/// answer, with no body, and its connection the tunnel's). `spare` is a previous head's header
/// list, reused.
pub fn parse(
    buf: &[u8],
    head_request: bool,
    upgrade: bool,
    mut spare: Vec<(Range<usize>, Range<usize>)>,
) -> Parsed {
    let mut raw = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut raw)
    {
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => {
            return Parsed::Invalid("response head too large");
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Invalid("too many response header fields"),
        Err(_) => return Parsed::Invalid("unparsable response head"),
    };
    let Some(status) = resp.code else { return Parsed::Invalid("no valid status") };
    if let Err(why) = valid_status(status, upgrade) {
        return Parsed::Invalid(why);
    }
    if (100..200).contains(&status) && status != 101 {
        return Parsed::Interim(len);
    }
    let named = |n: &'static str| values(resp.headers, n);
    let framing = match framing(head_request, status, named("content-length"), named("transfer-encoding")) {
        Ok(_) if status == 101 => Framing::Empty,
        Ok(f) => f,
        Err(why) => return Parsed::Invalid(why),
    };
    let close = named_in(named("connection"), b"close");
    let reusable = resp.version == Some(1) && !close && framing != Framing::UntilClose && status != 101;
    let at = |s: &[u8]| {
        // An empty slice may point anywhere (httparse's empty reason is a static).
        if s.is_empty() {
            return 0..0;
        }
        let start = s.as_ptr() as usize - buf.as_ptr() as usize;
        start..start + s.len()
    };
    spare.clear();
    spare.extend(resp.headers.iter().map(|h| (at(h.name.as_bytes()), at(h.value))));
    let reason = resp.reason.map_or(0..0, |r| at(r.as_bytes()));
    Parsed::Complete(ResponseHead { len, status, framing, reusable, reason, headers: spare })
}

/// The values of the header fields named `name`.
fn values<'b>(headers: &'b [httparse::Header<'b>], name: &'static str) -> impl Iterator<Item = &'b [u8]> {
    headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
}

/// Reads a response head into `up` (emptied first) from `stream`, passing over interim (1xx)
/// responses; what follows the head stays in `up`. The one reader of response heads for both
/// transports' byte exchanges.
pub async fn read_head(
    stream: &mut TcpStream,
    up: &mut BytesMut,
    head_request: bool,
    upgrade: bool,
    spare: Vec<(Range<usize>, Range<usize>)>,
) -> Result<ResponseHead, Failure> {
    let mut spare = Some(spare);
    up.clear();
    for _ in 0..MAX_HEAD_READS {
        if up.capacity() - up.len() < 4096 {
            up.reserve(READ_SIZE);
        }
        let n = stream.read_buf(up).await.map_err(Failure::from_io)?;
        if n == 0 {
            // Closed before a whole response head, whether or not part of one came.
            return Err(Failure::Closed("upstream closed before a whole response head".into()));
        }
        while !up.is_empty() {
            match parse(up, head_request, upgrade, spare.take().unwrap_or_default()) {
                Parsed::Complete(resp) => return Ok(resp),
                Parsed::Interim(len) => up.advance(len),
                Parsed::Partial if up.len() > MAX_HEAD => {
                    return Err(Failure::Upstream("response head too large".into()));
                }
                Parsed::Partial => break,
                Parsed::Invalid(why) => return Err(Failure::Upstream(why.into())),
            }
        }
    }
    Err(Failure::Upstream("response head in too many pieces".into()))
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
