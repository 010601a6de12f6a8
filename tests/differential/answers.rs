//! What the scripted upstream answers: raw bytes chosen by the request path (`/case/<name>`;
//! any other path gets `ok`). The `*-if-reused` answers depend on the connection, and
//! `keep-alive-10` changes it (hyper's client speaks HTTP/1.0 on a connection once answered
//! so); the generator uses only the answers that depend on the request alone.

use crate::support::scripted::{Received, Reply};

/// Answers the generator picks from (all but the stateful and the slow ones).
pub const STATELESS: &[&str] = &[
    "ok",
    "no-reason",
    "no-reason-space",
    "odd-reason",
    "conn-cl",
    "big-head",
    "te-gzip-chunked",
    "chunked",
    "chunked-trailers",
    "chunked-ext",
    "cl-dup-same",
    "cl-dup-diff",
    "cl-list",
    "headers-110",
    "cl-te",
    "cl-25-digits",
    "cl-leading-zeros",
    "cl-huge",
    "http10-len",
    "http10-nolen",
    "close-delimited",
    "close-announced",
    "interim-100",
    "interim-103",
    "status-204-cl",
    "status-304-cl",
    "garbage",
    "empty-reply",
    "cl-short",
    "hop-headers",
    "cors-headers",
    "conn-named",
    "status-999",
    "bare-lf",
    "obs-fold",
    "space-colon",
    "request-id",
    "early-413",
];

pub fn reply(req: &Received) -> Reply {
    let target = req.target();
    let name = target
        .split_once("/case/")
        .map_or("ok", |(_, rest)| rest.split(['/', '?', ';']).next().unwrap_or("ok"));
    let (bytes, close) = match name {
        "garbage-if-reused" if req.nth > 0 => (b"HTZP/9 what\r\n\r\n".to_vec(), true),
        "empty-if-reused" if req.nth > 0 => (Vec::new(), true),
        "silent" => (Vec::new(), false),
        _ => canned(name),
    };
    let bytes = if req.head.starts_with(b"HEAD ") { head_only(bytes) } else { bytes };
    Reply { bytes, close, early: name == "early-413" }
}

/// An answer cut after its final head: what a server sends to HEAD.
fn head_only(mut bytes: Vec<u8>) -> Vec<u8> {
    let mut at = 0;
    while let Some(end) = bytes[at..].windows(4).position(|w| w == b"\r\n\r\n").map(|e| at + e + 4) {
        let interim = bytes.get(at + 9) == Some(&b'1');
        at = end;
        if !interim {
            bytes.truncate(end);
            break;
        }
    }
    bytes
}

fn ok_with(head: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\n{head}Content-Length: 2\r\n\r\nok").into_bytes()
}

/// The bytes of answer `name`, and whether the upstream closes after them.
fn canned(name: &str) -> (Vec<u8>, bool) {
    let keep = |s: &str| (s.as_bytes().to_vec(), false);
    let close = |s: &str| (s.as_bytes().to_vec(), true);
    match name {
        "no-reason" => keep("HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok"),
        "no-reason-space" => keep("HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok"),
        "odd-reason" => keep("HTTP/1.1 200 Fine Thanks\r\nContent-Length: 2\r\n\r\nok"),
        "conn-cl" => keep("HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello"),
        "big-head" => {
            let pad: String = (0..1000).map(|i| format!("X-Pad-{i:04}: {}\r\n", "p".repeat(88))).collect();
            (ok_with(&pad), false)
        }
        "te-gzip-chunked" => keep(
            "HTTP/1.1 200 OK\r\nContent-Encoding: identity\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        "chunked" => keep(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        ),
        "chunked-trailers" => keep(
            "HTTP/1.1 200 OK\r\nTrailer: X-Checksum\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n",
        ),
        "chunked-ext" => {
            keep("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=v\r\nhello\r\n0\r\n\r\n")
        }
        "cl-dup-same" => keep("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"),
        "cl-dup-diff" => close("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!"),
        "cl-list" => keep("HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok"),
        "headers-110" => {
            let many: String = (0..110).map(|i| format!("X-Many-{i}: {i}\r\n")).collect();
            (ok_with(&many), false)
        }
        "cl-te" => close(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        "cl-25-digits" => keep("HTTP/1.1 200 OK\r\nContent-Length: 0000000000000000000000002\r\n\r\nok"),
        "cl-leading-zeros" => keep("HTTP/1.1 200 OK\r\nContent-Length: 002\r\n\r\nok"),
        "cl-huge" => close("HTTP/1.1 200 OK\r\nContent-Length: 1000000000000000000000000\r\n\r\nok"),
        "http10-len" => close("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        "http10-nolen" => close("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close"),
        "close-delimited" => close("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close"),
        "close-announced" => close("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close"),
        "interim-100" => keep("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        "interim-103" => keep(
            "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ),
        "head-cl-te" => keep("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
        "status-204-cl" => keep("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"),
        "status-304-cl" => keep("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: \"e\"\r\n\r\n"),
        "garbage" => close("HTZP/9 what\r\n\r\n"),
        "empty-reply" => close(""),
        "cl-short" => close("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"),
        // Replaced by the gateway's CORS policy (`[cors]` is on in this test).
        "cors-headers" => keep(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nAccess-Control-Allow-Origin: *\r\n\
             ACCESS-CONTROL-MAX-AGE: 9\r\nVary: Accept-Encoding\r\n\r\nok",
        ),
        "hop-headers" => keep(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\n\
             Proxy-Connection: keep-alive\r\nUpgrade: h2c\r\nTE: trailers\r\nContent-Length: 2\r\n\r\nok",
        ),
        "conn-named" => {
            keep("HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: 1\r\nContent-Length: 2\r\n\r\nok")
        }
        "status-999" => keep("HTTP/1.1 999 Weird\r\nContent-Length: 2\r\n\r\nok"),
        "bare-lf" => keep("HTTP/1.1 200 OK\nContent-Length: 2\n\nok"),
        "obs-fold" => keep("HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\nok"),
        "space-colon" => close("HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok"),
        "request-id" => {
            keep("HTTP/1.1 200 OK\r\nX-Request-Id: up-123\r\nServer: upstream\r\nContent-Length: 2\r\n\r\nok")
        }
        "early-413" => {
            close("HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbig!")
        }
        "keep-alive-10" => keep("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"),
        _ => (ok_with("Content-Type: text/plain\r\n"), false),
    }
}
