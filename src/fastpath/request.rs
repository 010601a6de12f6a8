//! A request head read as bytes: whether the fast path may serve it, and the head it sends
//! upstream (the header rules of SPEC §2, written straight from the client's bytes).

use std::mem::MaybeUninit;
use std::ops::Range;

use http::Method;

use crate::auth::Authenticated;
pub use crate::auth::tokens::trim_spaces as trim;
use crate::proxy::is_gateway_owned;
use crate::routes::Route;

/// Headers parsed per head. A head with more goes to hyper, which applies `max_headers`.
pub const MAX_HEADERS: usize = 128;

/// What becomes of a client header on its way upstream.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Keep,
    /// Kept only where the route forwards it.
    Authorization,
    /// Hop-by-hop, gateway-owned, or rewritten by the gateway.
    Drop,
}

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
    /// A `token` header (a token in two places on a Bearer route is refused).
    pub token_header: bool,
    pub request_id: Option<Range<usize>>,
    pub forwarded_for: Option<Range<usize>>,
    pub forwarded_proto: Option<Range<usize>>,
    pub forwarded_host: Option<Range<usize>>,
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
    /// Not an HTTP/1.1 request anyone could read: refused with 400 and the connection closed.
    Malformed(&'static str),
    /// More header fields than `max_headers`: refused with 431 and the connection closed.
    TooManyHeaders,
}

/// Parses the head at the start of `buf`. Only plain HTTP/1.1 requests are fit: origin-form
/// target of unambiguous characters, one Host, at most one valid Content-Length, no
/// Transfer-Encoding, Upgrade or Expect, and a Connection header naming nothing but
/// `keep-alive` / `close`. `spare` is a previous head's header list, reused.
pub fn parse(buf: &[u8], max_headers: usize, spare: Vec<Header>) -> Parsed {
    let mut raw = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        // An HTTP/2 preface is hyper's to read; another version, or a space in the target,
        // is a request line nobody reads.
        Err(httparse::Error::Version) if buf.starts_with(b"PRI * HTTP/2.0") => return Parsed::Unfit,
        // Past this parser's own array but within the configured limit: hyper's path reads it.
        Err(httparse::Error::TooManyHeaders) if max_headers > MAX_HEADERS => return Parsed::Unfit,
        Err(httparse::Error::TooManyHeaders) => return Parsed::TooManyHeaders,
        Err(e) => return Parsed::Malformed(malformed_why(e)),
    };
    if req.version != Some(1) {
        return Parsed::Unfit;
    }
    if req.headers.len() > max_headers {
        return Parsed::TooManyHeaders;
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
        token_header: false,
        request_id: None,
        forwarded_for: None,
        forwarded_proto: None,
        forwarded_host: None,
        content_length: 0,
        close: false,
    };
    head.headers.clear();
    let (mut hosts, mut lengths, mut forwarded_fors) = (0, 0, 0);
    for h in req.headers.iter() {
        let (name, value) = (h.name.as_bytes(), h.value);
        let mut fate = Fate::Keep;
        match name.len() {
            2 if name.eq_ignore_ascii_case(b"te") => fate = Fate::Drop,
            4 if name.eq_ignore_ascii_case(b"host") => {
                // hyper's path refuses a malformed Host with the SPEC's error body.
                if !crate::routes::valid_host(value) {
                    return Parsed::Unfit;
                }
                hosts += 1;
                head.host = at(value);
                fate = Fate::Drop;
            }
            5 if name.eq_ignore_ascii_case(b"token") => head.token_header = true,
            6 if name.eq_ignore_ascii_case(b"expect") => return Parsed::Unfit,
            7 if name.eq_ignore_ascii_case(b"upgrade") => return Parsed::Unfit,
            7 if name.eq_ignore_ascii_case(b"trailer") => fate = Fate::Drop,
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for token in value.split(|&b| b == b',') {
                    match trim(token) {
                        t if t.eq_ignore_ascii_case(b"close") => head.close = true,
                        t if t.eq_ignore_ascii_case(b"keep-alive") || t.is_empty() => {}
                        // A header named hop-by-hop: hyper's path strips it.
                        _ => return Parsed::Unfit,
                    }
                }
                fate = Fate::Drop;
            }
            10 if name.eq_ignore_ascii_case(b"keep-alive") => fate = Fate::Drop,
            13 if name.eq_ignore_ascii_case(b"authorization") => {
                head.authorizations += 1;
                head.authorization = Some(at(value));
                fate = Fate::Authorization;
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                lengths += 1;
                match parse_length(value) {
                    Some(n) => head.content_length = n,
                    None => return Parsed::Malformed("Content-Length is not one number"),
                }
            }
            16 if name.eq_ignore_ascii_case(b"proxy-connection") => fate = Fate::Drop,
            // One `chunked` is hyper's to decode; any other coding is refused here, with the
            // SPEC's body (hyper's own refusal has none).
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                if !trim(value).eq_ignore_ascii_case(b"chunked") {
                    return Parsed::Malformed("transfer codings other than one chunked");
                }
                return Parsed::Unfit;
            }
            18 if name.eq_ignore_ascii_case(b"proxy-authenticate") => fate = Fate::Drop,
            19 if name.eq_ignore_ascii_case(b"proxy-authorization") => fate = Fate::Drop,
            _ => {}
        }
        if fate == Fate::Keep && is_gateway_owned(h.name) {
            fate = Fate::Drop;
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
        head.headers.push(Header { name: at(name), value: at(value), fate });
    }
    // Repeats hyper's path resolves (joins, refuses or takes the last of) go there.
    if hosts != 1 || lengths > 1 || forwarded_fors > 1 {
        return Parsed::Unfit;
    }
    Parsed::Complete(head)
}

fn malformed_why(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Token => "invalid request line",
        _ => "unparseable request head",
    }
}

/// A Content-Length value: digits only, at most 18 of them (no sign, space or list).
pub fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
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
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(f.base_path.as_bytes());
    out.extend_from_slice(f.target.as_bytes());
    if let Some(q) = &head.query {
        out.push(b'?');
        out.extend_from_slice(b(q));
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let extra = &f.route.upstream_headers;
    for h in &head.headers {
        let keep = match h.fate {
            Fate::Keep => true,
            Fate::Authorization => f.route.forward_authorization,
            Fate::Drop => false,
        };
        let name = b(&h.name);
        if keep && !extra.iter().any(|(n, _)| name.eq_ignore_ascii_case(n.as_str().as_bytes())) {
            line(out, name, b(&h.value));
        }
    }
    // A configured header replaces the gateway's own of that name, as on hyper's path.
    let configured = |name: &[u8]| extra.iter().any(|(n, _)| n.as_str().as_bytes() == name);
    let set = |out: &mut Vec<u8>, name: &[u8], value: &[u8]| {
        if !configured(name) {
            line(out, name, value);
        }
    };
    if let Some(id) = f.auth.identity() {
        set(out, b"x-auth-login", id.login_header.as_bytes());
        set(out, b"x-auth-roles", id.roles_header.as_bytes());
        set(out, b"x-auth-session", id.session_header.as_bytes());
    }
    let trusted = |r: &Option<Range<usize>>| r.as_ref().filter(|_| f.trusted_peer).map(|r| trim(b(r)));
    if !configured(b"x-forwarded-for") {
        out.extend_from_slice(b"x-forwarded-for: ");
        // A chain that is not text is dropped (hyper's path cannot read it as text either).
        let readable =
            |p: &&[u8]| !p.is_empty() && p.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
        if let Some(prev) = trusted(&head.forwarded_for).filter(readable) {
            out.extend_from_slice(prev);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(f.peer);
        out.extend_from_slice(b"\r\n");
    }
    set(out, b"x-forwarded-proto", trusted(&head.forwarded_proto).unwrap_or(f.proto));
    set(out, b"x-forwarded-host", trusted(&head.forwarded_host).unwrap_or(b(&head.host)));
    set(out, b"x-request-id", f.request_id);
    set(out, b"host", f.upstream_host);
    for (name, value) in extra {
        line(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

pub fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fit(head: &str) -> bool {
        matches!(parse(head.as_bytes(), 100, Vec::new()), Parsed::Complete(_))
    }

    #[test]
    fn plain_requests_are_fit() {
        assert!(fit("GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer t\r\n\r\n"));
        assert!(fit("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n"));
        let Parsed::Complete(h) = parse(
            b"GET /p?q HTTP/1.1\r\nhost: h\r\nconnection: close\r\nX_Auth_Login: x\r\n\r\nrest",
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
        assert!(matches!(parse(b"GET /a HTTP/1.1\r\nHost: a\r\n", 100, Vec::new()), Parsed::Partial));
        let many: String = (0..20).map(|i| format!("x-{i}: 1\r\n")).collect();
        assert!(!matches!(
            parse(format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes(), 10, Vec::new()),
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
            assert!(matches!(parse(head.as_bytes(), 100, Vec::new()), Parsed::Malformed(_)), "{head:?}");
        }
        let preface = parse(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 100, Vec::new());
        assert!(matches!(preface, Parsed::Unfit), "an HTTP/2 preface is hyper's");
        let many = |n: usize| {
            let lines: String = (0..n).map(|i| format!("x-{i}: 1\r\n")).collect();
            format!("GET / HTTP/1.1\r\nHost: a\r\n{lines}\r\n")
        };
        assert!(matches!(parse(many(20).as_bytes(), 10, Vec::new()), Parsed::TooManyHeaders));
        assert!(matches!(parse(many(MAX_HEADERS + 5).as_bytes(), 100, Vec::new()), Parsed::TooManyHeaders));
        // Configured above this parser's array: hyper's path applies the configured limit.
        assert!(matches!(parse(many(MAX_HEADERS + 5).as_bytes(), 500, Vec::new()), Parsed::Unfit));
    }
}
