//! Cache hits on plain HTTP/1.1 connections, their bodies sent with `sendfile(2)` straight from
//! the slice files: the head (and any byte that is not in a committed slice) still comes from
//! hyper, the stored bytes never pass through userspace.
//!
//! hyper owns the connection and writes what a body yields, so the file regions travel through
//! it in disguise. A plain TCP 80 connection's stream is a [`SendfileIo`] (innermost, under the
//! byte counter and the 1xx relay), and its requests carry the matching [`SendfileConn`] in their
//! `Ctx`. A cache body that may use it (`serve`: the proxy arms its [`Gate`] once no body tap
//! wants to see the bytes) hands each committed slice's [`FileRegion`] to the queue and yields
//! in its place a *placeholder*: a `Bytes` of the region's length pointing into [`PLACEHOLDER`],
//! static memory nothing else points into. hyper queues body buffers without copying them and
//! writes them with `writev` (the connection is built with `writev(true)`, so hyper's write
//! strategy is its queue, never the flattening copy), in order; when a buffer handed to
//! [`SendfileIo`] lies inside [`PLACEHOLDER`], the stream writes what precedes it as usual and
//! then sends that much of the queue's front region from its file. A partial write is a
//! partial write either way: hyper advances its buffer by what was written and hands the rest
//! back, whose offset inside the placeholder says where in the region to go on — checked
//! against the queue, so a placeholder out of step fails the connection instead of sending
//! wrong bytes. The zeros of [`PLACEHOLDER`] are never sent: only a stream that recognises
//! them is ever given any.
//!
//! TLS connections never get a [`SendfileConn`] (the bytes must be encrypted in userspace on a
//! kernel without kTLS), nor does HTTP/2.
use std::{
    collections::VecDeque,
    io,
    pin::Pin,
    sync::{
        Arc, LazyLock, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use tokio::{
    io::{AsyncRead, AsyncWrite, Interest, ReadBuf},
    net::TcpStream,
};

use crate::cache::FileRegion;

/// Longest region behind one placeholder (a longer one is yielded as several pieces).
pub const PLACEHOLDER_LEN: usize = 4 << 20;

/// What placeholders point into: zeroed pages from the allocator (an anonymous mapping at this
/// size), which cost no memory unless read — and nothing reads them.
static PLACEHOLDER: LazyLock<Box<[u8]>> =
    LazyLock::new(|| vec![0; PLACEHOLDER_LEN].into_boxed_slice());

/// A region whose placeholder hyper holds, and how much of it has been sent.
struct Queued {
    region: FileRegion,
    sent: u64,
}

type Queue = Arc<Mutex<VecDeque<Queued>>>;

/// A connection's side of the queue, for its bodies: turns regions into placeholders.
#[derive(Clone)]
pub struct SendfileConn {
    queue: Queue,
}

impl SendfileConn {
    /// The placeholder standing for `region` (at most [`PLACEHOLDER_LEN`] bytes long), queued
    /// for the connection's stream to send from the file.
    pub fn placeholder(&self, region: FileRegion) -> Bytes {
        let len = usize::try_from(region.len)
            .unwrap_or(PLACEHOLDER_LEN)
            .min(PLACEHOLDER_LEN);
        let region = FileRegion {
            len: len as u64,
            ..region
        };
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(Queued { region, sent: 0 });
        let all: &'static [u8] = &PLACEHOLDER;
        Bytes::from_static(&all[..len])
    }
}

/// Whether one response's body may yield placeholders: armed by the proxy when no body tap
/// needs to see its bytes (a capture, the ghost store), after the body was built.
#[derive(Clone, Default)]
pub struct Gate(Arc<AtomicBool>);

impl Gate {
    /// Let the body send its committed slices from their files.
    pub fn arm(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether it may.
    pub fn armed(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Where in [`PLACEHOLDER`] `buf` starts, if it is (part of) a placeholder.
fn placeholder_offset(buf: &[u8]) -> Option<u64> {
    let base = PLACEHOLDER.as_ptr() as usize;
    let at = (buf.as_ptr() as usize).checked_sub(base)?;
    (!buf.is_empty() && at < PLACEHOLDER_LEN).then_some(at as u64)
}

/// A plain client TCP stream that sends placeholders' regions with `sendfile`.
pub struct SendfileIo {
    inner: TcpStream,
    queue: Queue,
    /// `velocache_http_sendfile_bytes`.
    sent: Counter,
}

impl SendfileIo {
    /// Wrap a client connection; its requests get the returned [`SendfileConn`]. Bytes sent
    /// from files are counted into `sent`.
    pub fn new(inner: TcpStream, sent: Counter) -> (SendfileIo, SendfileConn) {
        let queue = Queue::default();
        let conn = SendfileConn {
            queue: queue.clone(),
        };
        (SendfileIo { inner, queue, sent }, conn)
    }

    /// Send `buf` (a placeholder, or its rest after a partial write; at offset `at` in it)
    /// from the front region's file.
    fn poll_sendfile(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        at: u64,
    ) -> Poll<io::Result<usize>> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(front) = queue.front_mut() else {
            return Poll::Ready(Err(io::Error::other(
                "a placeholder body buffer without its file region",
            )));
        };
        if at != front.sent || at + buf.len() as u64 > front.region.len {
            return Poll::Ready(Err(io::Error::other(
                "a placeholder body buffer out of step with its file region",
            )));
        }
        let inner = &self.inner;
        loop {
            ready!(inner.poll_write_ready(cx))?;
            let mut offset = i64::try_from(front.region.offset + front.sent)
                .map_err(|_| io::Error::other("file offset out of range"))?;
            let sent = inner.try_io(Interest::WRITABLE, || {
                nix::sys::sendfile::sendfile64(
                    inner,
                    &*front.region.fd,
                    Some(&mut offset),
                    buf.len(),
                )
                .map_err(io::Error::from)
            });
            match sent {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "a slice file is shorter than its region",
                    )));
                }
                Ok(n) => {
                    front.sent += n as u64;
                    if front.sent == front.region.len {
                        queue.pop_front();
                    }
                    self.sent.inc_by(n as u64);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for SendfileIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match placeholder_offset(buf) {
            Some(at) => this.poll_sendfile(cx, buf, at),
            None => Pin::new(&mut this.inner).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // What precedes the first placeholder goes out as usual; the placeholder on its own.
        let first = bufs
            .iter()
            .enumerate()
            .find_map(|(i, b)| placeholder_offset(b).map(|at| (i, at)));
        match first {
            None => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
            Some((0, at)) => this.poll_sendfile(cx, &bufs[0], at),
            Some((i, _)) => Pin::new(&mut this.inner).poll_write_vectored(cx, &bufs[..i]),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
