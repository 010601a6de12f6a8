//! What bo-gateway withstands: the attacks and faults that broke other gateways (nginx, Envoy,
//! Traefik, HAProxy, oauth2-proxy, APISIX, Pingora), one test each. Read the module list as the
//! list of defences:
//!
//! - `paths`: one normalised path to match, authorise and forward; traversal and encoded
//!   separators refused; segment-boundary prefixes; `;` and `#` never widen a public route;
//!   `..;` refused; Host ports 1 to 65535; `/readyz` on the main listener names nothing.
//! - `framing`: spoofed identity/forwarding headers, Connection-named headers, ambiguous
//!   Content-Length, CL+TE smuggling, obs-fold, oversized heads, tokens in two places.
//! - `jwt`: alg none, algorithm confusion, unknown kid, exp/nbf at the leeway boundaries, foreign
//!   issuer/audience, oversized and non-base64 tokens; none of them grows the cache.
//! - `keys`: a key a reload removed verifies nothing from then on, held requests and cached
//!   tokens included.
//! - `upgrade`: WebSocket authorised first, tunnelled after the upstream's 101 only.
//! - `streaming`: client disconnects release upstream connections.
//! - `peers`: slowloris, idle keep-alive, connection cap; upstreams answering garbage, closing
//!   mid-response or sending oversized headers.
//! - `pools`: active and passive health, least_requests, retry rules, readiness of a dead route.
//! - `logins`: concurrent password guessing gets at most the limit of password checks; login
//!   names with surrounding whitespace or another case are neither new identities nor counters.
//!
//! - `cors`: only an exact listed origin is granted; preflights never reach the upstream.
//!
//! mTLS is in `tests/mtls.rs`; 100 MB streams with flat memory in `tests/memory.rs`.

#[macro_use]
#[path = "../support/mod.rs"]
mod support;

mod cors;
mod framing;
mod jwt;
mod keys;
mod logins;
mod paths;
mod peers;
mod pools;
mod resources;
mod streaming;
mod upgrade;
