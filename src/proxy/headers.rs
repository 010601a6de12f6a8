//! The header rules of SPEC §2 for the request sent upstream and the response sent back.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::auth::Authenticated;

pub static X_AUTH_LOGIN: HeaderName = HeaderName::from_static("x-auth-login");
pub static X_AUTH_ROLES: HeaderName = HeaderName::from_static("x-auth-roles");
pub static X_AUTH_SESSION: HeaderName = HeaderName::from_static("x-auth-session");
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
        _ if std::str::from_utf8(name).is_ok_and(is_gateway_owned) => RequestFate::Drop,
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
fn starts_like(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && name.bytes().zip(prefix.bytes()).all(|(a, b)| {
            let a = if a == b'_' { b'-' } else { a.to_ascii_lowercase() };
            a == b
        })
}

fn same_like(name: &str, other: &str) -> bool {
    name.len() == other.len() && starts_like(name, other)
}

/// Identity and forwarding headers the gateway owns: whatever the client sent under these
/// names (in any spelling) is dropped before the gateway sets its own.
pub fn is_gateway_owned(name: &str) -> bool {
    starts_like(name, "x-auth-")
        || starts_like(name, "x-forwarded-")
        || same_like(name, "x-request-id")
        || same_like(name, "x-real-ip")
        || same_like(name, "forwarded")
        || is_framing_lookalike(name)
}

/// `Content_Length`, `Transfer_Encoding` and the like: harmless to the gateway, but an upstream
/// that maps `_` to `-` would see a second framing header (nginx drops such names too).
fn is_framing_lookalike(name: &str) -> bool {
    const NAMES: [&str; 9] = [
        "content-length",
        "transfer-encoding",
        "host",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "proxy-connection",
    ];
    name.contains('_') && NAMES.iter().any(|n| same_like(name, n))
}

/// Removes what the request fates drop for `route`, and headers named in `Connection`, in one
/// pass over the names (no allocation when there is nothing to remove, the common case).
fn strip_request(headers: &mut HeaderMap, route: &crate::routes::Route) {
    let mut doomed: Vec<HeaderName> = Vec::new();
    for v in headers.get_all(header::CONNECTION) {
        for token in v.to_str().unwrap_or("").split(',') {
            if let Ok(n) = HeaderName::from_bytes(token.trim().as_bytes()) {
                doomed.push(n);
            }
        }
    }
    for n in headers.keys() {
        if !request_fate(n.as_str().as_bytes()).forwarded(route) {
            doomed.push(n.clone());
        }
    }
    for n in doomed {
        headers.remove(n);
    }
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

/// Rewrites the client's headers into the upstream request's (SPEC §2).
pub fn prepare_upstream_request(
    headers: &mut HeaderMap,
    fwd: &Forwarding,
    auth: &Authenticated,
    route: &crate::routes::Route,
    upstream_host: &HeaderValue,
    upgrade: Option<HeaderValue>,
) {
    let extra = &route.upstream_headers;
    // Read what a trusted proxy told us before stripping: a `Connection: x-forwarded-for` must
    // not make us lose the chain we are about to extend.
    let xff = if fwd.trusted_peer { joined(headers, &X_FORWARDED_FOR) } else { None };
    let xfp = if fwd.trusted_peer { headers.get(&X_FORWARDED_PROTO).cloned() } else { None };
    let xfh = if fwd.trusted_peer { headers.get(&X_FORWARDED_HOST).cloned() } else { None };

    strip_request(headers, route);
    // Room for what is added below in one step, rather than the map growing twice on the way.
    let _ = headers.try_reserve(10 + extra.len());

    if let Some(id) = auth.identity() {
        headers.insert(X_AUTH_LOGIN.clone(), id.login_header.clone());
        headers.insert(X_AUTH_ROLES.clone(), id.roles_header.clone());
        headers.insert(X_AUTH_SESSION.clone(), id.session_header.clone());
    }
    let chain = match xff {
        Some(prev) => {
            HeaderValue::from_str(&format!("{prev}, {}", fwd.peer_header.to_str().unwrap_or("-"))).ok()
        }
        None => Some(fwd.peer_header.clone()),
    };
    if let Some(v) = chain {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), xfp.unwrap_or(HeaderValue::from_static(fwd.proto)));
    if let Some(h) = xfh.or_else(|| fwd.host.clone()) {
        headers.insert(X_FORWARDED_HOST.clone(), h);
    }
    headers.insert(X_REQUEST_ID.clone(), fwd.request_id.clone());
    headers.insert(header::HOST, upstream_host.clone());
    for (name, value) in extra {
        headers.insert(name.clone(), value.clone());
    }
    if let Some(proto) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, proto);
    }
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
        ] {
            assert!(is_gateway_owned(n), "{n}");
        }
        for n in ["x-authorization", "accept", "x-requested-with"] {
            assert!(!is_gateway_owned(n), "{n}");
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
