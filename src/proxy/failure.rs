//! How an exchange with an upstream fails and whose fault that is, for both transports; what
//! may then be tried again is the policy core's (`crate::gate::retry`).

use crate::error::GatewayError;

/// Why an exchange with an upstream failed.
#[derive(Debug)]
pub enum Failure {
    /// No connection could be opened: nothing was sent.
    Connect(String),
    /// The connection ended (closed or reset) before a whole response head arrived.
    Closed(String),
    /// The client's side broke: it left inside its body, or the body's framing was invalid.
    Client(String),
    /// The request body passed `max_body_bytes`.
    TooLarge,
    /// No answer within the route's timeout.
    Timeout,
    /// The upstream's connections are all in use (`max_connections`), and none came free
    /// within `connect_timeout`: nothing was sent.
    Busy,
    /// The upstream answered something that is not a response the gateway relays.
    Upstream(String),
}

/// Who a failure is to blame on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    Client,
    Upstream,
}

impl Failure {
    /// An upstream socket's error: a closed or reset connection, or another one.
    pub fn from_io(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                Failure::Closed(e.to_string())
            }
            _ => Failure::Upstream(e.to_string()),
        }
    }

    pub fn blame(&self) -> Blame {
        match self {
            Failure::Client(_) | Failure::TooLarge => Blame::Client,
            Failure::Connect(_)
            | Failure::Closed(_)
            | Failure::Timeout
            | Failure::Upstream(_)
            | Failure::Busy => Blame::Upstream,
        }
    }

    pub fn into_error(self) -> GatewayError {
        match self {
            Failure::Timeout => GatewayError::UpstreamTimeout,
            Failure::Busy => GatewayError::UpstreamBusy,
            Failure::TooLarge => GatewayError::TooLarge,
            Failure::Client(why) => GatewayError::Malformed(why),
            Failure::Connect(e) | Failure::Closed(e) | Failure::Upstream(e) => {
                GatewayError::UpstreamUnavailable(e)
            }
        }
    }
}
