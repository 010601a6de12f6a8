//! Body types: what the gateway answers with, and the request body it streams upstream.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Response, header};

use crate::error::GatewayError;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

/// A response is either produced by the gateway (`Full`: no allocation beyond its bytes) or
/// streamed from an upstream ([`Streamed`]).
pub type GatewayBody = Either<Full<Bytes>, Streamed>;

/// An upstream's response body, whatever `proxy` streams it with (its pooled connection goes
/// back when the body ends). Boxed so that this module, below `proxy`, need not name it: one
/// allocation per response hyper's path relays (the fast path writes bytes, no body type).
pub struct Streamed(Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send>>);

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Streamed {
    pub fn new<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self(Box::pin(http_body_util::BodyExt::map_err(body, Into::into)))
    }
}

impl Body for Streamed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

pub static JSON_CONTENT_TYPE: HeaderValue = HeaderValue::from_static("application/json; charset=utf-8");

pub fn full(bytes: impl Into<Bytes>) -> GatewayBody {
    Either::Left(Full::new(bytes.into()))
}

pub fn empty() -> GatewayBody {
    Either::Left(Full::new(Bytes::new()))
}

/// The client's request body on its way upstream, cut off past `max_body_bytes`.
/// The flag tells the proxy, once the upstream call fails, that the cause was the limit (413).
pub struct LimitedBody {
    inner: Option<Incoming>,
    remaining: u64,
    fate: Arc<AtomicU8>,
}

/// How a request body ended, as [`LimitedBody`] records it for the caller: the upstream
/// exchange fails either way, and this says whose fault that was.
pub mod body_fate {
    pub const READING: u8 = 0;
    /// Past the configured limit: 413.
    pub const TOO_LARGE: u8 = 1;
    /// The client's side broke (bad chunked framing, or it went away mid-body): not the
    /// upstream's failure.
    pub const CLIENT_FAILED: u8 = 2;
    /// Read to its end.
    pub const ENDED: u8 = 3;
}

#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the configured limit")]
pub struct BodyTooLarge;

impl LimitedBody {
    pub fn new(inner: Incoming, limit: u64, fate: Arc<AtomicU8>) -> Self {
        Self { inner: Some(inner), remaining: limit, fate }
    }

    pub fn empty() -> Self {
        Self { inner: None, remaining: 0, fate: Arc::new(AtomicU8::new(body_fate::READING)) }
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else { return Poll::Ready(None) };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.remaining {
                        this.fate.store(body_fate::TOO_LARGE, Ordering::Release);
                        this.inner = None;
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    this.remaining -= len;
                }
                if this.inner.as_ref().is_some_and(|b| b.is_end_stream()) {
                    this.fate.store(body_fate::ENDED, Ordering::Release);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.fate.store(body_fate::CLIENT_FAILED, Ordering::Release);
                this.inner = None;
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                this.fate.store(body_fate::ENDED, Ordering::Release);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// The SPEC §3 error response ([`crate::error`] says what each error is; this writes it).
impl GatewayError {
    /// The SPEC §3 response, with the headers some statuses require.
    pub fn into_response(self) -> Response<GatewayBody> {
        let body = serde_json::json!({ "errors": [self.code()], "message": self.message() });
        let mut resp = Response::new(full(Bytes::from(body.to_string())));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, crate::body::JSON_CONTENT_TYPE.clone());
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            GatewayError::TokenMissing => {
                h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            GatewayError::TokenInvalid(_) | GatewayError::TokenExpired | GatewayError::TokenReused => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            GatewayError::MethodNotAllowed { allow } => {
                h.insert(header::ALLOW, allow);
            }
            GatewayError::TooManyAttempts { retry_after_secs } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs.max(1)));
            }
            _ => {}
        }
        resp
    }
}
