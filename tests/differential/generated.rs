//! Random cases from a fixed seed: a method, a route (public, Bearer with and without a token),
//! a few request headers from a pool of ordinary, hop-by-hop and spoofed ones, a body framing,
//! and one of the upstream's stateless answers. A tiny xorshift, so a seed names a run exactly.

use crate::answers::STATELESS;
use crate::cases::request;
use crate::{Case, Step};

pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.below(from.len())]
    }
}

const METHODS: &[&str] = &["GET", "GET", "HEAD", "POST", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

const HEADERS: &[&str] = &[
    "Accept: */*\r\n",
    "User-Agent: differential/1\r\n",
    "Accept-Encoding: gzip\r\n",
    "Cookie: a=b\r\n",
    "Connection: keep-alive\r\n",
    "Connection: close\r\n",
    "Connection: X-Hop\r\nX-Hop: 1\r\n",
    "Keep-Alive: timeout=5\r\n",
    "TE: trailers\r\n",
    "Proxy-Connection: keep-alive\r\n",
    "Upgrade: h2c\r\nConnection: Upgrade\r\n",
    "X_Auth_Login: spoof-login\r\n",
    "X-Auth-Roles: spoof-admin\r\n",
    "X-Forwarded-For: 6.6.6.6\r\n",
    "x_forwarded_host: spoof.example\r\n",
    "X-Request-Id: spoof-rid\r\n",
    "x_request_id: spoof-rid2\r\n",
    "Forwarded: for=6.6.6.6\r\n",
    "X-Real-IP: 6.6.6.6\r\n",
    "Via: 1.1 proxy\r\n",
    "Content-Type: text/plain\r\n",
    "token: refresh-secret\r\n",
    "Authorization: Basic YTpi\r\n",
    "Trailer: X-T\r\n",
    "X-Dup: 1\r\nX-Dup: 2\r\n",
    "Origin: https://app.example\r\n",
    "Origin: https://other.example\r\n",
    "Origin: https://app.example\r\nAccess-Control-Request-Method: PUT\r\n",
    "Access-Control-Request-Method: GET\r\n",
];

const TARGET_SUFFIXES: &[&str] = &["", "", "", "?q=1", "?a=%2F&b=..", "/./x", "/x/..", "//y", "/%7Euser"];

/// `count` cases from `seed`.
pub fn cases(seed: u64, count: usize) -> Vec<Case> {
    let mut rng = XorShift::new(seed);
    (0..count).map(|i| one(&mut rng, i)).collect()
}

fn one(rng: &mut XorShift, i: usize) -> Case {
    let method = *rng.pick(METHODS);
    let answer = *rng.pick(STATELESS);
    let (prefix, auth) = match rng.below(10) {
        0..=5 => ("{P}", ""),
        6..=8 => ("{A}", "Authorization: Bearer {TOKEN}\r\n"),
        _ => ("{A}", ""),
    };
    let target = format!("{prefix}/case/{answer}{}", rng.pick(TARGET_SUFFIXES));
    let mut headers = auth.to_string();
    for _ in 0..rng.below(4) {
        let header: &&str = rng.pick(HEADERS);
        headers.push_str(header);
    }
    let body: Vec<u8> = match rng.below(8) {
        0..=3 => Vec::new(),
        4 => {
            headers.push_str("Content-Length: 0\r\n");
            Vec::new()
        }
        5 => {
            headers.push_str("Content-Length: 5\r\n");
            b"hello".to_vec()
        }
        6 => {
            headers.push_str("Content-Length: 3000\r\n");
            vec![b'z'; 3000]
        }
        _ => {
            headers.push_str("Transfer-Encoding: chunked\r\n");
            let trailer = if rng.below(2) == 0 { "X-T: 1\r\n" } else { "" };
            format!("5\r\nhello\r\n0\r\n{trailer}\r\n").into_bytes()
        }
    };
    let bytes = request(method, &target, &headers, &body);
    let read = if method == "HEAD" { Step::ReadHead } else { Step::Read };
    let name = format!(
        "generated #{i}: {method} {target} [{}]",
        headers.replace("\r\n", "; ").trim_end_matches("; ")
    );
    Case { name, steps: vec![Step::Send(bytes), read], followup: true }
}
