//! A request head read as bytes: whether the fast path may serve it, and the head it sends
//! upstream (the header rules of SPEC §2, written straight from the client's bytes).

use std::mem::MaybeUninit;
use std::ops::Range;

use http::Method;

use crate::auth::Authenticated;
pub use crate::auth::tokens::trim_spaces as trim;
use crate::framing::{Unreadable, malformed_why, unreadable_head};
use crate::proxy::response::parse_length;
use crate::proxy::{GatewayLines, RequestFate as Fate, request_fate, request_line, write_gateway_lines};
use crate::routes::Route;

/// Headers parsed per head. A head with more goes to hyper, which applies `max_headers`.
pub use crate::framing::MAX_HEADERS;

pub struct Header {
    pub name: Range<usize>,
    pub value: Range<usize>,
    pub fate: Fate,
}

/// A request head the fast path serves, as positions in the connection's buffer.
pub struct RequestHead {
    /// Its length, up to and including the blank line.
    pub len: usize,
    pub method: Method,
    /// The path, without the query.
    pub path: Range<usize>,
    /// The query, without its `?`.
    pub query: Option<Range<usize>>,
    pub headers: Vec<Header>,
    pub host: Range<usize>,
    pub authorization: Option<Range<usize>>,
    pub authorizations: u32,
    pub request_id: Option<Range<usize>>,
    pub forwarded_for: Option<Range<usize>>,
    pub forwarded_proto: Option<Range<usize>>,
    pub forwarded_host: Option<Range<usize>>,
    /// The first `Origin` (CORS, `crate::gate::cors`).
    pub origin: Option<Range<usize>>,
    /// An `Access-Control-Request-Method` was sent (with `OPTIONS`: a CORS preflight).
    pub preflight: bool,
    pub content_length: u64,
    /// The client asked for the connection to close after this response.
    pub close: bool,
}

impl RequestHead {
    /// How much of the body is already in the buffer (of length `buf_len`) behind the head.
    pub fn body_here(&self, buf_len: usize) -> usize {
        usize::try_from(self.content_length).unwrap_or(usize::MAX).min(buf_len - self.len)
    }

    /// Whether the whole body has been read already.
    pub fn whole_body_here(&self, buf_len: usize) -> bool {
        self.body_here(buf_len) as u64 == self.content_length
    }
}

// Returned by value once per request; boxing the head would allocate for each.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    Complete(RequestHead),
    Partial,
    /// Not for the fast path: hyper serves it (and answers whatever is wrong with it).
    Unfit,
    /// Not a request anyone could read (`crate::framing::unreadable_head`, the rule hyper's
    /// path follows too): refused with 400 or 431 and the connection closed.
    Unreadable(Unreadable),
}

/// Parses the head at the start of `buf`. Only plain HTTP/1.1 requests are fit: origin-form
/// target of unambiguous characters, one Host, at most one valid Content-Length, no
/// Transfer-Encoding, Upgrade or Expect, and a Connection header naming nothing but
/// `keep-alive` / `close`. `spare` is a previous head's header list, reused.
pub fn parse(buf: &[u8], max_head: usize, max_headers: usize, spare: Vec<Header>) -> Parsed {
    let mut raw = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > max_head => {
            return Parsed::Unreadable(Unreadable::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        // Past this parser's own array but within the configured limit: hyper's path reads it.
        Err(httparse::Error::TooManyHeaders) if max_headers > MAX_HEADERS => return Parsed::Unfit,
        // An HTTP/2 preface is hyper's to read (`None`); anything else is a head nobody reads.
        Err(e) => return malformed_why(e, buf).map_or(Parsed::Unfit, Parsed::Unreadable),
    };
    if let Some(why) = unreadable_head(&req, len, max_head, max_headers) {
        return Parsed::Unreadable(why);
    }
    if req.version != Some(1) {
        return Parsed::Unfit;
    }
    let method = match req.method {
        Some("GET") => Method::GET,
        Some("POST") => Method::POST,
        Some("PUT") => Method::PUT,
        Some("DELETE") => Method::DELETE,
        Some("PATCH") => Method::PATCH,
        Some("HEAD") => Method::HEAD,
        Some("OPTIONS") => Method::OPTIONS,
        _ => return Parsed::Unfit,
    };
    let at = |s: &[u8]| {
        let start = s.as_ptr() as usize - buf.as_ptr() as usize;
        start..start + s.len()
    };
    let Some(target) = req.path.map(str::as_bytes) else { return Parsed::Unfit };
    if target.first() != Some(&b'/') || !target.iter().all(|&b| TARGET[usize::from(b)]) {
        return Parsed::Unfit;
    }
    let target_at = at(target);
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(q) => (target_at.start..target_at.start + q, Some(target_at.start + q + 1..target_at.end)),
        None => (target_at, None),
    };
    let mut head = RequestHead {
        len,
        method,
        path,
        query,
        headers: spare,
        host: 0..0,
        authorization: None,
        authorizations: 0,
        request_id: None,
        forwarded_for: None,
        forwarded_proto: None,
        forwarded_host: None,
        origin: None,
        preflight: false,
        content_length: 0,
        close: false,
    };
    head.headers.clear();
    let (mut hosts, mut lengths, mut forwarded_fors) = (0, 0, 0);
    for h in req.headers.iter() {
        let (name, value) = (h.name.as_bytes(), h.value);
        // What is forwarded is the one list's (`proxy::headers`); here only what the fast path
        // reads of the head, and what it leaves to hyper.
        let fate = request_fate(name);
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                // hyper's path refuses a malformed Host with the SPEC's error body.
                if !crate::routes::valid_host(value) {
                    return Parsed::Unfit;
                }
                hosts += 1;
                head.host = at(value);
            }
            6 if name.eq_ignore_ascii_case(b"expect") => return Parsed::Unfit,
            // The first counts, as hyper's path reads it (`HeaderMap::get`).
            6 if name.eq_ignore_ascii_case(b"origin") => {
                head.origin.get_or_insert_with(|| at(value));
            }
            29 if name.eq_ignore_ascii_case(b"access-control-request-method") => head.preflight = true,
            7 if name.eq_ignore_ascii_case(b"upgrade") => return Parsed::Unfit,
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for token in value.split(|&b| b == b',') {
                    match trim(token) {
                        t if t.eq_ignore_ascii_case(b"close") => head.close = true,
                        t if t.eq_ignore_ascii_case(b"keep-alive") || t.is_empty() => {}
                        // A header named hop-by-hop: hyper's path strips it.
                        _ => return Parsed::Unfit,
                    }
                }
            }
            13 if name.eq_ignore_ascii_case(b"authorization") => {
                head.authorizations += 1;
                head.authorization = Some(at(value));
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                lengths += 1;
                // Read by `unreadable_head` already.
                head.content_length = parse_length(value).unwrap_or(0);
            }
            // One `chunked` (the only coding `unreadable_head` lets by) is hyper's to decode.
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => return Parsed::Unfit,
            _ if fate == Fate::Drop => {
                // The first of each counts, as hyper's path reads them (`HeaderMap::get`).
                let first = |slot: &mut Option<Range<usize>>| {
                    slot.get_or_insert_with(|| at(value));
                };
                if name.eq_ignore_ascii_case(b"x-request-id") {
                    first(&mut head.request_id);
                } else if name.eq_ignore_ascii_case(b"x-forwarded-for") {
                    forwarded_fors += 1;
                    first(&mut head.forwarded_for);
                } else if name.eq_ignore_ascii_case(b"x-forwarded-proto") {
                    first(&mut head.forwarded_proto);
                } else if name.eq_ignore_ascii_case(b"x-forwarded-host") {
                    first(&mut head.forwarded_host);
                }
            }
            _ => {}
        }
        head.headers.push(Header { name: at(name), value: at(value), fate });
    }
    // Repeats hyper's path resolves (joins, refuses or takes the last of) go there.
    if hosts != 1 || lengths > 1 || forwarded_fors > 1 {
        return Parsed::Unfit;
    }
    Parsed::Complete(head)
}

/// Request-target bytes the fast path takes as they are: unreserved, sub-delims, `%`, `:`, `@`,
/// `/` and `?`. Anything else (quotes, braces, `#`, a second `?`-like oddity) goes to hyper.
static TARGET: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
                    | b'/'
                    | b'?'
                    | b'%'
            );
        b += 1;
    }
    t
};

/// What the gateway adds to the request it sends upstream.
pub struct Forward<'a> {
    pub route: &'a Route,
    pub auth: &'a Authenticated,
    pub upstream_host: &'a [u8],
    pub base_path: &'a str,
    /// The normalised path, minus the prefix where the route strips it.
    pub target: &'a str,
    pub peer: &'a [u8],
    pub trusted_peer: bool,
    pub proto: &'static [u8],
    pub request_id: &'a [u8],
}

/// Writes the upstream request head for `head` (read from `buf`) into `out`.
pub fn write_upstream_head(out: &mut Vec<u8>, buf: &[u8], head: &RequestHead, f: &Forward<'_>) {
    let b = |r: &Range<usize>| &buf[r.clone()];
    request_line(out, &head.method, f.base_path, f.target, head.query.as_ref().map(b));
    let extra = &f.route.upstream_headers;
    for h in &head.headers {
        let keep = h.fate.forwarded(f.route);
        let name = b(&h.name);
        if keep && !extra.iter().any(|(n, _)| name.eq_ignore_ascii_case(n.as_str().as_bytes())) {
            line(out, name, b(&h.value));
        }
    }
    let trusted = |r: &Option<Range<usize>>| r.as_ref().filter(|_| f.trusted_peer).map(|r| trim(b(r)));
    // A chain that is not text is dropped (hyper's path cannot read it as text either).
    let readable = |p: &&[u8]| !p.is_empty() && p.iter().all(|&c| c == b'\t' || (0x20..0x7f).contains(&c));
    let own = GatewayLines {
        auth: f.auth,
        forwarded_for: trusted(&head.forwarded_for).filter(readable),
        peer: f.peer,
        proto: trusted(&head.forwarded_proto).unwrap_or(f.proto),
        host: Some(trusted(&head.forwarded_host).unwrap_or(b(&head.host))),
        request_id: f.request_id,
        upstream_host: f.upstream_host,
    };
    write_gateway_lines(out, &own, extra);
    out.extend_from_slice(b"\r\n");
}

pub use crate::proxy::line;

#[cfg(test)]
mod tests {
    use super::*;

    fn fit(head: &str) -> bool {
        matches!(parse(head.as_bytes(), 65536, 100, Vec::new()), Parsed::Complete(_))
    }

    #[test]
    fn plain_requests_are_fit() {
        assert!(fit("GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer t\r\n\r\n"));
        assert!(fit("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n"));
        let Parsed::Complete(h) = parse(
            b"GET /p?q HTTP/1.1\r\nhost: h\r\nconnection: close\r\nX_Auth_Login: x\r\n\r\nrest",
            65536,
            100,
            Vec::new(),
        ) else {
            panic!("fit")
        };
        assert!(h.close);
        assert_eq!(
            h.len,
            "GET /p?q HTTP/1.1\r\nhost: h\r\nconnection: close\r\nX_Auth_Login: x\r\n\r\n".len()
        );
        assert!(h.headers.iter().all(|x| x.fate == Fate::Drop), "host, connection and an owned name go");
    }

    #[test]
    fn anything_unusual_goes_to_hyper() {
        for head in [
            "GET /a HTTP/1.0\r\nHost: a\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a{b} HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a HTTP/1.1\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
            "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n",
            "POST /a HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: a\r\nConnection: x-secret\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost : a\r\n\r\n",
        ] {
            assert!(!fit(head), "{head:?}");
        }
        assert!(matches!(parse(b"GET /a HTTP/1.1\r\nHost: a\r\n", 65536, 100, Vec::new()), Parsed::Partial));
        let many: String = (0..20).map(|i| format!("x-{i}: 1\r\n")).collect();
        assert!(!matches!(
            parse(format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes(), 65536, 10, Vec::new()),
            Parsed::Complete(_)
        ));
    }

    #[test]
    fn unreadable_heads_are_refused_here_and_other_versions_go_to_hyper() {
        for head in [
            "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
            "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n",
            "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n",
            "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: a\r\nX Space: a\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n folded\r\n\r\n",
            "GE@T /a HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a HTTP/1.2\r\nHost: a\r\n\r\n",
            "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
            "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost : a\r\n\r\n",
        ] {
            assert!(
                matches!(
                    parse(head.as_bytes(), 65536, 100, Vec::new()),
                    Parsed::Unreadable(Unreadable::Malformed(_))
                ),
                "{head:?}"
            );
        }
        let preface = parse(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 65536, 100, Vec::new());
        assert!(matches!(preface, Parsed::Unfit), "an HTTP/2 preface is hyper's");
        let many = |n: usize| {
            let lines: String = (0..n).map(|i| format!("x-{i}: 1\r\n")).collect();
            format!("GET / HTTP/1.1\r\nHost: a\r\n{lines}\r\n")
        };
        let too_large = |p| matches!(p, Parsed::Unreadable(Unreadable::TooLarge));
        assert!(too_large(parse(many(20).as_bytes(), 65536, 10, Vec::new())));
        assert!(too_large(parse(many(MAX_HEADERS + 5).as_bytes(), 65536, 100, Vec::new())));
        assert!(too_large(parse(many(20).as_bytes(), 100, 100, Vec::new())), "over max_header_bytes");
        // Configured above this parser's array: hyper's path applies the configured limit.
        assert!(matches!(parse(many(MAX_HEADERS + 5).as_bytes(), 65536, 500, Vec::new()), Parsed::Unfit));
    }

    #[test]
    fn the_fast_path_and_the_watch_refuse_a_head_for_the_same_reason() {
        // Found by the `request_head` fuzz target: more fields than `max_headers`, then a bad
        // name past the fast path's old, smaller array.
        let lines: String = (0..200).map(|i| format!("x-{i}: 1\r\n")).collect();
        for tail in ["bad name: 1\r\n", "ok: 1\r\n"] {
            let head = format!("GET / HTTP/1.1\r\n{lines}{tail}\r\n");
            let Parsed::Unreadable(why) = parse(head.as_bytes(), 65536, 24, Vec::new()) else {
                panic!("refused")
            };
            let mut w = crate::framing::FramingWatch::new(65536, 24);
            assert_eq!(w.feed(head.as_bytes()), crate::framing::Finding::Unreadable { at: 0, why }, "{tail}");
        }
    }
}
