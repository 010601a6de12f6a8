//! What both transports forward with: the header policy, the upstream-answer rule, who is to
//! blame for a failure, and the upstream connections (pooled, capped, waited for in turn).
//! Forwarding itself is each transport's: `crate::fastpath` over bytes, `crate::server::forward`
//! over hyper's types (a request without a body through `exchange`, over bytes too); this
//! module knows neither, nor the policy core.

pub mod exchange;
mod failure;
mod headers;
mod pool;
pub mod response;
mod room;
mod stream;
mod upstream;

pub use exchange::BytesBody;
pub use failure::{Blame, Failure};
pub use headers::{
    Forwarding, GatewayLines, HOP_BY_HOP, RequestFate, ResponseFate, UpstreamHead, X_REQUEST_ID,
    client_address, is_gateway_owned, is_hop_by_hop, line, named_in, prepare_response, request_fate,
    request_line, response_fate, write_gateway_lines, write_upstream_request,
};
pub use stream::UpstreamStream;
pub use upstream::{Balance, Upstream, UpstreamPool, spawn_upkeep};
