//! An upstream response head read as bytes, judged by the one rule of `crate::proxy::response`
//! (framing, limits, status line), and the head the client gets, written by the response
//! header fates of `crate::proxy::headers`.

use super::request::line;
use crate::gate::cors::Cors;
use crate::proxy::response as rule;
pub use crate::proxy::response::{Framing, Parsed, ResponseHead, parse, read_head};
use crate::proxy::{ResponseFate, named_in, response_fate};

/// Writes the client's response head for the upstream head at the start of `buf`: the
/// response fates decide each header; the framing headers are written from `head.framing`.
pub fn write_client_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &ResponseHead,
    cors: Cors<'_>,
    request_id: &[u8],
    close: bool,
) {
    let headers = || head.headers.iter().map(|(n, v)| (&buf[n.clone()], &buf[v.clone()]));
    status_line(out, head.status, rule::reason(head.status, head.reason(buf)));
    let connection = || headers().filter(|(n, _)| n.eq_ignore_ascii_case(b"connection")).map(|(_, v)| v);
    // The `Connection` fields, found once rather than once per header (rarely more than one;
    // past four, each header looks again).
    let mut listed: [&[u8]; 4] = [b""; 4];
    let mut lists = 0;
    for value in connection() {
        if let Some(slot) = listed.get_mut(lists) {
            *slot = value;
        }
        lists += 1;
    }
    let named = |name: &[u8]| match listed.get(..lists) {
        Some(values) => named_in(values.iter().copied(), name),
        None => named_in(connection(), name),
    };
    let mut dated = false;
    for (name, value) in headers() {
        if cors.drops(name) {
            continue;
        }
        match response_fate(name, named(name)) {
            ResponseFate::Keep => {
                dated |= name.eq_ignore_ascii_case(b"date");
                line(out, name, value);
            }
            // Its value as the framing rule read it: one, valid. A HEAD answer keeps the length
            // it states; a 204 or 304 has none (`proxy::headers::prepare_response`).
            ResponseFate::Length if head.status != 204 && head.status != 304 => line(out, name, value),
            ResponseFate::Length | ResponseFate::Drop => {}
        }
    }
    if matches!(head.framing, Framing::Chunked | Framing::UntilClose) {
        line(out, b"transfer-encoding", b"chunked");
    }
    if !dated {
        line(out, b"date", &super::date::now());
    }
    let vary = headers().filter(|(n, _)| n.eq_ignore_ascii_case(b"vary")).map(|(_, v)| v);
    for (name, value) in cors.lines(vary).into_iter().flatten() {
        line(out, name.as_bytes(), cors.bytes(value));
    }
    line(out, b"x-request-id", request_id);
    if close {
        line(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes a response the gateway made itself (its own endpoints' answers and its errors, whose
/// bodies are whole in memory) as HTTP/1.1 bytes; the body's length, or `None` for a body that
/// is not whole. Both transports write these: the fast path, and the connection's refusal of a
/// head hyper's path cannot read (`crate::listener`).
pub fn write_own(
    out: &mut Vec<u8>,
    resp: http::Response<crate::body::GatewayBody>,
    request_id: &[u8],
    close: bool,
    head_request: bool,
) -> Option<u64> {
    let (parts, body) = resp.into_parts();
    let http_body_util::Either::Left(full) = body else { return None };
    let mut body = std::pin::pin!(full);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut bytes = Vec::new();
    loop {
        match http_body::Body::poll_frame(body.as_mut(), &mut cx) {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    bytes.extend_from_slice(data);
                }
            }
            std::task::Poll::Ready(None) => break,
            _ => return None,
        }
    }
    let status = parts.status.as_u16();
    status_line(out, status, rule::reason(status, ""));
    for (name, value) in &parts.headers {
        if name != http::header::CONTENT_LENGTH && name != http::header::CONNECTION && name != "x-request-id"
        {
            line(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    // RFC 9110 §8.6: never on a 1xx or 204.
    if status >= 200 && status != 204 {
        let mut len = itoa::Buffer::new();
        line(out, b"content-length", len.format(bytes.len()).as_bytes());
    }
    line(out, b"date", &super::date::now());
    line(out, b"x-request-id", request_id);
    if close {
        line(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    if !head_request {
        out.extend_from_slice(&bytes);
    }
    Some(bytes.len() as u64)
}

pub fn status_line(out: &mut Vec<u8>, status: u16, reason: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    let mut code = itoa::Buffer::new();
    out.extend_from_slice(code.format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing(head: &str, head_request: bool) -> Result<(Framing, bool), &'static str> {
        match parse(head.as_bytes(), head_request, false, Vec::new()) {
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
            parse(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1", false, false, Vec::new()),
            Parsed::Interim(40)
        ));
    }

    #[test]
    fn the_client_head_loses_hop_by_hop_and_named_headers() {
        let up = "HTTP/1.1 200 OK\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\
                  X-Request-Id: theirs\r\nDate: d\r\nTransfer-Encoding: chunked\r\nX-Kept: 2\r\n\r\n";
        let Parsed::Complete(head) = parse(up.as_bytes(), false, false, Vec::new()) else {
            panic!("complete")
        };
        let mut out = Vec::new();
        write_client_head(&mut out, up.as_bytes(), &head, Cors::Off, b"ours", false);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\ndate: d\r\nX-Kept: 2\r\ntransfer-encoding: chunked\r\nx-request-id: ours\r\n\r\n"
                .replace("date: d", "Date: d")
        );
    }
}
