//! `GET /` on the admin listener: the status page (SPEC §7), its script and its style, compiled
//! into the binary (no third-party assets, no build step). The page reads `/readyz`, `/metrics`
//! and, after an admin signs in through `POST /auth/token`, `/admin/*` with the token kept in
//! the script's memory. The Content-Security-Policy allows the page's own script and style
//! only: no inline script or style, no other origin, no framing.

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{GatewayBody, full};

const INDEX: &str = include_str!("status/index.html");
const SCRIPT: &str = include_str!("status/status.js");
const STYLE: &str = include_str!("status/status.css");

pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                       img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page's files by path, or `None` for any other path.
pub fn serve(path: &str) -> Option<Response<GatewayBody>> {
    let (body, kind) = match path {
        "/" => (INDEX, "text/html; charset=utf-8"),
        "/status.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/status.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut resp = Response::new(full(body.as_bytes().to_vec()));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_inline_script_or_style_and_no_other_origin() {
        for forbidden in ["<script>", "style=", "<style", "onclick", "onsubmit", "http://", "https://"] {
            assert!(!INDEX.contains(forbidden), "{forbidden}");
        }
        assert!(
            !SCRIPT.contains("innerHTML")
                && !SCRIPT.contains("localStorage")
                && !SCRIPT.contains("document.cookie")
        );
        let r = serve("/").unwrap();
        assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        assert!(serve("/x").is_none());
    }
}
