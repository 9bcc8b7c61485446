//! The one body type the pipeline moves around: boxed, streaming.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};

/// Errors a body can yield.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming body (downstream request, upstream response, or a small
/// in-memory body).
pub type Body = BoxBody<Bytes, BoxError>;

/// A body holding `b`.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Boxes any body whose error converts to [`BoxError`].
pub fn boxed<B>(b: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(Into::into).boxed()
}

/// Why the gateway cut a body off.
#[derive(Debug, Clone, Copy, thiserror::Error)]
pub enum BodyCut {
    /// No data came for this long.
    #[error("no body data for {} ms", .0.as_millis())]
    Idle(std::time::Duration),
    /// More bytes than allowed.
    #[error("the body is larger than {0} bytes")]
    TooLarge(u64),
}

/// A body that fails with [`BodyCut::Idle`] when its next frame takes
/// longer than `idle` (a stalled upstream must not hold a client's
/// response open forever).
pub struct IdleTimeout<B> {
    inner: B,
    idle: std::time::Duration,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<B> IdleTimeout<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, idle: std::time::Duration) -> Self {
        IdleTimeout {
            inner,
            idle,
            sleep: None,
        }
    }
}

/// Polls the idle timer of a body that has no frame ready: true when it
/// fired. The timer is made on the first wait and reset after each frame.
pub fn idle_fired(
    sleep: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    idle: std::time::Duration,
    cx: &mut std::task::Context<'_>,
) -> bool {
    use std::future::Future as _;
    let s = sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
    s.as_mut().poll(cx).is_ready()
}

/// Restarts an idle timer after a frame arrived.
pub fn idle_reset(
    sleep: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    idle: std::time::Duration,
) {
    if let Some(s) = sleep.as_mut() {
        s.as_mut().reset(tokio::time::Instant::now() + idle);
    }
}

impl<B> http_body::Body for IdleTimeout<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(f) => {
                idle_reset(&mut this.sleep, this.idle);
                Poll::Ready(f.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                if idle_fired(&mut this.sleep, this.idle, cx) {
                    Poll::Ready(Some(Err(Box::new(BodyCut::Idle(this.idle)))))
                } else {
                    Poll::Pending
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
