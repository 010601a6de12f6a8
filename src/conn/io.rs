//! The connection's IO as both transports read it: every byte read counts as activity; on
//! hyper's path every byte is shown to the framing watch, and a head is given to hyper only once
//! it is complete and readable, and one nobody can read is answered in its place with the SPEC §3
//! body. The fast path frames its own requests by the same rules (and answers unreadable heads
//! itself), so the watch sleeps while it reads and resumes at the head it hands to hyper.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::activity::Activity;
use crate::fastpath;
use crate::framing::{Finding, FramingWatch, Unreadable};
use crate::gateway::Gateway;

/// The connection's IO, noting the time of every successful read or write and, on hyper's path,
/// showing what the client sends to the framing watch. `pre` holds bytes the fast path read
/// before handing the connection to hyper, which reads them first (the watch sees them then).
pub(super) struct ActivityIo<T> {
    inner: T,
    activity: Arc<Activity>,
    watch: FramingWatch,
    /// Bytes read from the client and not yet given to hyper.
    pre: BytesMut,
    /// hyper reads from here (before, the fast path read its own heads).
    pub(super) hyper: bool,
    /// Bytes read from the client, and the offset in them of the next byte hyper gets.
    read: u64,
    pos: u64,
    /// A head nobody can read, found by the watch: hyper gets nothing from its first byte on.
    refusal: Option<Refusal>,
    gw: Arc<Gateway>,
    /// hyper has written bytes it has not flushed yet.
    unflushed: bool,
}

/// The answer to a head nobody can read, written in its place (`ActivityIo::cut_off`).
struct Refusal {
    at: u64,
    why: Unreadable,
    out: Option<Bytes>,
}

impl<T> ActivityIo<T> {
    pub(super) fn new(inner: T, activity: Arc<Activity>, watch: FramingWatch, gw: Arc<Gateway>) -> Self {
        Self {
            inner,
            activity,
            watch,
            pre: BytesMut::new(),
            hyper: true,
            read: 0,
            pos: 0,
            refusal: None,
            gw,
            unflushed: false,
        }
    }

    /// hyper serves the rest of the connection, starting with `pre` (read, not yet served).
    pub(super) fn hand_to_hyper(&mut self, pre: BytesMut) {
        self.pos = self.read - pre.len() as u64;
        if !self.hyper {
            // The fast path framed what it read itself; `pre` starts at the head it hands on.
            self.watch.resume(self.pos, self.activity.requests.load(Ordering::Relaxed));
            self.watch_over(&pre, self.activity.last_ms.load(Ordering::Relaxed));
        }
        self.pre = pre;
        self.hyper = true;
    }

    /// How many bytes from `pos` on hyper may have: those before a head that is not complete
    /// yet (so hyper never judges a head by rules of its own) or that nobody can read.
    fn allowed(&self) -> usize {
        let mut end = u64::MAX;
        if let Some(r) = &self.refusal {
            end = end.min(r.at);
        }
        if let Some(start) = self.watch.pending_head_start() {
            end = end.min(start);
        }
        if end == u64::MAX {
            return usize::MAX;
        }
        usize::try_from(end.saturating_sub(self.pos)).unwrap_or(usize::MAX - 1)
    }

    /// Takes note of bytes read from the client: activity, and what the watch finds in them.
    fn observe(&mut self, data: &[u8]) {
        let now = self.moved(data);
        self.watch_over(data, now);
    }

    /// Counts bytes read from the client as activity; returns the time.
    fn moved(&mut self, data: &[u8]) -> u64 {
        if self.read == 0 && data.starts_with(b"PRI * HTTP/2.0") {
            self.activity.h2.store(true, Ordering::Relaxed);
        }
        self.read += data.len() as u64;
        self.activity.moved()
    }

    /// Shows bytes read from the client to the framing watch.
    fn watch_over(&mut self, data: &[u8], now: u64) {
        if !self.watch.is_off() {
            match self.watch.feed(data) {
                Finding::Ambiguous(i) => self.activity.malformed.store(i + 1, Ordering::Relaxed),
                Finding::Unreadable { at, why } => self.refusal = Some(Refusal { at, why, out: None }),
                Finding::Fine => {}
            }
        }
        self.activity.head_pending(self.watch.head_pending(), now);
    }

    /// What hyper reads where a refused head begins. While a response is in flight or hyper's
    /// bytes are not all out: nothing yet (hyper reads again once it is done). Then the refusal
    /// is written in the head's place, the connection shut, and hyper reads the end.
    fn cut_off(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>
    where
        T: AsyncWrite + Unpin,
    {
        let busy = self.activity.in_flight.load(Ordering::Acquire) != 0
            || self.activity.responding.load(Ordering::Acquire) != 0;
        if busy || self.unflushed {
            return Poll::Pending;
        }
        if let Some(mut out) = self.refusal_bytes() {
            while !out.is_empty() {
                match Pin::new(&mut self.inner).poll_write(cx, &out) {
                    Poll::Ready(Ok(n)) if n > 0 => out.advance(n),
                    Poll::Ready(_) => break,
                    Poll::Pending => {
                        if let Some(r) = self.refusal.as_mut() {
                            r.out = Some(out);
                        }
                        return Poll::Pending;
                    }
                }
            }
            if let Some(r) = self.refusal.as_mut() {
                r.out = Some(Bytes::new());
            }
        }
        ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
        ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
        Poll::Ready(Ok(()))
    }

    /// The refusal's bytes, made once (SPEC §3 body, a new request id, `Connection: close`).
    fn refusal_bytes(&mut self) -> Option<Bytes> {
        let r = self.refusal.as_mut()?;
        if r.out.is_none() {
            let e = r.why.into_error();
            let request_id = self.gw.new_request_id();
            crate::gate::record::log_failure(&e, &request_id);
            let mut out = Vec::new();
            fastpath::write_own(&mut out, e.into_response(), request_id.as_bytes(), true, false);
            r.out = Some(Bytes::from(out));
        }
        r.out.clone()
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for ActivityIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.hyper {
            // The fast path reads and frames its own requests by the watch's rules (and answers
            // heads nobody can read, and notes a head pending): the watch resumes at a handoff.
            let before = buf.filled().len();
            let r = Pin::new(&mut this.inner).poll_read(cx, buf);
            let got = buf.filled().len() - before;
            if matches!(r, Poll::Ready(Ok(()))) && got > 0 {
                this.moved(&buf.filled()[before..]);
            }
            return r;
        }
        loop {
            let allowed = this.allowed();
            if !this.pre.is_empty() && allowed > 0 {
                let n = this.pre.len().min(buf.remaining()).min(allowed);
                buf.put_slice(&this.pre[..n]);
                this.pre.advance(n);
                this.pos += n as u64;
                return Poll::Ready(Ok(()));
            }
            if this.refusal.as_ref().is_some_and(|r| this.pos >= r.at) {
                return this.cut_off(cx);
            }
            if this.pre.is_empty() && allowed == usize::MAX {
                // The usual case: straight into hyper's buffer, and what of it hyper may not
                // have yet (a head not complete, or refused) is kept back.
                let before = buf.filled().len();
                ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                let got = buf.filled().len() - before;
                if got == 0 {
                    return Poll::Ready(Ok(()));
                }
                this.observe(&buf.filled()[before..]);
                let n = this.allowed().min(got);
                this.pre.extend_from_slice(&buf.filled()[before + n..]);
                buf.set_filled(before + n);
                this.pos += n as u64;
                if n > 0 {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            // Bytes are kept back: what comes next is kept behind them until hyper may have it.
            let mut chunk = [0u8; 4096];
            let mut more = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut more))?;
            if more.filled().is_empty() {
                // The client ended inside a head it never finished: hyper gets the end.
                this.pre.clear();
                return Poll::Ready(Ok(()));
            }
            this.observe(more.filled());
            this.pre.extend_from_slice(more.filled());
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ActivityIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved();
            self.unflushed = true;
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved();
            self.unflushed = true;
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(r, Poll::Ready(Ok(()))) && std::mem::take(&mut self.unflushed) && self.refusal.is_some() {
            // A refusal waits for hyper's bytes to be out: let hyper read again now.
            cx.waker().wake_by_ref();
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
