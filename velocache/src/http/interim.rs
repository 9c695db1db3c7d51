//! 1xx interim responses from the origin (`103 Early Hints`, `102 Processing`, …) relayed to an
//! HTTP/1.1 client ahead of its final response, as RFC 9110 §15.2 asks of a proxy, and never
//! stored (the cache only ever sees the final response).
//!
//! hyper's client reports an origin's 1xx heads through a callback on the request
//! (`hyper::ext::on_informational`), but its server cannot send one: a service returns one
//! response. So the client connection's stream is wrapped in [`InterimIo`], and the callback
//! hands the head to its [`InterimSender`]. The stream writes queued heads only where they cannot
//! land inside another message: hyper calls a stream's `poll_flush` only once its own write
//! buffer is empty, so a head queued while the stream is *clean* (flushed, nothing written since)
//! goes out before the next byte hyper writes, which is the head of the response it belongs to.
//! A head that arrives while the previous response is still being written (a client not reading)
//! is dropped and counted: a 1xx is advice, and the final response must not be corrupted for it.
//!
//! HTTP/2 clients get no 1xx from us: hyper's HTTP/2 server has no way to send one either.
use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll, Waker},
};

use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::cache::policy::is_hop_by_hop;

#[derive(Default)]
struct Shared {
    /// Serialised heads waiting for the stream.
    queue: Vec<u8>,
    /// hyper's buffer is empty and nothing was written since (see the module's doc).
    clean: bool,
    /// Who to wake so that hyper polls the stream again.
    waker: Option<Waker>,
}

/// The end the fetch path holds: relays one origin 1xx head to the client.
#[derive(Clone)]
pub struct InterimSender {
    shared: Arc<Mutex<Shared>>,
}

/// Why an interim head was not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRelayed {
    /// 100 and 101 belong to the hop (`Expect`, `Upgrade`): the gateway answers those itself.
    HopStatus,
    /// The previous response was still being written.
    Busy,
}

impl InterimSender {
    /// Queue `status` with `headers` for the client (hop-by-hop fields dropped).
    pub fn relay(&self, status: StatusCode, headers: &http::HeaderMap) -> Result<(), NotRelayed> {
        if !status.is_informational()
            || status == StatusCode::CONTINUE
            || status == StatusCode::SWITCHING_PROTOCOLS
        {
            return Err(NotRelayed::HopStatus);
        }
        let mut head = format!(
            "HTTP/1.1 {} {}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("Informational")
        )
        .into_bytes();
        for (name, value) in headers {
            if is_hop_by_hop(name) {
                continue;
            }
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if !s.clean {
            return Err(NotRelayed::Busy);
        }
        s.queue.extend_from_slice(&head);
        if let Some(w) = s.waker.take() {
            w.wake();
        }
        Ok(())
    }
}

/// A client stream that can carry interim heads between hyper's messages.
pub struct InterimIo<S> {
    inner: S,
    shared: Arc<Mutex<Shared>>,
    /// Taken from the queue, being written.
    sending: Vec<u8>,
    sent: usize,
}

impl<S> InterimIo<S> {
    /// Wrap a fresh client connection (nothing written yet: clean).
    pub fn new(inner: S) -> (InterimIo<S>, InterimSender) {
        let shared = Arc::new(Mutex::new(Shared {
            clean: true,
            ..Shared::default()
        }));
        let io = InterimIo {
            inner,
            shared: shared.clone(),
            sending: Vec::new(),
            sent: 0,
        };
        (io, InterimSender { shared })
    }

    /// Note who to wake, take what is queued; `dirty`: hyper is about to write.
    fn take_queue(&mut self, cx: &Context<'_>, dirty: bool) {
        let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if self.sending.is_empty() && !s.queue.is_empty() {
            self.sending = std::mem::take(&mut s.queue);
            self.sent = 0;
        }
        if dirty {
            s.clean = false;
        }
        match &s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.waker = Some(cx.waker().clone()),
        }
    }
}

impl<S: AsyncWrite + Unpin> InterimIo<S> {
    /// Write out the interim heads taken from the queue.
    fn poll_send_interim(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.sending.len() {
            let n = match Pin::new(&mut self.inner).poll_write(cx, &self.sending[self.sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            self.sent += n;
        }
        self.sending.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for InterimIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for InterimIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.take_queue(cx, true);
        std::task::ready!(this.poll_send_interim(cx))?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.take_queue(cx, true);
        std::task::ready!(this.poll_send_interim(cx))?;
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.take_queue(cx, false);
        std::task::ready!(this.poll_send_interim(cx))?;
        std::task::ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        // hyper flushes the stream only with its own buffer empty: between messages now.
        let mut s = this.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if s.queue.is_empty() {
            s.clean = true;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpStream,
    };

    use super::*;
    use crate::http::test_harness::{proxy_for, settle};

    fn hints() -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(
            "link",
            "</style.css>; rel=preload; as=style".parse().unwrap(),
        );
        h.insert("connection", "close".parse().unwrap());
        h
    }

    #[tokio::test]
    async fn a_head_queued_between_messages_goes_out_before_the_next_write() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let (mut io, tx) = InterimIo::new(a);
        tx.relay(StatusCode::from_u16(103).unwrap(), &hints())
            .unwrap();
        io.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        io.flush().await.unwrap();
        drop(io);
        let mut got = String::new();
        b.read_to_string(&mut got).await.unwrap();
        assert_eq!(
            got,
            "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload; as=style\r\n\r\n\
             HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn a_head_is_dropped_while_a_message_is_being_written_and_hop_codes_never_pass() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let (mut io, tx) = InterimIo::new(a);
        io.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nab")
            .await
            .unwrap();
        assert_eq!(
            tx.relay(StatusCode::from_u16(103).unwrap(), &hints()),
            Err(NotRelayed::Busy)
        );
        io.write_all(b"c").await.unwrap();
        io.flush().await.unwrap();
        for code in [100, 101] {
            assert_eq!(
                tx.relay(StatusCode::from_u16(code).unwrap(), &hints()),
                Err(NotRelayed::HopStatus)
            );
        }
        drop(io);
        let mut got = String::new();
        b.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc");
    }

    // Through the proxy, against an origin that sends hints.
    /// An origin that answers every request with a `103 Early Hints` naming its path, then the
    /// final response (hyper's server cannot send a 1xx, so this one writes bytes).
    async fn early_hints_origin() -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end + 4);
                        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                        let reply = format!(
                            "HTTP/1.1 103 Early Hints\r\nLink: <{path}.css>; rel=preload\r\n\r\n\
                         HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: {}\r\n\r\n{path}",
                            path.len()
                        );
                        if s.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    /// Read one final response (and any 1xx before it) from a raw connection.
    async fn read_response(c: &mut TcpStream) -> String {
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&got).to_string();
            // The final response is the first head that is not 1xx; its body is Content-Length long.
            let mut at = 0;
            while let Some(end) = text[at..].find("\r\n\r\n") {
                let head = &text[at..at + end];
                let body_at = at + end + 4;
                if head.starts_with("HTTP/1.1 1") {
                    at = body_at;
                    continue;
                }
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_string)
                    })
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if text.len() >= body_at + len {
                    return text[..body_at + len].to_string();
                }
                break;
            }
            let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut chunk))
                .await
                .expect("the proxy answers")
                .unwrap();
            assert!(n > 0, "connection closed after {text:?}");
            got.extend_from_slice(&chunk[..n]);
        }
    }

    #[tokio::test]
    async fn early_hints_from_the_origin_reach_the_client_before_the_response_and_are_never_stored()
    {
        let origin = early_hints_origin().await;
        let proxy = proxy_for(origin, "", |_| {}, Vec::new()).await;
        let mut c = TcpStream::connect(proxy).await.unwrap();
        // Two misses on one keep-alive connection: each gets its own hints, then its response.
        for path in ["/page", "/other"] {
            c.write_all(format!("GET {path} HTTP/1.1\r\nHost: origin.test\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let got = read_response(&mut c).await;
            let hints =
                format!("HTTP/1.1 103 Early Hints\r\nlink: <{path}.css>; rel=preload\r\n\r\n");
            assert!(got.starts_with(&hints), "{path}: {got:?}");
            let rest = &got[hints.len()..];
            assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{path}: {rest:?}");
            assert!(
                rest.to_ascii_lowercase().contains("x-cache-status: miss"),
                "{rest:?}"
            );
            assert!(
                !rest.to_ascii_lowercase().contains("link:"),
                "hints stay out of the final head"
            );
            assert!(rest.ends_with(path), "{rest:?}");
        }
        settle().await;
        // The stored response is the final one: a hit has no hints and no trace of them.
        c.write_all(b"GET /page HTTP/1.1\r\nHost: origin.test\r\n\r\n")
            .await
            .unwrap();
        let hit = read_response(&mut c).await;
        assert!(hit.starts_with("HTTP/1.1 200 OK\r\n"), "{hit:?}");
        assert!(
            hit.to_ascii_lowercase().contains("x-cache-status: hit"),
            "{hit:?}"
        );
        assert!(!hit.to_ascii_lowercase().contains("link:"), "{hit:?}");
        assert!(hit.ends_with("/page"));
    }
}
