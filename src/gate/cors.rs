//! CORS (SPEC §2, `[cors]`): the one rule both transports follow. The policy is validated once
//! per snapshot ([`CorsPolicy`]); each request gets a [`Cors`] value (no allocation) that says
//! what its answer carries, whoever wrote the answer: the upstream (hyper's `HeaderMap` through
//! [`Cors::apply`], the fast path's bytes through [`Cors::drops`] and [`Cors::lines`]) or the
//! gateway itself (errors, own endpoints, preflights).
//!
//! A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) on a path the
//! policy covers is answered by the gateway and never forwarded: 204 with the grant for an
//! allowed origin, 403 `forbidden` without any CORS header for another (the browser blocks
//! either way; the status says why in the access log and the browser's console).

use std::path::Path;

use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};

use super::{Record, View, is_own};
use crate::body::GatewayBody;
use crate::config::{ConfigError, CorsConfig};
use crate::error::GatewayError;
use crate::runtime::Runtime;

/// `[cors]` as served. Built only when `allowed_origins` is not empty.
pub struct CorsPolicy {
    /// The exact origins, as browsers serialise them (lower-case scheme and host).
    origins: Vec<HeaderValue>,
    /// `"*"` was listed: every origin (but `null`) is allowed, and gets its own origin back.
    any: bool,
    credentials: bool,
    methods: HeaderValue,
    headers: HeaderValue,
    max_age: HeaderValue,
}

impl CorsPolicy {
    /// Validates `[cors]`; `None` when it is off. Bad values name their key.
    pub fn from_config(c: &CorsConfig, path: &Path) -> Result<Option<Self>, ConfigError> {
        let err = |key: &str, reason: String| ConfigError::new(path, format!("cors.{key}"), reason);
        if c.allowed_origins.is_empty() {
            return Ok(None);
        }
        let mut origins = Vec::new();
        let mut any = false;
        for o in &c.allowed_origins {
            if o == "*" {
                any = true;
                continue;
            }
            check_origin(o).map_err(|why| err("allowed_origins", format!("`{o}`: {why}")))?;
            origins.push(HeaderValue::from_str(o).map_err(|_| err("allowed_origins", format!("`{o}`")))?);
        }
        if any && c.allow_credentials {
            return Err(err(
                "allow_credentials",
                "cannot be true with \"*\" in allowed_origins: every site could act with the user's credentials"
                    .into(),
            ));
        }
        let methods = list(&c.allowed_methods, |m| Method::from_bytes(m.as_bytes()).is_ok())
            .map_err(|m| err("allowed_methods", format!("`{m}` is not a method")))?;
        let headers = list(&c.allowed_headers, |h| http::HeaderName::from_bytes(h.as_bytes()).is_ok())
            .map_err(|h| err("allowed_headers", format!("`{h}` is not a header name")))?;
        let max_age = HeaderValue::from(c.max_age.0.as_secs());
        Ok(Some(Self { origins, any, credentials: c.allow_credentials, methods, headers, max_age }))
    }

    /// The configured value equal to `origin`, or `None` when it is another origin (a listed
    /// one, for `"*"`, is `Some(None)`: allowed, and echoed from the request's bytes).
    fn grant<'a>(&'a self, origin: &'a [u8]) -> Option<Granted<'a>> {
        if let Some(v) = self.origins.iter().find(|v| v.as_bytes() == origin) {
            return Some(Granted { origin, listed: Some(v) });
        }
        // `null` is what sandboxed frames and local files send: never granted.
        let plain = !origin.is_empty() && origin.iter().all(|b| b.is_ascii_graphic());
        (self.any && plain && origin != b"null").then_some(Granted { origin, listed: None })
    }

    /// The preflight answer for an allowed origin (the grant itself is added by [`Cors`]).
    pub fn preflight_response(&self) -> Response<GatewayBody> {
        let mut resp = Response::new(crate::body::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, self.headers.clone());
        h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        resp
    }
}

/// An origin as browsers send it: `http` or `https`, `://`, a host (lower case) and a port only
/// when it is not the scheme's default; no path, no trailing slash.
fn check_origin(o: &str) -> Result<(), &'static str> {
    let (scheme, rest) = o.split_once("://").ok_or("not scheme://host[:port]")?;
    let default_port = match scheme {
        "https" => ":443",
        "http" => ":80",
        _ => return Err("the scheme must be http or https, in lower case"),
    };
    if rest.is_empty() || !crate::routes::valid_host(rest.as_bytes()) {
        return Err("not scheme://host[:port] (no path, no trailing slash)");
    }
    if rest.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("write the host in lower case, as browsers send it");
    }
    if rest.ends_with(default_port) {
        return Err("leave out the scheme's default port: browsers do");
    }
    Ok(())
}

/// The values joined into one header value, or the first invalid one.
fn list(values: &[String], valid: impl Fn(&str) -> bool) -> Result<HeaderValue, String> {
    if let Some(bad) = values.iter().find(|v| !valid(v)) {
        return Err(bad.clone());
    }
    HeaderValue::from_str(&values.join(", ")).map_err(|_| values.join(", "))
}

/// An allowed origin, as the request sent it.
#[derive(Clone, Copy)]
pub struct Granted<'a> {
    origin: &'a [u8],
    /// The configured value it equals (cloned into a header map without a copy).
    listed: Option<&'a HeaderValue>,
}

/// What CORS does to the answer of one request.
#[derive(Clone, Copy, Default)]
pub enum Cors<'a> {
    /// No `[cors]`, or the route says `cors = false`: nothing is added or removed.
    #[default]
    Off,
    /// The policy covers the request: the upstream's `Access-Control-*` go, `Vary` names
    /// `Origin`, and an allowed origin gets its grant.
    On { credentials: bool, granted: Option<Granted<'a>> },
}

/// What the answer to a request whose `Origin` is `origin` carries; `record` says whether its
/// route turned CORS off (`crate::gate::Record::set_route`). Free when `[cors]` is off.
pub fn for_request<'a>(rt: &'a Runtime, origin: Option<&'a [u8]>, record: &Record) -> Cors<'a> {
    match &rt.cors {
        Some(p) if !record.cors_off => {
            Cors::On { credentials: p.credentials, granted: origin.and_then(|o| p.grant(o)) }
        }
        _ => Cors::Off,
    }
}

/// What a header line of the grant holds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Value {
    Static(&'static str),
    /// The request's origin.
    Origin,
}

const EXPOSED: &str = "X-Request-Id";

impl<'a> Cors<'a> {
    /// Whether an upstream response header is removed (the gateway's policy wins).
    pub fn drops(&self, name: &[u8]) -> bool {
        const PREFIX: &[u8] = b"access-control-";
        matches!(self, Cors::On { .. })
            && name.len() > PREFIX.len()
            && name[..PREFIX.len()].eq_ignore_ascii_case(PREFIX)
    }

    /// The header lines added to an answer whose `Vary` values are `vary`: `Vary: Origin`
    /// (a further line, unless one already names `Origin` or `*`), and for an allowed origin
    /// the grant.
    pub fn lines<'v>(&self, mut vary: impl Iterator<Item = &'v [u8]>) -> [Option<(&'static str, Value)>; 4] {
        let Cors::On { credentials, granted } = *self else { return [None; 4] };
        let varies = vary.any(|v| {
            v.split(|&b| b == b',')
                .map(crate::auth::tokens::trim_spaces)
                .any(|t| t == b"*" || t.eq_ignore_ascii_case(b"origin"))
        });
        let g = granted.is_some();
        [
            (!varies).then_some(("vary", Value::Static("Origin"))),
            g.then_some(("access-control-allow-origin", Value::Origin)),
            (g && credentials).then_some(("access-control-allow-credentials", Value::Static("true"))),
            g.then_some(("access-control-expose-headers", Value::Static(EXPOSED))),
        ]
    }

    /// The bytes of a line's value.
    pub fn bytes(&self, v: Value) -> &'a [u8] {
        match (v, self) {
            (Value::Static(s), _) => s.as_bytes(),
            (Value::Origin, Cors::On { granted: Some(g), .. }) => g.origin,
            (Value::Origin, _) => b"",
        }
    }

    /// Applies the rule to a response's headers: an upstream's (hyper's writer), or one the
    /// gateway made (whose own `Access-Control-*`, a preflight's, stay).
    pub fn apply(&self, headers: &mut HeaderMap, from_upstream: bool) {
        if let Cors::Off = self {
            return;
        }
        if from_upstream && headers.keys().any(|n| self.drops(n.as_str().as_bytes())) {
            let doomed: Vec<_> =
                headers.keys().filter(|n| self.drops(n.as_str().as_bytes())).cloned().collect();
            for n in doomed {
                headers.remove(n);
            }
        }
        let lines = self.lines(headers.get_all(header::VARY).iter().map(HeaderValue::as_bytes));
        for (name, value) in lines.into_iter().flatten() {
            let value = match (value, self) {
                (Value::Static(s), _) => HeaderValue::from_static(s),
                (Value::Origin, Cors::On { granted: Some(g), .. }) => match g.listed {
                    Some(v) => v.clone(),
                    None => match HeaderValue::from_bytes(g.origin) {
                        Ok(v) => v,
                        Err(_) => continue,
                    },
                },
                (Value::Origin, _) => continue,
            };
            let name = http::HeaderName::from_static(name);
            // `Vary` is a list: a further line joins it. The grant replaces whatever was there.
            if name == header::VARY {
                headers.append(name, value);
            } else {
                headers.insert(name, value);
            }
        }
    }
}

/// Whether the request `v` at (normalised) `path` is a preflight the gateway answers itself:
/// `Ok(Some(policy))` for an allowed origin, `Err(forbidden)` for another, `Ok(None)` when it is
/// not a preflight, `[cors]` is off, or the path's route says `cors = false` (then it is
/// served as any other request).
pub fn preflight<'r>(
    rt: &'r Runtime,
    path: &str,
    v: &View<'_>,
    record: &mut Record,
) -> Result<Option<&'r CorsPolicy>, GatewayError> {
    let (Some(policy), Some(origin)) = (&rt.cors, v.origin) else { return Ok(None) };
    if *v.method != Method::OPTIONS || !v.preflight {
        return Ok(None);
    }
    if !is_own(rt, path) {
        match rt.routes.find_any_method(v.host, path) {
            Some(route) if route.cors => record.set_route(route),
            _ => return Ok(None),
        }
    }
    match policy.grant(origin) {
        Some(_) => Ok(Some(policy)),
        None => Err(GatewayError::Forbidden("preflight from an origin [cors] does not allow")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_written_as_browsers_send_them() {
        for good in ["https://trader.example.com", "http://127.0.0.1:8080", "https://[::1]:8443"] {
            assert_eq!(check_origin(good), Ok(()), "{good}");
        }
        for bad in [
            "trader.example.com",
            "https://trader.example.com/",
            "https://trader.example.com/app",
            "HTTPS://trader.example.com",
            "https://Trader.example.com",
            "https://trader.example.com:443",
            "http://a.example:80",
            "ftp://a.example",
            "null",
            "https://",
            "https://user@a.example",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
    }

    fn policy(origins: &[&str], credentials: bool) -> Result<Option<CorsPolicy>, ConfigError> {
        let c = CorsConfig {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_credentials: credentials,
            ..CorsConfig::default()
        };
        CorsPolicy::from_config(&c, Path::new("g.toml"))
    }

    #[test]
    fn the_policy_is_validated() {
        assert!(policy(&[], true).unwrap().is_none(), "off without origins");
        let e = policy(&["*"], true).err().unwrap();
        assert_eq!(e.key, "cors.allow_credentials");
        let e = policy(&["https://a.example/"], false).err().unwrap();
        assert_eq!(e.key, "cors.allowed_origins");
        let p = policy(&["https://a.example"], true).unwrap().unwrap();
        assert!(p.grant(b"https://a.example").is_some());
        assert!(p.grant(b"https://a.example.evil").is_none());
        assert!(p.grant(b"https://A.example").is_none());
        let any = policy(&["*"], false).unwrap().unwrap();
        assert!(any.grant(b"https://b.example").is_some());
        assert!(any.grant(b"null").is_none());
    }

    #[test]
    fn vary_is_appended_once() {
        let p = policy(&["https://a.example"], true).unwrap().unwrap();
        let on = Cors::On { credentials: true, granted: p.grant(b"https://a.example") };
        let mut h = HeaderMap::new();
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        h.insert("access-control-max-age", HeaderValue::from_static("1"));
        on.apply(&mut h, true);
        let vary: Vec<_> = h.get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://a.example");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert!(!h.contains_key(header::ACCESS_CONTROL_MAX_AGE));
        on.apply(&mut h, true);
        assert_eq!(h.get_all(header::VARY).iter().count(), 2, "Origin is named once");
        let mut none = HeaderMap::new();
        Cors::On { credentials: true, granted: None }.apply(&mut none, true);
        assert_eq!(none.len(), 1, "another origin: only Vary");
    }
}
