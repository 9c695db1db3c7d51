//! Response and request bodies: one boxed type for whatever the proxy sends (a buffer, an
//! origin's streaming body, chunks read from the cache), and the wrapper that counts the bytes
//! a client received and writes the request's access-log line when the body ends or is dropped.
use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::Stream;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::{BodyExt as _, Empty, Full, StreamBody, combinators::UnsyncBoxBody};

use super::ctx::AccessLog;

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
    use futures::StreamExt as _;
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

use futures::StreamExt as _;

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(mut log) = self.log.take() {
            // hyper stops polling a body that says it has ended.
            log.complete = self.inner.is_end_stream();
        }
    }
}

/// Counts what the client receives and logs the request when done.
pub struct Logged {
    inner: Body,
    log: Option<AccessLog>,
}

impl Logged {
    /// Wrap `inner`; `log` is written when the body ends, fails or is dropped.
    pub fn new(inner: Body, log: AccessLog) -> Logged {
        Logged {
            inner,
            log: Some(log),
        }
    }
}

impl http_body::Body for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let res = Pin::new(&mut self.inner).poll_frame(cx);
        match &res {
            Poll::Ready(Some(Ok(f))) => {
                if let (Some(d), Some(log)) = (f.data_ref(), self.log.as_mut()) {
                    log.bytes += d.len() as u64;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(mut log) = self.log.take() {
                    log.error = Some(e.to_string());
                }
            }
            Poll::Ready(None) => {
                if let Some(mut log) = self.log.take() {
                    log.complete = true;
                }
            }
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
