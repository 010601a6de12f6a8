//! hyper's path over bytes: a request goes out as HTTP/1.1 bytes, its head written from the
//! `HeaderMap` by the header policy (`super::headers::write_upstream_request`), its body after
//! it as it comes, on the pooled plain sockets
//! the fast path uses, and its answer is read by the one response-head reader and framing rule
//! (`super::response`); the response body is streamed from the socket, which goes back to the
//! pool at its end. hyper's client (its dispatcher, encoder and a copy of the request kept for
//! a resend) cost a fifth of an HTTP/2 request's instructions, and kept connections apart from
//! the fast path's. An upgrade is sent the same way; its 101 leaves the socket to the tunnel
//! ([`BytesBody::into_tunnel`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt;

use http_body_util::BodyExt;

use super::pool::Connections;
use super::response::{self, Framing, ResponseHead};
use super::{Failure, UpstreamStream};
use crate::body::LimitedBody;
use crate::framing::{ChunkedScan, Decoded, LAST_CHUNK, write_chunk};

/// What one read of a response body asks for.
const READ_SIZE: usize = 16 * 1024;

/// How a request goes out and is answered, beside its head.
#[derive(Clone, Copy)]
pub struct Outgoing {
    pub head_request: bool,
    /// It asks for an upgrade (the header policy keeps only one it tunnels).
    pub upgrade: bool,
    /// Its body goes chunked.
    pub chunked: bool,
}

impl Outgoing {
    /// Not HEAD, no upgrade, no body of unknown length: a health check's GET.
    pub const PLAIN: Self = Self { head_request: false, upgrade: false, chunked: false };
}

/// Sends a request (its head as `super::headers::write_upstream_request` wrote it, its body,
/// if any, after it) and reads the response head. A reused
/// connection that ended before a whole answer is tried once more on a fresh one where
/// `resend(failure, reused)` (the policy core's rule) allows it: only a request without a
/// body. A failure to connect leaves the body unread, for another upstream.
pub async fn send(
    conns: &Arc<Connections>,
    head: &[u8],
    req: Outgoing,
    mut body: Option<&mut LimitedBody>,
    resend: impl Fn(&Failure, bool) -> bool,
) -> Result<Response<BytesBody>, Failure> {
    let mut up = BytesMut::new();
    let mut fresh = false;
    loop {
        let (mut stream, reused) = conns.stream(fresh).await?;
        // Let the other requests that are ready be read first, so their upstream writes go
        // out together (as the fast path does).
        tokio::task::yield_now().await;
        let sent = match body.as_deref_mut() {
            None => stream.write_all(head).await.map_err(Failure::from_io),
            Some(body) => write_body(&mut stream, head, body, req.chunked).await,
        };
        let answered = match sent {
            Ok(()) => {
                response::read_head(&mut stream, &mut up, req.head_request, req.upgrade, Vec::new()).await
            }
            Err(f) => Err(f),
        };
        match answered {
            Ok(answered) => return answer(answered, up, stream, conns),
            Err(f) if body.is_none() && resend(&f, reused) => {
                tracing::debug!(failure = ?f, "a reused upstream connection failed; sending again");
                fresh = true;
            }
            Err(f) => return Err(f),
        }
    }
}

/// Writes the head in `out` and the body after it, frame by frame as the client sends it
/// (the head goes with the first frame).
async fn write_body(
    stream: &mut UpstreamStream,
    head: &[u8],
    body: &mut LimitedBody,
    chunked: bool,
) -> Result<(), Failure> {
    let out = &mut head.to_vec();
    while let Some(frame) = body.frame().await {
        // The body's fate (`crate::body::body_fate`) says whose fault this was.
        let frame = frame.map_err(|e| Failure::Client(e.to_string()))?;
        // Trailers are not relayed (on either transport).
        let Ok(data) = frame.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        if chunked {
            write_chunk(out, &data);
        } else {
            out.extend_from_slice(&data);
        }
        stream.write_all(out).await.map_err(Failure::from_io)?;
        out.clear();
    }
    if chunked {
        out.extend_from_slice(LAST_CHUNK);
    }
    stream.write_all(out).await.map_err(Failure::from_io)
}

/// The response for a head at the start of `up`: its headers share the head's bytes.
fn answer(
    head: ResponseHead,
    mut up: BytesMut,
    stream: UpstreamStream,
    conns: &Arc<Connections>,
) -> Result<Response<BytesBody>, Failure> {
    let bytes = up.split_to(head.len).freeze();
    let mut headers = HeaderMap::with_capacity(head.headers.len());
    for (name, value) in &head.headers {
        let name = HeaderName::from_bytes(&bytes[name.clone()])
            .map_err(|_| Failure::Upstream("invalid response header name".into()))?;
        let value = HeaderValue::from_maybe_shared(bytes.slice(value.clone()))
            .map_err(|_| Failure::Upstream("invalid response header value".into()))?;
        headers.append(name, value);
    }
    let status =
        StatusCode::from_u16(head.status).map_err(|_| Failure::Upstream("no valid status".into()))?;
    let mut resp = Response::new(BytesBody {
        state: match head.framing {
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(ChunkedScan::new()),
            Framing::UntilClose => State::UntilClose,
        },
        stream: Some(stream),
        buf: up,
        conns: conns.clone(),
        reusable: head.reusable,
        switched: status == StatusCode::SWITCHING_PROTOCOLS,
    });
    *resp.status_mut() = status;
    *resp.version_mut() = Version::HTTP_11;
    *resp.headers_mut() = headers;
    // A code without a phrase of its own keeps the upstream's (`response::reason`).
    let reason = head.reason(&bytes);
    if status.canonical_reason().is_none() && !reason.is_empty() {
        if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(reason.as_bytes()) {
            resp.extensions_mut().insert(phrase);
        }
    }
    // A 101's socket is the tunnel's, not the pool's.
    if resp.body().state == State::Done && !resp.body().switched {
        resp.body_mut().finish();
    }
    Ok(resp)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Bytes of the body still to come.
    Length(u64),
    Chunked(ChunkedScan),
    UntilClose,
    Done,
}

/// A response body read from its socket as its framing says; the socket goes back to the pool
/// when the body has been read exactly to its end and the upstream keeps the connection, and
/// is closed when the body is dropped before.
pub struct BytesBody {
    state: State,
    stream: Option<UpstreamStream>,
    /// Read, not yet handed on.
    buf: BytesMut,
    conns: Arc<Connections>,
    reusable: bool,
    /// A 101: the socket is the tunnel's.
    switched: bool,
}

impl BytesBody {
    /// After a 101: the socket, and what the upstream sent after its head (the tunnel's first
    /// bytes). `None` for any other answer.
    pub fn into_tunnel(mut self) -> Option<(UpstreamStream, Bytes)> {
        if !self.switched {
            return None;
        }
        let stream = self.stream.take()?;
        Some((stream, std::mem::take(&mut self.buf).freeze()))
    }

    /// The body has ended: its connection back to the pool if nothing beyond it was read.
    fn finish(&mut self) {
        self.state = State::Done;
        if let Some(stream) = self.stream.take() {
            if self.reusable && self.buf.is_empty() {
                self.conns.keep_stream(stream);
            }
        }
    }

    /// Reads more from the socket: the number of bytes, 0 at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(stream) = self.stream.as_mut() else { return Poll::Ready(Ok(0)) };
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut **stream), cx, &mut self.buf)
    }

    fn data(&mut self, n: usize) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        Poll::Ready(Some(Ok(Frame::data(self.buf.split_to(n).freeze()))))
    }
}

fn ended_early() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "upstream closed inside the body")
}

impl Body for BytesBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Length(left) => {
                    if !this.buf.is_empty() {
                        let n = usize::try_from(*left).unwrap_or(usize::MAX).min(this.buf.len());
                        *left -= n as u64;
                        let frame = this.data(n);
                        if this.state == State::Length(0) {
                            this.finish();
                        }
                        return frame;
                    }
                }
                State::Chunked(scan) => match scan.decode(&this.buf) {
                    Decoded::Data(0) | Decoded::Framing(0) => {}
                    Decoded::Data(n) => return this.data(n),
                    Decoded::Framing(n) => {
                        this.buf.advance(n);
                        continue;
                    }
                    Decoded::End(n) => {
                        this.buf.advance(n);
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Decoded::Invalid => {
                        this.stream = None;
                        this.state = State::Done;
                        let e = io::Error::new(
                            io::ErrorKind::InvalidData,
                            "bad chunked framing from the upstream",
                        );
                        return Poll::Ready(Some(Err(e)));
                    }
                },
                State::UntilClose => {
                    if !this.buf.is_empty() {
                        let n = this.buf.len();
                        return this.data(n);
                    }
                }
            }
            // Nothing to hand on in what was read: read more.
            let n = ready!(this.poll_fill(cx))?;
            if n == 0 {
                // The end of a body that ends with its connection; any other ended early.
                let until_close = this.state == State::UntilClose;
                this.stream = None;
                this.state = State::Done;
                return Poll::Ready((!until_close).then(|| Err(ended_early())));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
