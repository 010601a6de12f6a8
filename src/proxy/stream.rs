//! An upstream socket and its place under the upstream's `max_connections` (SPEC §2): one
//! descriptor per connection, whichever transport speaks on it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

/// A socket of the fast path, holding its place under the upstream's cap while it is open
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

/// The IO hyper's client connection speaks on: the socket shared with the pool, which asks the
/// kernel through it whether an idle connection is still open (no second descriptor, as a
/// duplicated one would be), and the connection's place under the cap.
pub(super) struct SharedStream {
    stream: Arc<TcpStream>,
    _slot: OwnedSemaphorePermit,
}

impl SharedStream {
    pub(super) fn new(stream: TcpStream, slot: OwnedSemaphorePermit) -> (Self, Arc<TcpStream>) {
        let stream = Arc::new(stream);
        (Self { stream: stream.clone(), _slot: slot }, stream)
    }
}

impl AsyncRead for SharedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            let room = buf.remaining();
            let mut read = None;
            let tried = self.stream.try_io(Interest::READABLE, || {
                // Into the uninitialised room as it is (tokio's `ReadBuf` is a `BufMut`).
                let n = self.stream.try_read_buf(&mut *buf)?;
                read = Some(n);
                // A short read emptied the socket: told as `WouldBlock`, so the readiness seen
                // before this read is cleared and nothing that came after it (as tokio's own
                // reads do). The pool then knows the connection is quiet without asking the
                // kernel (`pool::fit_for_reuse`).
                if n > 0 && n < room { Err(io::ErrorKind::WouldBlock.into()) } else { Ok(n) }
            });
            match (read, tried) {
                (Some(_), _) => return Poll::Ready(Ok(())),
                (None, Err(e)) if e.kind() == io::ErrorKind::WouldBlock => continue,
                (None, Err(e)) => return Poll::Ready(Err(e)),
                (None, Ok(_)) => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl AsyncWrite for SharedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write(data) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.stream).shutdown(std::net::Shutdown::Write))
    }
}
