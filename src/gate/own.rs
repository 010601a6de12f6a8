//! The gateway's own endpoints, answered the same way whichever transport read the request,
//! and what the policy core knows of the connection a request came on.

use std::net::SocketAddr;

use http::{HeaderValue, Request, Response};

use crate::auth::endpoints::{self, Endpoint};
use crate::body::GatewayBody;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::health;
use crate::proxy;
use crate::runtime::Runtime;

/// What the connection tells the core about a request: its peer and whether it came over TLS.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The peer's address as a header value (for `X-Forwarded-For`), made once per connection.
    pub peer_header: HeaderValue,
    pub tls: bool,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        let peer_header =
            HeaderValue::from_str(&peer.ip().to_string()).unwrap_or(HeaderValue::from_static("-"));
        Self { peer, peer_header, tls }
    }
}

/// Answers one of the gateway's own endpoints (see [`super::is_own`]).
pub async fn own(
    gw: &Gateway,
    rt: &Runtime,
    conn: &ConnInfo,
    path: &str,
    req: Request<endpoints::EndpointBody>,
) -> Result<Response<GatewayBody>, GatewayError> {
    match path {
        "/healthz" => health::healthz(req.method()),
        "/readyz" => health::readyz(gw, rt, req.method()).await,
        "/.well-known/jwks.json" => endpoints::jwks(rt, req.method()),
        _ => match Endpoint::find(&rt.api_prefix, path) {
            Some(ep) => {
                let client = proxy::client_address(req.headers(), conn.peer.ip(), |ip| rt.is_trusted(ip));
                endpoints::handle(gw, rt, ep, req, client).await
            }
            None => Err(GatewayError::NoRoute),
        },
    }
}
