//! The fixed cases: every class of disagreement named in issue 13, and the request rules both
//! transports must apply alike. Templates: `{P}` is the lane's public route prefix, `{A}` its
//! Bearer route, `{TOKEN}` an access token of the gateway at hand, `{TAG}` the case's tag.

use crate::answers::STATELESS;
use crate::{Case, Step};

/// A request: line, `Host`, the tag, `headers` (each ending in CRLF), the blank line, `body`.
pub fn request(method: &str, target: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out =
        format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nX-Diff-Tag: {{TAG}}\r\n{headers}\r\n")
            .into_bytes();
    out.extend_from_slice(body);
    out
}

/// One request, its response, then the follow-up on the same connection.
pub fn simple(name: &str, bytes: Vec<u8>) -> Case {
    let read = if bytes.starts_with(b"HEAD ") { Step::ReadHead } else { Step::Read };
    Case { name: name.into(), steps: vec![Step::Send(bytes), read], followup: true }
}

fn get(name: &str, target: &str, headers: &str) -> Case {
    simple(name, request("GET", target, headers, b""))
}

fn post(name: &str, target: &str, headers: &str, body: &str) -> Case {
    let headers = format!("Content-Length: {}\r\n{headers}", body.len());
    simple(name, request("POST", target, &headers, body.as_bytes()))
}

fn steps(name: &str, steps: Vec<Step>, followup: bool) -> Case {
    Case { name: name.into(), steps, followup }
}

pub fn all() -> Vec<Case> {
    let mut cases: Vec<Case> = STATELESS
        .iter()
        .chain(&["keep-alive-10"])
        .map(|a| get(&format!("answer {a}"), &format!("{{P}}/case/{a}"), ""))
        .collect();
    cases.push(simple("answer head-cl-te to HEAD", request("HEAD", "{P}/case/head-cl-te", "", b"")));
    cases.push(simple("answer chunked to HEAD", request("HEAD", "{P}/case/chunked", "", b"")));
    cases.push(post("answer interim-100 to POST", "{P}/case/interim-100", "", "hello"));
    cases.extend(request_heads());
    cases.extend(early_and_aborted());
    cases.extend(resends_and_retries());
    cases.extend(paths());
    cases.extend(header_rules());
    cases.extend(cors());
    cases
}

/// Unreadable, ambiguous or unusual request heads and bodies.
fn request_heads() -> Vec<Case> {
    let many: String = (0..101).map(|i| format!("X-H-{i}: {i}\r\n")).collect();
    let huge = format!("X-Huge: {}\r\n", "h".repeat(70_000));
    let raw = |name: &str, s: &str| simple(name, s.as_bytes().to_vec());
    vec![
        get("head bad header name", "{P}/case/ok", "Bad Name: 1\r\n"),
        post("head content-length +1", "{P}/case/ok", "", "x")
            .with_header("Content-Length: 1", "Content-Length: +1"),
        post("head content-length 1, 1", "{P}/case/ok", "", "x")
            .with_header("Content-Length: 1", "Content-Length: 1, 1"),
        post("head content-length twice", "{P}/case/ok", "Content-Length: 1\r\n", "x"),
        post("head content-length 005", "{P}/case/ok", "", "hello")
            .with_header("Content-Length: 5", "Content-Length: 005"),
        post("head content-length empty", "{P}/case/ok", "", "")
            .with_header("Content-Length: 0", "Content-Length: "),
        simple(
            "head transfer-encoding gzip, chunked",
            request(
                "POST",
                "{P}/case/ok",
                "Transfer-Encoding: gzip, chunked\r\n",
                b"5\r\nhello\r\n0\r\n\r\n",
            ),
        ),
        simple(
            "head content-length with chunked",
            request(
                "POST",
                "{P}/case/ok",
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                b"5\r\nhello\r\n0\r\n\r\n",
            ),
        ),
        simple(
            "head transfer-encoding identity",
            request("POST", "{P}/case/ok", "Transfer-Encoding: identity\r\n", b""),
        ),
        get("head 101 more headers", "{P}/case/ok", &many),
        get("head over max_header_bytes", "{P}/case/ok", &huge),
        get("head obs-fold", "{P}/case/ok", "X-Folded: a\r\n b\r\n"),
        get("head NUL in value", "{P}/case/ok", "X-Nul: a\0b\r\n"),
        get("head two Host", "{P}/case/ok", "Host: other.example\r\n"),
        raw("head bare LF", "GET {P}/case/ok HTTP/1.1\nHost: localhost\nX-Diff-Tag: {TAG}\n\n"),
        raw("head HTTP/1.0", "GET {P}/case/ok HTTP/1.0\r\nHost: localhost\r\nX-Diff-Tag: {TAG}\r\n\r\n"),
        raw(
            "head HTTP/1.0 keep-alive",
            "GET {P}/case/ok HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\nX-Diff-Tag: {TAG}\r\n\r\n",
        ),
        raw("head HTTP/1.1 without Host", "GET {P}/case/ok HTTP/1.1\r\nX-Diff-Tag: {TAG}\r\n\r\n"),
        raw(
            "head version HTTP/2.0",
            "GET {P}/case/ok HTTP/2.0\r\nHost: localhost\r\nX-Diff-Tag: {TAG}\r\n\r\n",
        ),
        simple("head lower-case method", request("get", "{P}/case/ok", "", b"")),
        simple("head absolute-form target", request("GET", "https://localhost{P}/case/ok", "", b"")),
        simple("head asterisk target", request("OPTIONS", "*", "", b"")),
        simple("head TRACE", request("TRACE", "{P}/case/ok", "", b"")),
        simple("head CONNECT", request("CONNECT", "localhost:443", "", b"")),
        simple("head DELETE with body", request("DELETE", "{P}/case/ok", "Content-Length: 5\r\n", b"hello")),
        simple(
            "body chunked with trailers",
            request(
                "POST",
                "{P}/case/ok",
                "Transfer-Encoding: chunked\r\n",
                b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
            ),
        ),
        simple(
            "body chunked with extension",
            request("POST", "{P}/case/ok", "Transfer-Encoding: chunked\r\n", b"5;a=b\r\nhello\r\n0\r\n\r\n"),
        ),
        simple(
            "body bad chunk size",
            request("POST", "{P}/case/ok", "Transfer-Encoding: chunked\r\n", b"zz\r\nhello\r\n0\r\n\r\n"),
        ),
        simple(
            "body 200 KB",
            request("POST", "{P}/case/ok", "Content-Length: 204800\r\n", &vec![b'b'; 204_800]),
        ),
        steps(
            "pipelined two GETs",
            vec![
                Step::Send(
                    [request("GET", "{P}/case/ok", "", b""), request("GET", "{P}/case/chunked", "", b"")]
                        .concat(),
                ),
                Step::Read,
                Step::Read,
            ],
            true,
        ),
        steps(
            "expect 100-continue",
            vec![
                Step::Send(request(
                    "POST",
                    "{P}/case/ok",
                    "Expect: 100-continue\r\nContent-Length: 5\r\n",
                    b"",
                )),
                Step::ReadInterim,
                Step::Send(b"hello".to_vec()),
                Step::Read,
            ],
            true,
        ),
    ]
}

/// Errors answered before the body arrived, and clients leaving in the middle of an upload.
fn early_and_aborted() -> Vec<Case> {
    let head =
        |target: &str, extra: &str| request("POST", target, &format!("Content-Length: 10\r\n{extra}"), b"");
    let body = || Step::Send(b"0123456789".to_vec());
    vec![
        steps(
            "early 401, body after the answer",
            vec![Step::Send(head("{A}/case/ok", "")), Step::Read, body()],
            true,
        ),
        steps(
            "early 401, body after a pause",
            vec![Step::Send(head("{A}/case/ok", "")), Step::Pause(300), body(), Step::Read],
            true,
        ),
        steps(
            "early 401, client says Connection: close",
            vec![Step::Send(head("{A}/case/ok", "Connection: close\r\n")), Step::Read, body()],
            true,
        ),
        steps(
            "early 404, body after the answer",
            vec![Step::Send(head("/nowhere", "")), Step::Read, body()],
            true,
        ),
        steps(
            "early 413, body never sent",
            vec![Step::Send(request("POST", "{P}/case/ok", "Content-Length: 20000000\r\n", b"")), Step::Read],
            true,
        ),
        steps(
            "abort mid-upload (length)",
            vec![
                Step::Send(request("POST", "{P}/case/ok", "Content-Length: 100\r\n", b"0123456789")),
                Step::Pause(200),
                Step::Shutdown,
                Step::Read,
            ],
            false,
        ),
        steps(
            "abort mid-upload (chunked)",
            vec![
                Step::Send(request(
                    "POST",
                    "{P}/case/ok",
                    "Transfer-Encoding: chunked\r\n",
                    b"a\r\n0123456789\r\n",
                )),
                Step::Pause(200),
                Step::Shutdown,
                Step::Read,
            ],
            false,
        ),
    ]
}

/// Malformed answers on reused upstream connections, and connect failures to the first of two
/// upstreams (`/rput`, `/rget`, `/rpost`, `/rdel`: a refusing address, then the upstream).
fn resends_and_retries() -> Vec<Case> {
    let reuse = |name: &str, method: &str, headers: &str, body: &[u8]| {
        steps(
            name,
            vec![
                Step::Send(request("GET", "{P}/case/ok", "", b"")),
                Step::Read,
                Step::Send(request(method, "{P}/case/garbage-if-reused", headers, body)),
                Step::Read,
            ],
            true,
        )
    };
    let empty = |name: &str, method: &str, headers: &str, body: &[u8]| {
        steps(
            name,
            vec![
                Step::Send(request("GET", "{P}/case/ok", "", b"")),
                Step::Read,
                Step::Send(request(method, "{P}/case/empty-if-reused", headers, body)),
                if method == "HEAD" { Step::ReadHead } else { Step::Read },
            ],
            true,
        )
    };
    vec![
        empty("resend GET after an empty reply on a reused connection", "GET", "", b""),
        empty(
            "resend HEAD with body after an empty reply on a reused connection",
            "HEAD",
            "Content-Length: 5\r\n",
            b"hello",
        ),
        empty("resend DELETE after an empty reply on a reused connection", "DELETE", "", b""),
        empty(
            "resend PUT with body after an empty reply on a reused connection",
            "PUT",
            "Content-Length: 5\r\n",
            b"hello",
        ),
        empty(
            "resend POST after an empty reply on a reused connection",
            "POST",
            "Content-Length: 5\r\n",
            b"hello",
        ),
        steps(
            "chunked upload on a connection once answered HTTP/1.0 keep-alive",
            vec![
                Step::Send(request("GET", "{P}/case/keep-alive-10", "", b"")),
                Step::Read,
                Step::Send(request(
                    "POST",
                    "{P}/case/ok",
                    "Transfer-Encoding: chunked\r\n",
                    b"5\r\nhello\r\n0\r\n\r\n",
                )),
                Step::Read,
            ],
            true,
        ),
        reuse("resend GET after garbage on a reused connection", "GET", "", b""),
        reuse("resend DELETE after garbage on a reused connection", "DELETE", "", b""),
        reuse(
            "resend PUT without body after garbage on a reused connection",
            "PUT",
            "Content-Length: 0\r\n",
            b"",
        ),
        reuse(
            "resend PUT with body after garbage on a reused connection",
            "PUT",
            "Content-Length: 5\r\n",
            b"hello",
        ),
        reuse("resend POST after garbage on a reused connection", "POST", "Content-Length: 5\r\n", b"hello"),
        simple(
            "retry PUT with body after connect failure",
            request("PUT", "/rput/case/ok", "Content-Length: 5\r\n", b"hello"),
        ),
        simple("retry GET after connect failure", request("GET", "/rget/case/ok", "", b"")),
        simple(
            "retry POST after connect failure",
            request("POST", "/rpost/case/ok", "Content-Length: 5\r\n", b"hello"),
        ),
        simple("retry DELETE after connect failure", request("DELETE", "/rdel/case/ok", "", b"")),
    ]
}

fn paths() -> Vec<Case> {
    [
        "{P}/x/../case/ok",
        "{P}/./case/ok",
        "{P}//case//ok",
        "{P}/%63ase/ok",
        "{P}/case/ok?q=%2e%2e&r=/../",
        "{P}/case/ok#fragment",
        "{P}/a%2Fb",
        "{P}/a%5Cb",
        "{P}/a%00b",
        "{P}/..;/x",
        "{P}/a;b=c/case/ok",
        "{P}/../../x",
        "{P}/%2e%2e/%2e%2e/x",
        "{P}/caf%C3%A9",
        "{P}/a b",
        "{P}",
        "{P}x",
        "/nowhere",
        "{A}/../{P}/case/ok",
        "{P}/../{A}/case/ok",
        "{P}/case/ok\\..\\x",
    ]
    .iter()
    .map(|t| get(&format!("path {t}"), t, ""))
    .collect()
}

/// Identity and forwarding headers spoofed in every spelling, hop-by-hop and Connection-named
/// headers, the token rules.
/// The origin `[cors]` allows in this test.
pub const ORIGIN: &str = "https://app.example";

fn cors() -> Vec<Case> {
    let allowed = "Origin: https://app.example\r\n";
    let preflight = "Origin: https://app.example\r\nAccess-Control-Request-Method: PUT\r\n";
    let other = "Origin: https://other.example\r\nAccess-Control-Request-Method: PUT\r\n";
    let bearer = "Authorization: Bearer {TOKEN}\r\n";
    let options =
        |name: &str, target: &str, headers: &str| simple(name, request("OPTIONS", target, headers, b""));
    vec![
        options("CORS preflight, allowed origin, Bearer route", "{A}/case/ok", preflight),
        options("CORS preflight, other origin", "{A}/case/ok", other),
        options("CORS preflight, auth endpoint", "/auth/token", preflight),
        options("OPTIONS with Origin, no request method", "{P}/case/ok", allowed),
        get("CORS allowed origin, upstream answer", "{P}/case/ok", allowed),
        get("CORS allowed origin, Bearer route", "{A}/case/ok", &format!("{bearer}{allowed}")),
        get("CORS allowed origin, 401", "{A}/case/ok", allowed),
        get("CORS allowed origin, no route", "/nowhere", allowed),
        get("CORS upstream headers replaced", "{P}/case/cors-headers", allowed),
        get(
            "CORS other origin, upstream headers",
            "{P}/case/cors-headers",
            "Origin: https://other.example\r\n",
        ),
        get("CORS no origin, upstream headers", "{P}/case/cors-headers", ""),
        post(
            "CORS allowed origin, auth endpoint",
            "/auth/token",
            &format!("{allowed}Content-Type: application/json\r\n"),
            "{\"login\":\"bob\",\"password\":\"wrong\"}",
        ),
    ]
}

fn header_rules() -> Vec<Case> {
    let spoof = "X-Auth-Login: spoof-a\r\nX_Auth_Login: spoof-b\r\nx-auth-roles: spoof-admin\r\nX_AUTH_SESSION: spoof-s\r\n\
                 X-Auth-Other: spoof-o\r\nX-Forwarded-For: 6.6.6.6\r\nX_Forwarded_For: 7.7.7.7\r\n\
                 X-Forwarded-Host: spoof.example\r\nX-Forwarded-Proto: spoof\r\nForwarded: for=spoof\r\n\
                 X-Real-IP: 6.6.6.6\r\nX-Request-Id: spoof-rid\r\nX_Request_Id: spoof-rid2\r\n";
    let hop = "Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\
               Proxy-Connection: keep-alive\r\nTrailer: X-T\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n";
    let bearer = "Authorization: Bearer {TOKEN}\r\n";
    vec![
        get("identity spoof, public route", "{P}/case/ok", spoof),
        get("identity spoof, Bearer route", "{A}/case/ok", &format!("{bearer}{spoof}")),
        get("hop-by-hop request headers", "{P}/case/ok", hop),
        get(
            "Connection names Authorization",
            "{A}/case/ok",
            &format!("{bearer}Connection: Authorization\r\n"),
        ),
        post("Connection names Content-Length", "{P}/case/ok", "Connection: Content-Length\r\n", "hello"),
        get("Connection names X-Auth-Login", "{A}/case/ok", &format!("{bearer}Connection: X-Auth-Login\r\n")),
        get("Connection: close from the client", "{P}/case/ok", "Connection: close\r\n"),
        get(
            "Upgrade websocket without its headers",
            "{P}/case/ok",
            "Connection: Upgrade\r\nUpgrade: websocket\r\n",
        ),
        get(
            "token header on a proxied request",
            "{A}/case/ok",
            &format!("{bearer}token: refresh-secret\r\n"),
        ),
        get("Basic authorization on a public route", "{P}/case/ok", "Authorization: Basic YTpi\r\n"),
        get("Bearer route without token", "{A}/case/ok", ""),
        get("Bearer route with a bad token", "{A}/case/ok", "Authorization: Bearer abc.def.ghi\r\n"),
        get("Bearer route with token", "{A}/case/ok", bearer),
        get("Bearer route, scheme in lower case", "{A}/case/ok", "Authorization: bearer {TOKEN}\r\n"),
        get(
            "Bearer route, two Authorization",
            "{A}/case/ok",
            &format!("{bearer}Authorization: Bearer x\r\n"),
        ),
    ]
}

impl Case {
    /// The case with the first `from` in its first request replaced by `to`.
    fn with_header(mut self, from: &str, to: &str) -> Self {
        if let Some(Step::Send(bytes)) = self.steps.first_mut() {
            let text = String::from_utf8_lossy(bytes).replacen(from, to, 1);
            *bytes = text.into_bytes();
        }
        self
    }
}
