//! An upstream response head read as bytes: how its body is framed, whether its connection can
//! be reused, and the head the client gets (hop-by-hop headers out, the request id in).

use std::mem::MaybeUninit;

use http::StatusCode;

use std::ops::Range;

use super::request::{MAX_HEADERS, line, parse_length, trim};

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304, or `Content-Length: 0`).
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes; the client connection closes after it too.
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

pub enum Parsed {
    Complete(ResponseHead),
    /// An interim (1xx) response of this length, which the client does not get.
    Interim(usize),
    Partial,
    Invalid(&'static str),
}

/// Parses the response head at the start of `buf`, answering a request with method HEAD when
/// `head_request`. `spare` is a previous head's header list, reused.
pub fn parse(buf: &[u8], head_request: bool, mut spare: Vec<(Range<usize>, Range<usize>)>) -> Parsed {
    let mut raw = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut raw)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Invalid("unparsable response head"),
    };
    let Some(status) = resp.code.filter(|&c| c >= 100) else { return Parsed::Invalid("no valid status") };
    if status == 101 {
        return Parsed::Invalid("101 without an upgrade request");
    }
    if (100..200).contains(&status) {
        return Parsed::Interim(len);
    }
    let (mut length, mut lengths, mut chunked, mut encodings, mut close) = (0u64, 0, false, 0, false);
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            let Some(n) = parse_length(trim(h.value)) else { return Parsed::Invalid("bad Content-Length") };
            length = n;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            encodings += 1;
            chunked = trim(h.value).eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= h.value.split(|&b| b == b',').any(|t| trim(t).eq_ignore_ascii_case(b"close"));
        }
    }
    let no_body = head_request || status == 204 || status == 304;
    let framing = match (no_body, encodings, lengths) {
        (true, ..) => Framing::Empty,
        (_, 0, 0) => Framing::UntilClose,
        (_, 0, 1) if length == 0 => Framing::Empty,
        (_, 0, 1) => Framing::Length(length),
        (_, 1, 0) if chunked => Framing::Chunked,
        _ => return Parsed::Invalid("ambiguous or unsupported body framing"),
    };
    let reusable = resp.version == Some(1) && !close && framing != Framing::UntilClose;
    let at = |s: &[u8]| {
        let start = s.as_ptr() as usize - buf.as_ptr() as usize;
        start..start + s.len()
    };
    spare.clear();
    spare.extend(resp.headers.iter().map(|h| (at(h.name.as_bytes()), at(h.value))));
    let reason = resp.reason.map_or(0..0, |r| at(r.as_bytes()));
    Parsed::Complete(ResponseHead { len, status, framing, reusable, reason, headers: spare })
}

/// Writes the client's response head for the upstream head at the start of `buf`.
pub fn write_client_head(out: &mut Vec<u8>, buf: &[u8], head: &ResponseHead, request_id: &[u8], close: bool) {
    let headers = || head.headers.iter().map(|(n, v)| (&buf[n.clone()], &buf[v.clone()]));
    status_line(out, head.status, std::str::from_utf8(&buf[head.reason.clone()]).unwrap_or(""));
    // Headers the Connection header names go too (as hyper's path strips them).
    let named = |name: &[u8]| {
        headers()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
            .any(|(_, v)| v.split(|&b| b == b',').any(|t| trim(t).eq_ignore_ascii_case(name)))
    };
    let mut dated = false;
    for (name, value) in headers() {
        if is_hop_by_hop(name) || name.eq_ignore_ascii_case(b"x-request-id") || named(name) {
            continue;
        }
        dated |= name.eq_ignore_ascii_case(b"date");
        line(out, name, value);
    }
    if head.framing == Framing::Chunked {
        line(out, b"transfer-encoding", b"chunked");
    }
    if !dated {
        line(out, b"date", &super::date::now());
    }
    line(out, b"x-request-id", request_id);
    if close {
        line(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
}

pub fn status_line(out: &mut Vec<u8>, status: u16, upstream_reason: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    let mut code = itoa::Buffer::new();
    out.extend_from_slice(code.format(status).as_bytes());
    out.push(b' ');
    let reason = StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason());
    out.extend_from_slice(reason.unwrap_or(upstream_reason).as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn is_hop_by_hop(name: &[u8]) -> bool {
    crate::proxy::HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing(head: &str, head_request: bool) -> Result<(Framing, bool), &'static str> {
        match parse(head.as_bytes(), head_request, Vec::new()) {
            Parsed::Complete(h) => Ok((h.framing, h.reusable)),
            Parsed::Invalid(why) => Err(why),
            _ => Err("not complete"),
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
            Ok((Framing::Length(5), true))
        );
        assert_eq!(framing("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true), Ok((Framing::Empty, true)));
        assert_eq!(framing("HTTP/1.1 204 No Content\r\n\r\n", false), Ok((Framing::Empty, true)));
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false),
            Ok((Framing::Chunked, true))
        );
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n", false), Ok((Framing::UntilClose, false)));
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n", false),
            Ok((Framing::Length(1), false))
        );
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false),
            Ok((Framing::Length(1), false))
        );
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ] {
            assert!(framing(bad, false).is_err(), "{bad:?}");
        }
        assert!(matches!(
            parse(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1", false, Vec::new()),
            Parsed::Interim(40)
        ));
    }

    #[test]
    fn the_client_head_loses_hop_by_hop_and_named_headers() {
        let up = "HTTP/1.1 200 OK\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\
                  X-Request-Id: theirs\r\nDate: d\r\nTransfer-Encoding: chunked\r\nX-Kept: 2\r\n\r\n";
        let Parsed::Complete(head) = parse(up.as_bytes(), false, Vec::new()) else { panic!("complete") };
        let mut out = Vec::new();
        write_client_head(&mut out, up.as_bytes(), &head, b"ours", false);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\ndate: d\r\nX-Kept: 2\r\ntransfer-encoding: chunked\r\nx-request-id: ours\r\n\r\n"
                .replace("date: d", "Date: d")
        );
    }
}
