//! Response and request bodies: one boxed type for whatever the proxy sends (a buffer, an
//! origin's streaming body, chunks read from the cache), and the wrapper ([`Logged`]) that
//! counts the bytes a client received and, when the body ends, fails or is dropped, hands what
//! became of it ([`BodyEnd`]) to whoever logs the request.
use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::{BodyExt as _, Empty, Full, StreamBody, combinators::UnsyncBoxBody};

/// Boxed error of a body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The proxy's body type, both directions.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body of one buffer.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

/// A body from any other body (an origin's).
pub fn boxed<B>(b: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(Into::into).boxed_unsync()
}

/// A body from a stream of chunks.
pub fn from_stream<S, E>(s: S) -> Body
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    StreamBody::new(s.map(|r| r.map(Frame::data).map_err(Into::into))).boxed_unsync()
}

/// The data chunks of a body, as a stream (trailers are dropped).
pub fn data_stream<B>(body: B) -> impl Stream<Item = Result<Bytes, B::Error>> + Send + Unpin
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
{
    futures::stream::unfold(body, |mut b| async move {
        loop {
            match b.frame().await? {
                Ok(f) => match f.into_data() {
                    Ok(d) => return Some((Ok(d), b)),
                    Err(_) => continue,
                },
                Err(e) => return Some((Err(e), b)),
            }
        }
    })
    .boxed()
}

/// What became of a response body.
#[derive(Debug, Clone, Default)]
pub struct BodyEnd {
    /// Bytes sent.
    pub bytes: u64,
    /// Whether it ended (rather than failing or being dropped part-way).
    pub complete: bool,
    /// Why it broke off.
    pub error: Option<String>,
}

/// Told once how a body ended (and, if it wants, each chunk on the way).
pub trait OnEnd: Send + Unpin + 'static {
    /// A chunk is leaving for the client.
    fn on_data(&mut self, _data: &Bytes) {}

    /// The body ended, failed or was dropped.
    fn on_end(self, end: BodyEnd);
}

/// Counts what the client receives and reports the end of the body, once.
pub struct Logged<E: OnEnd> {
    inner: Body,
    bytes: u64,
    on_end: Option<E>,
}

impl<E: OnEnd> Logged<E> {
    /// Wrap `inner`; `on_end` is told when the body ends, fails or is dropped.
    pub fn new(inner: Body, on_end: E) -> Logged<E> {
        Logged {
            inner,
            bytes: 0,
            on_end: Some(on_end),
        }
    }

    fn end(&mut self, complete: bool, error: Option<String>) {
        if let Some(e) = self.on_end.take() {
            e.on_end(BodyEnd {
                bytes: self.bytes,
                complete,
                error,
            });
        }
    }
}

impl<E: OnEnd> Drop for Logged<E> {
    fn drop(&mut self) {
        // hyper stops polling a body that says it has ended.
        let complete = self.inner.is_end_stream();
        self.end(complete, None);
    }
}

impl<E: OnEnd> http_body::Body for Logged<E> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_frame(cx);
        match &res {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.bytes += d.len() as u64;
                    if let Some(e) = this.on_end.as_mut() {
                        e.on_data(d);
                    }
                }
            }
            Poll::Ready(Some(Err(e))) => this.end(false, Some(e.to_string())),
            Poll::Ready(None) => this.end(true, None),
            Poll::Pending => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
