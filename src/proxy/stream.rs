//! An upstream socket and its place under the upstream's `max_connections` (SPEC §2): one
//! descriptor per connection, whichever transport speaks on it.

use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

/// An upstream socket, holding its place under the upstream's cap while it is open
/// (in use or idle in the pool).
pub struct UpstreamStream {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl UpstreamStream {
    pub(super) fn new(stream: TcpStream, slot: OwnedSemaphorePermit) -> Self {
        Self { stream, _slot: slot }
    }
}

impl std::ops::Deref for UpstreamStream {
    type Target = TcpStream;
    fn deref(&self) -> &TcpStream {
        &self.stream
    }
}

impl std::ops::DerefMut for UpstreamStream {
    fn deref_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}
