//! The fast path's response-head parser and client-head writer: never a panic (an upstream
//! status line without a reason phrase once made one), and the head the client gets is one
//! HTTP/1.1 response with the same status, framed as the rule decided.
#![no_main]

use bo_gateway::fastpath_fuzzing::response_head;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, buf)) = data.split_first() else { return };
    let Some((status, framing, out)) = response_head(buf, flags & 1 == 1) else { return };
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut resp = httparse::Response::new(&mut headers);
    let parsed = resp.parse(&out).expect("the client head parses");
    assert!(parsed.is_complete(), "the client head is complete");
    assert_eq!(resp.version, Some(1));
    assert_eq!(resp.code, Some(status));
    let count = |name: &str| resp.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).count();
    assert!(count("content-length") <= 1 && count("transfer-encoding") <= 1, "{framing:?}");
    assert!(count("content-length") + count("transfer-encoding") <= 1, "framed twice: {framing:?}");
    assert_eq!(count("x-request-id"), 1);
});
