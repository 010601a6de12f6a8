//! Path normalisation and route matching (host, longest prefix on a segment boundary, method).
//! The one normalised path is used to match, to authorise and to forward (SPEC §2).

use std::borrow::Cow;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method};

use crate::error::GatewayError;
use crate::proxy::UpstreamPool;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Required,
    Public,
}

pub struct Route {
    pub name: Arc<str>,
    /// Normalised, without a trailing slash (except the root "/").
    pub prefix: String,
    /// Lower-case, without port; `None` fits any host.
    pub host: Option<String>,
    /// `None`: every method.
    pub methods: Option<Vec<Method>>,
    pub allow_header: HeaderValue,
    pub auth: AuthMode,
    pub strip_prefix: bool,
    pub forward_authorization: bool,
    pub forward_token_header: bool,
    /// The gateway's CORS policy applies (`crate::gate::cors`); false: no CORS handling at all.
    pub cors: bool,
    pub timeout: std::time::Duration,
    pub upstream_headers: Vec<(HeaderName, HeaderValue)>,
    pub pool: Arc<UpstreamPool>,
    /// Set when the snapshot is installed, shared with the same-named route of later snapshots.
    pub stats: std::sync::OnceLock<Arc<crate::metrics::RouteStats>>,
}

impl Route {
    /// The path sent upstream: the normalised path, minus the prefix when `strip_prefix`.
    pub fn upstream_path<'a>(&self, path: &'a str) -> &'a str {
        if !self.strip_prefix || self.prefix == "/" {
            return path;
        }
        match &path[self.prefix.len().min(path.len())..] {
            "" => "/",
            rest => rest,
        }
    }
}

pub struct RouteTable {
    /// Sorted by prefix length, longest first (host-specific before host-less at equal length), so
    /// the first fit is the best match.
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by(|a, b| {
            b.prefix.len().cmp(&a.prefix.len()).then_with(|| b.host.is_some().cmp(&a.host.is_some()))
        });
        Self { routes }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    /// Among routes whose host fits, the longest prefix wins; then its methods are checked.
    pub fn find(&self, host: Option<&str>, path: &str, method: &Method) -> Result<&Route, GatewayError> {
        let route = self.find_any_method(host, path).ok_or(GatewayError::NoRoute)?;
        match &route.methods {
            Some(allowed) if !allowed.contains(method) => {
                Err(GatewayError::MethodNotAllowed { allow: route.allow_header.clone() })
            }
            _ => Ok(route),
        }
    }
}

impl RouteTable {
    /// The route for this host and path, whatever its `methods` (a CORS preflight asks about
    /// the method it names, not its own `OPTIONS`).
    pub fn find_any_method(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        let host = host.map(host_name);
        self.routes.iter().find(|r| {
            r.host.as_deref().is_none_or(|h| host.is_some_and(|req| req.eq_ignore_ascii_case(h)))
                && prefix_matches(&r.prefix, path)
        })
    }
}

/// `/api` matches `/api` and `/api/x`, never `/apix`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || (path.starts_with(prefix) && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/')))
}

/// Whether a Host value (or a URI authority) is `host[:port]` with a host of letters, digits,
/// `-`, `.` and `_`, or an IPv6 literal in brackets, and a port from 1 to 65535. Stricter than RFC
/// 3986's reg-name on purpose: no userinfo, path, comma, space, percent or control byte, so
/// what routes a request, and what the upstream sees in `X-Forwarded-Host`, is a plain name.
pub fn valid_host(v: &[u8]) -> bool {
    let (host, port) = match v.first() {
        Some(b'[') => match v.iter().position(|&c| c == b']') {
            Some(end) => {
                let literal = &v[1..end];
                let ok = !literal.is_empty()
                    && literal.iter().all(|c| c.is_ascii_hexdigit() || matches!(c, b':' | b'.'));
                if !ok {
                    return false;
                }
                (&v[..=end], &v[end + 1..])
            }
            None => return false,
        },
        _ => match v.iter().position(|&c| c == b':') {
            Some(i) => (&v[..i], &v[i..]),
            None => (v, &[][..]),
        },
    };
    // Labels are not empty: no leading dot and no `..` (one final dot is the FQDN form).
    let name_ok = host.starts_with(b"[")
        || (!host.is_empty()
            && host[0] != b'.'
            && !host.windows(2).any(|w| w == b"..")
            && host.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_')));
    let port_ok = match port.split_first() {
        None => true,
        // Empty (RFC 3986: the default port) or 1 to 65535.
        Some((b':', [])) => true,
        Some((b':', digits)) => {
            digits.len() <= 5
                && digits.iter().all(u8::is_ascii_digit)
                && (1..=65_535).contains(&digits.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
        }
        Some(_) => false,
    };
    name_ok && port_ok
}

/// The name a route's `host` is compared with: without the port, and without a final dot
/// (`example.com.` is the fully qualified form of `example.com`).
pub fn host_name(host: &str) -> &str {
    let h = host_without_port(host);
    h.strip_suffix('.').unwrap_or(h)
}

/// `Host` without its port; IPv6 literals keep their brackets.
pub fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `.;x` or `..;x` (also with `;` encoded): Tomcat, Jetty and Spring drop the `;` parameters
/// and then read the segment as a dot segment, so it would climb out of the route it matched.
fn is_dot_with_params(seg: &str) -> bool {
    let dots = seg.bytes().take_while(|&c| c == b'.').count();
    let rest = &seg[dots..];
    (dots == 1 || dots == 2)
        && (rest.starts_with(';') || rest.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("%3B")))
}

/// Normalises a request path: decodes percent-encoded unreserved characters, resolves `.` and
/// `..`, collapses duplicate slashes. Refuses (`request.malformed`) encoded `/`, `\` or NUL, a
/// literal `\`, bad percent-encoding, `..` that would climb above the root, and a `.` or `..`
/// segment with `;` parameters.
/// Already-normal paths (the common case) are returned borrowed.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, GatewayError> {
    let bad = |why: &str| GatewayError::Malformed(format!("path: {why}"));
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return Err(bad("must start with /"));
    }
    // A request target is visible ASCII (RFC 9112); hyper already enforces this, but the
    // function must not depend on its caller for that.
    if !b.iter().all(|c| (0x21..=0x7e).contains(c)) {
        return Err(bad("characters outside visible ASCII"));
    }
    let simple = !b.iter().any(|&c| c == b'%' || c == b'\\') && !path.contains("//") && !path.contains("/.");
    if simple {
        return Ok(Cow::Borrowed(path));
    }
    // 1. Percent-decoding of unreserved characters only; other escapes stay, upper-cased.
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => return Err(bad("backslash")),
            b'%' => {
                let (Some(h), Some(l)) =
                    (b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex))
                else {
                    return Err(bad("bad percent-encoding"));
                };
                let v = h << 4 | l;
                match v {
                    b'/' | b'\\' | 0 => return Err(bad("encoded /, \\ or NUL")),
                    v if is_unreserved(v) => decoded.push(v as char),
                    v => {
                        decoded.push('%');
                        decoded.push(char::from(b"0123456789ABCDEF"[usize::from(v >> 4)]));
                        decoded.push(char::from(b"0123456789ABCDEF"[usize::from(v & 15)]));
                    }
                }
                i += 3;
            }
            c => {
                decoded.push(c as char);
                i += 1;
            }
        }
    }
    // 2. Dot segments and empty segments.
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for seg in decoded.split('/').skip(1) {
        if is_dot_with_params(seg) {
            return Err(bad("`.` or `..` segment with `;` parameters"));
        }
        trailing_slash = false;
        match seg {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                if segments.pop().is_none() {
                    return Err(bad("climbs above the root"));
                }
                trailing_slash = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, ()> {
        normalize_path(p).map(|c| c.into_owned()).map_err(|_| ())
    }

    #[test]
    fn normalises() {
        assert_eq!(n("/api/x").unwrap(), "/api/x");
        assert_eq!(n("/").unwrap(), "/");
        assert_eq!(n("//api").unwrap(), "/api");
        assert_eq!(n("/api//x").unwrap(), "/api/x");
        assert_eq!(n("/./api").unwrap(), "/api");
        assert_eq!(n("/api/../public").unwrap(), "/public");
        assert_eq!(n("/api/%2e%2e/public").unwrap(), "/public");
        assert_eq!(n("/api/.%2e/").unwrap(), "/");
        assert_eq!(n("/api/x/").unwrap(), "/api/x/");
        assert_eq!(n("/a/b/..").unwrap(), "/a/");
        assert_eq!(n("/%61pi").unwrap(), "/api");
        assert_eq!(n("/a%20b").unwrap(), "/a%20b");
        assert_eq!(n("/a%3fb").unwrap(), "/a%3Fb");
        assert_eq!(n("/public;x/../api").unwrap(), "/api");
        // Only a segment that is exactly `.` or `..` before its `;` is a dot segment.
        assert_eq!(n("/public/...;/x").unwrap(), "/public/...;/x");
        assert_eq!(n("/public/..a;/x").unwrap(), "/public/..a;/x");
        assert_eq!(n("/public/a..;/x").unwrap(), "/public/a..;/x");
    }

    #[test]
    fn refuses() {
        for p in [
            "/a%2Fb",
            "/a%2fb",
            "/a%5Cb",
            "/a\\b",
            "/a%00b",
            "/..",
            "/a/../..",
            "/%2e%2e/x",
            "/a%zz",
            "/a%2",
            "/public/..;/x",
            "/public/..;jsessionid=1/x",
            "/public/.;/x",
            "/public/.;x",
            "/public/%2E%2e;/x",
            "/public/%2e;/x",
            "/public/..%3B/x",
            "/public/x/..;",
            "/..;/x",
            "api",
            "*",
        ] {
            assert!(n(p).is_err(), "{p} accepted");
        }
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/x"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(!prefix_matches("/public", "/public;x"));
        assert!(prefix_matches("/", "/anything"));
    }

    #[test]
    fn host_values() {
        for ok in [
            "a",
            "api.example",
            "api.example.",
            "API-1.example_x:8443",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8443",
            "h:",
            "h:1",
            "h:65535",
            "h:00080",
        ] {
            assert!(valid_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "u@api.example",
            "api.example/x",
            "other,api.example",
            "a b",
            "a\tb",
            "[::1",
            "[]",
            "[x::1]",
            "[::1]x",
            "a:b",
            "a:123456",
            "a:99999",
            "a:65536",
            "a:0",
            "a:00000",
            "[::1]:0",
            "[::1]:70000",
            "a:1:2",
            "%61",
            "a\\b",
            ":80",
            "a..",
            "a..b",
            ".a",
            ".",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(host_without_port("Example.com:8443"), "Example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:8443"), "[::1]");
    }
}
