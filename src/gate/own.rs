//! The gateway's own endpoints, answered the same way whichever transport read the request
//! and whichever listener it came on (the table: [`super::endpoints`]), and what the policy
//! core knows of the connection a request came on.

use std::net::SocketAddr;

use http::{HeaderValue, Method, Request, Response};

use super::endpoints::{Handler, Own};
use crate::admin::{self, Caller};
use crate::auth::endpoints::{self, EndpointBody};
use crate::body::GatewayBody;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::health;
use crate::proxy;
use crate::runtime::Runtime;

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Main,
    Admin,
}

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

/// Answers an own endpoint that [`super::endpoints::admit`] let through (its method and, when
/// admin-only, its caller already checked). The admin listener's peers are its clients: it
/// trusts no forwarded address.
pub async fn serve(
    gw: &Gateway,
    rt: &Runtime,
    conn: &ConnInfo,
    listener: Listener,
    own: Own,
    request_id: &HeaderValue,
    mut req: Request<EndpointBody>,
) -> Result<Response<GatewayBody>, GatewayError> {
    // For the audit trail of the endpoint (only own endpoints carry it: forwarded requests
    // never allocate the extension map).
    let id = String::from_utf8_lossy(request_id.as_bytes()).into_owned();
    req.extensions_mut().insert(crate::audit::RequestId(id));
    let main = listener == Listener::Main;
    let client = match main {
        true => proxy::client_address(req.headers(), conn.peer.ip(), |ip| rt.is_trusted(ip)),
        false => conn.peer.ip(),
    };
    // Who the admin API records as acting (admit checked the token; `None` is not reached).
    let caller = |req: &Request<EndpointBody>| {
        let identity = own.admin.clone().ok_or(GatewayError::TokenMissing)?;
        let context = crate::audit::Context::of(req.headers(), client, req.extensions().get());
        Ok::<_, GatewayError>(Caller { identity, context })
    };
    let query = req.uri().query();
    match own.endpoint.handler {
        Handler::Healthz => Ok(health::healthz()),
        Handler::Readyz if main => health::readyz(gw).await,
        Handler::Readyz => health::readyz_detailed(gw, rt).await,
        Handler::Jwks => Ok(endpoints::jwks(rt)),
        Handler::Auth(ep) => endpoints::handle(gw, rt, ep, req, client, own.admin.clone()).await,
        Handler::Metrics => health::metrics(gw),
        Handler::StatusPage => admin::status::serve(req.uri().path()).ok_or(GatewayError::NoRoute),
        Handler::AdminSessions if req.method() == Method::GET => admin::sessions::list(gw, rt, query).await,
        Handler::AdminSessions => admin::sessions::end_of_login(gw, rt, query, &caller(&req)?).await,
        Handler::AdminSession => {
            let id = own.endpoint.parameter(req.uri().path());
            admin::sessions::end_one(gw, rt, id, query, &caller(&req)?).await
        }
        Handler::AdminAudit => admin::audit::list(gw, rt, query).await,
    }
}
