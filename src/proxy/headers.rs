//! The header rules of SPEC §2 for the request sent upstream and the response sent back.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::auth::Authenticated;

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Hop-by-hop headers (RFC 9110 §7.6.1), plus the legacy ones proxies still see.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

fn is_hop_by_hop_bytes(name: &[u8]) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
}

/// What becomes of a client's request header on its way upstream. The one list both writers
/// (hyper's `HeaderMap` and the fast path's bytes) follow; headers the client's `Connection`
/// names are dropped too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFate {
    Keep,
    /// Kept only where the route says `forward_authorization`.
    Authorization,
    /// The refresh token's header: kept only where the route says `forward_token_header`.
    Token,
    /// Hop-by-hop, gateway-owned (set by the gateway itself), or `Host` (the upstream's).
    Drop,
}

pub fn request_fate(name: &[u8]) -> RequestFate {
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    match name.len() {
        4 if is("host") => RequestFate::Drop,
        5 if is("token") => RequestFate::Token,
        13 if is("authorization") => RequestFate::Authorization,
        _ if is_hop_by_hop_bytes(name) => RequestFate::Drop,
        _ if is_gateway_owned(name) => RequestFate::Drop,
        _ => RequestFate::Keep,
    }
}

impl RequestFate {
    /// Whether a header of this fate reaches the route's upstream.
    pub fn forwarded(self, route: &crate::routes::Route) -> bool {
        match self {
            RequestFate::Keep => true,
            RequestFate::Authorization => route.forward_authorization,
            RequestFate::Token => route.forward_token_header,
            RequestFate::Drop => false,
        }
    }
}

/// What becomes of an upstream response header on its way to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFate {
    Keep,
    /// Hop-by-hop (its framing is the gateway's to write), named by `Connection`, or
    /// `X-Request-Id` (the gateway sets its own).
    Drop,
    /// `Content-Length`: kept as the framing rule read it, even when `Connection` names it
    /// (dropping it would leave a kept-alive client without the response's end); never on a
    /// 204 or 304 (hyper's server drops it there, and so does the fast path).
    Length,
}

pub fn response_fate(name: &[u8], named_by_connection: bool) -> ResponseFate {
    if name.eq_ignore_ascii_case(b"content-length") {
        ResponseFate::Length
    } else if named_by_connection || is_hop_by_hop_bytes(name) || name.eq_ignore_ascii_case(b"x-request-id") {
        ResponseFate::Drop
    } else {
        ResponseFate::Keep
    }
}

/// Whether one of the `Connection` header values names `name`.
pub fn named_in<'a>(connection: impl IntoIterator<Item = &'a [u8]>, name: &[u8]) -> bool {
    connection.into_iter().any(|v| {
        v.split(|&b| b == b',').any(|t| crate::auth::tokens::trim_spaces(t).eq_ignore_ascii_case(name))
    })
}

/// Applies the response fates to an upstream response's headers (hyper's writer).
pub fn prepare_response(headers: &mut HeaderMap, status: u16) {
    let mut doomed: Vec<HeaderName> = Vec::new();
    for n in headers.keys() {
        let named =
            named_in(headers.get_all(header::CONNECTION).iter().map(|v| v.as_bytes()), n.as_str().as_bytes());
        match response_fate(n.as_str().as_bytes(), named) {
            ResponseFate::Drop => doomed.push(n.clone()),
            ResponseFate::Length if status == 204 || status == 304 => doomed.push(n.clone()),
            _ => {}
        }
    }
    for n in doomed {
        headers.remove(n);
    }
}

/// Header names compared as an upstream framework might see them: case-insensitive, with `_`
/// the same as `-` (CGI-style servers map both to the same variable).
fn starts_like(name: &[u8], prefix: &[u8]) -> bool {
    name.len() >= prefix.len()
        && name.iter().zip(prefix).all(|(&a, &b)| {
            let a = if a == b'_' { b'-' } else { a.to_ascii_lowercase() };
            a == b
        })
}

fn same_like(name: &[u8], other: &[u8]) -> bool {
    name.len() == other.len() && starts_like(name, other)
}

/// Identity and forwarding headers the gateway owns: whatever the client sent under these
/// names (in any spelling) is dropped before the gateway sets its own.
pub fn is_gateway_owned(name: &[u8]) -> bool {
    let owned = match name.first().map(u8::to_ascii_lowercase) {
        Some(b'x') => {
            starts_like(name, b"x-auth-")
                || starts_like(name, b"x-forwarded-")
                || same_like(name, b"x-request-id")
                || same_like(name, b"x-real-ip")
        }
        Some(b'f') => same_like(name, b"forwarded"),
        _ => false,
    };
    owned || is_framing_lookalike(name)
}

/// `Content_Length`, `Transfer_Encoding` and the like: harmless to the gateway, but an upstream
/// that maps `_` to `-` would see a second framing header (nginx drops such names too).
fn is_framing_lookalike(name: &[u8]) -> bool {
    const NAMES: [&[u8]; 9] = [
        b"content-length",
        b"transfer-encoding",
        b"host",
        b"connection",
        b"keep-alive",
        b"upgrade",
        b"te",
        b"trailer",
        b"proxy-connection",
    ];
    name.contains(&b'_') && NAMES.iter().any(|n| same_like(name, n))
}

/// What the request carried that the gateway keeps, read before anything is stripped.
pub struct Forwarding {
    /// The peer's address as a header value, made once per connection.
    pub peer_header: HeaderValue,
    pub trusted_peer: bool,
    pub proto: &'static str,
    pub host: Option<HeaderValue>,
    pub request_id: HeaderValue,
}

/// The request line and what the gateway adds to the upstream request of one attempt.
pub struct UpstreamHead<'a> {
    pub method: &'a http::Method,
    /// The origin-form target: the upstream's base path, the normalised path, the query.
    pub base_path: &'a str,
    pub target: &'a str,
    pub query: Option<&'a str>,
    /// The upstream's `Host`.
    pub host: &'a HeaderValue,
    /// The WebSocket upgrade asked for (`Connection: upgrade` and this `Upgrade`).
    pub upgrade: Option<&'a HeaderValue>,
    /// The body goes chunked (its length unknown).
    pub chunked: bool,
    /// The client spoke HTTP/2, which sends each cookie as a field of its own: they go as one
    /// line (RFC 9113 §8.2.3).
    pub join_cookies: bool,
}

/// Writes the upstream request head for a request hyper read, as HTTP/1.1 bytes (SPEC §2): the
/// client's headers the request fates keep for `route`, minus those its `Connection` names and
/// those a configured `upstream_headers` entry replaces, then the gateway's own. hyper's
/// writer of the one policy; the fast path's writes from the client's bytes
/// (`fastpath::request::write_upstream_head`), in the same order.
pub fn write_upstream_request(
    out: &mut Vec<u8>,
    head: &UpstreamHead<'_>,
    headers: &HeaderMap,
    fwd: &Forwarding,
    auth: &Authenticated,
    route: &crate::routes::Route,
) {
    request_line(out, head.method, head.base_path, head.target, head.query.map(str::as_bytes));
    let extra = &route.upstream_headers;
    let connection = headers.get_all(header::CONNECTION);
    let mut cookies = false;
    for (name, value) in headers {
        let n = name.as_str().as_bytes();
        if !request_fate(n).forwarded(route)
            || extra.iter().any(|(e, _)| e == name)
            || named_in(connection.iter().map(HeaderValue::as_bytes), n)
        {
            continue;
        }
        if head.join_cookies && name == header::COOKIE {
            if !std::mem::replace(&mut cookies, true) {
                let all: Vec<&[u8]> =
                    headers.get_all(header::COOKIE).iter().map(HeaderValue::as_bytes).collect();
                line(out, n, &all.join(&b"; "[..]));
            }
            continue;
        }
        line(out, n, value.as_bytes());
    }
    // What a trusted proxy told us; a chain that is not text is dropped.
    let trusted =
        |name: &HeaderName| headers.get(name).filter(|_| fwd.trusted_peer).map(HeaderValue::as_bytes);
    let chain = joined(headers, &X_FORWARDED_FOR).filter(|_| fwd.trusted_peer);
    let own = GatewayLines {
        auth,
        forwarded_for: chain.as_deref().map(str::as_bytes),
        peer: fwd.peer_header.as_bytes(),
        proto: trusted(&X_FORWARDED_PROTO).unwrap_or(fwd.proto.as_bytes()),
        host: trusted(&X_FORWARDED_HOST).or(fwd.host.as_ref().map(HeaderValue::as_bytes)),
        request_id: fwd.request_id.as_bytes(),
        upstream_host: head.host.as_bytes(),
    };
    write_gateway_lines(out, &own, extra);
    if head.chunked {
        line(out, b"transfer-encoding", b"chunked");
    }
    if let Some(proto) = head.upgrade {
        line(out, b"connection", b"upgrade");
        line(out, b"upgrade", proto.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// The request line of an upstream request: the origin-form target is the upstream's base path,
/// the (normalised) path and the query.
pub fn request_line(
    out: &mut Vec<u8>,
    method: &http::Method,
    base_path: &str,
    target: &str,
    query: Option<&[u8]>,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(base_path.as_bytes());
    out.extend_from_slice(target.as_bytes());
    if let Some(q) = query {
        out.push(b'?');
        out.extend_from_slice(q);
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
}

/// What the gateway itself tells the upstream about a request (SPEC §2), as each transport
/// read it from the client.
pub struct GatewayLines<'a> {
    pub auth: &'a Authenticated,
    /// A trusted peer's `X-Forwarded-For` chain, which `peer` extends (`None`: not trusted,
    /// none sent, or not text).
    pub forwarded_for: Option<&'a [u8]>,
    /// The client's address.
    pub peer: &'a [u8],
    /// `X-Forwarded-Proto` and `X-Forwarded-Host`: a trusted peer's, else the gateway's own.
    pub proto: &'a [u8],
    pub host: Option<&'a [u8]>,
    pub request_id: &'a [u8],
    /// The upstream's `Host`.
    pub upstream_host: &'a [u8],
}

/// Writes the gateway's own header lines, in the one order both transports send them, each
/// unless a configured `upstream_headers` entry of that name replaces it (`Host` cannot be
/// configured); then the configured ones.
pub fn write_gateway_lines(out: &mut Vec<u8>, own: &GatewayLines<'_>, extra: &[(HeaderName, HeaderValue)]) {
    // Names as literals (not the `HeaderName` statics): their copies are then inlined.
    let configured = |name: &[u8]| extra.iter().any(|(e, _)| e.as_str().as_bytes() == name);
    let set = |out: &mut Vec<u8>, name: &[u8], value: &[u8]| {
        if !configured(name) {
            line(out, name, value);
        }
    };
    if let Some(id) = own.auth.identity() {
        set(out, b"x-auth-login", id.login_header.as_bytes());
        set(out, b"x-auth-roles", id.roles_header.as_bytes());
        set(out, b"x-auth-session", id.session_header.as_bytes());
    }
    if !configured(b"x-forwarded-for") {
        out.extend_from_slice(b"x-forwarded-for: ");
        if let Some(prev) = own.forwarded_for {
            out.extend_from_slice(prev);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(own.peer);
        out.extend_from_slice(b"\r\n");
    }
    set(out, b"x-forwarded-proto", own.proto);
    if let Some(host) = own.host {
        set(out, b"x-forwarded-host", host);
    }
    set(out, b"x-request-id", own.request_id);
    line(out, b"host", own.upstream_host);
    for (name, value) in extra {
        line(out, name.as_str().as_bytes(), value.as_bytes());
    }
}

/// One header line of an HTTP/1.1 head.
#[inline]
pub fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut out: Option<String> = None;
    for v in headers.get_all(name) {
        let s = v.to_str().ok()?.trim();
        if s.is_empty() {
            continue;
        }
        match out.as_mut() {
            Some(o) => {
                o.push_str(", ");
                o.push_str(s);
            }
            None => out = Some(s.to_string()),
        }
    }
    out
}

/// The client address as seen through trusted proxies: the right-most address in
/// `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_address(headers: &HeaderMap, peer: IpAddr, is_trusted: impl Fn(IpAddr) -> bool) -> IpAddr {
    if !is_trusted(peer) {
        return peer;
    }
    let mut addr = peer;
    let all: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for hop in all.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                addr = ip;
                if !is_trusted(ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_names_in_any_spelling() {
        for n in [
            "x-auth-login",
            "x_auth_login",
            "x-auth_roles",
            "x-forwarded-for",
            "x_forwarded_host",
            "x-request-id",
            "x_request_id",
            "forwarded",
            "X-Auth-Login",
            "X_REAL_IP",
            "Forwarded",
            "Content_Length",
            "transfer_Encoding",
        ] {
            assert!(is_gateway_owned(n.as_bytes()), "{n}");
        }
        for n in ["x-authorization", "accept", "x-requested-with", "content-length", "f", "x", "forwarded-x"]
        {
            assert!(!is_gateway_owned(n.as_bytes()), "{n}");
        }
    }

    #[test]
    fn connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        h.insert("content-length", HeaderValue::from_static("5"));
        h.insert("x-request-id", HeaderValue::from_static("theirs"));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret, content-length"));
        prepare_response(&mut h, 200);
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(h.contains_key("content-length"), "the framing survives being named");
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn client_address_through_trusted_proxies() {
        let trusted = |ip: IpAddr| ip.to_string().starts_with("10.");
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1, 2.2.2.2, 10.0.0.2"));
        assert_eq!(
            client_address(&h, "10.0.0.1".parse().unwrap(), trusted),
            "2.2.2.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_address(&h, "3.3.3.3".parse().unwrap(), trusted),
            "3.3.3.3".parse::<IpAddr>().unwrap()
        );
    }
}
