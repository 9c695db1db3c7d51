//! DNS over TCP from clients: 2-byte length framing (RFC 1035 §4.2.2), several queries per
//! connection answered as they complete, in any order (RFC 7766 §6.2.1.1), and an idle timeout.
//!
//! Bytes enter through one buffered read (cancel-safe, so a query half-read while an answer
//! is being written is never lost), complete frames are cut out of the buffer and handed to
//! the [`RequestHandler`]; ready answers are written at once, pending ones when they resolve.
//! At most [`MAX_OUTSTANDING`] queries per connection wait for upstream; reading pauses beyond.
use std::{sync::Arc, time::Duration};

use bytes::{Buf, BytesMut};
use futures::{StreamExt, stream::FuturesUnordered};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::handler::{Request, RequestHandler, Response, Transport};
use crate::net::InterceptedTcp;

/// Queries of one connection waiting for an answer at the same time.
pub const MAX_OUTSTANDING: usize = 64;

/// Cut one complete frame out of `buf`, if there is one.
fn take_frame(buf: &mut BytesMut) -> Option<bytes::Bytes> {
    if buf.len() < 2 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
    if buf.len() < 2 + len {
        return None;
    }
    buf.advance(2);
    Some(buf.split_to(len).freeze())
}

async fn write_frame(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    answer: &[u8],
) -> std::io::Result<()> {
    let Ok(len) = u16::try_from(answer.len()) else {
        return Err(std::io::Error::other("answer larger than 64 KiB"));
    };
    let mut framed = Vec::with_capacity(answer.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(answer);
    w.write_all(&framed).await
}

/// Serve one client connection until it closes, errs, or stays idle for `idle`.
pub async fn serve_connection(
    handler: Arc<dyn RequestHandler>,
    conn: InterceptedTcp,
    idle: Duration,
    counter: prometheus_client::metrics::counter::Counter,
) {
    let InterceptedTcp {
        stream,
        client,
        orig_dst,
    } = conn;
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = BytesMut::with_capacity(4096);
    let mut pending = FuturesUnordered::new();
    let mut queries = 0u64;
    let mut eof = false;
    let mut deadline = tokio::time::Instant::now() + idle;
    let reason = 'conn: loop {
        while pending.len() < MAX_OUTSTANDING
            && let Some(frame) = take_frame(&mut buf)
        {
            queries += 1;
            counter.inc();
            deadline = tokio::time::Instant::now() + idle;
            let req = Request {
                bytes: frame,
                client,
                orig_dst,
                transport: Transport::Tcp,
            };
            match handler.handle(req) {
                Response::Ready(answer) => {
                    if let Err(e) = write_frame(&mut wr, &answer).await {
                        break 'conn format!("write: {e}");
                    }
                }
                Response::Pending(f) => pending.push(f),
                Response::Drop => {}
            }
        }
        if eof && pending.is_empty() {
            break "closed by client".to_string();
        }
        tokio::select! {
            Some(answer) = pending.next(), if !pending.is_empty() => {
                if let Some(answer) = answer
                    && let Err(e) = write_frame(&mut wr, &answer).await
                {
                    break format!("write: {e}");
                }
            }
            read = rd.read_buf(&mut buf), if !eof && pending.len() < MAX_OUTSTANDING => match read {
                Ok(0) => eof = true,
                Ok(_) => {}
                Err(e) => break format!("read: {e}"),
            },
            _ = tokio::time::sleep_until(deadline), if pending.is_empty() => {
                break "idle".to_string();
            }
            else => break "closed".to_string(),
        }
    };
    let _ = wr.shutdown().await;
    tracing::debug!(
        client = %client,
        orig_dst = %orig_dst,
        transport = "tcp",
        queries,
        reason,
        "dns connection closed"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_only_when_complete() {
        let mut buf = BytesMut::from(&[0u8, 3, 1, 2][..]);
        assert!(take_frame(&mut buf).is_none());
        buf.extend_from_slice(&[3, 0, 1]);
        assert_eq!(take_frame(&mut buf).unwrap().as_ref(), &[1, 2, 3]);
        assert!(take_frame(&mut buf).is_none());
        buf.extend_from_slice(&[8]);
        assert_eq!(take_frame(&mut buf).unwrap().as_ref(), &[8]);
        assert!(buf.is_empty());
    }
}
