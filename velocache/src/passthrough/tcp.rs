//! TCP splice to the original destination: connect, send the bytes already read, then move
//! both directions until both ends close — joined in the kernel by the relay when the caller has
//! one, else with `splice(2)` (or a copy for an end that is not a socket) — and log one `flow`
//! line with both byte counts.
use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, copy_bidirectional_with_sizes},
    net::TcpStream,
};
use tracing::{debug, info, warn};
use velocache_common::Service;

use super::{Counted, KernelRelay, zerocopy};
use crate::{
    flow::FlowTracker,
    net::{ClientAddr, InterceptedTcp, OrigDstAddr, TcpHandler},
};

/// Copy buffer per direction; large enough that bulk downloads are not syscall-bound.
const COPY_BUF: usize = 64 * 1024;

/// One end of a splice: a stream the splice can copy through. (A seam for the TLS peek and
/// for tests that splice an in-memory stream.)
pub trait SpliceEnd: AsyncRead + AsyncWrite + Unpin {
    /// The plain TCP socket underneath, if this end is one: then the splice moves bytes with
    /// `splice(2)` and never copies them through userspace.
    fn as_tcp(&self) -> Option<&TcpStream> {
        None
    }
}

impl SpliceEnd for TcpStream {
    fn as_tcp(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl SpliceEnd for tokio::io::DuplexStream {}

/// Splices every connection it is given to its original destination.
pub struct TcpSplice {
    service: Service,
    connect_timeout: Duration,
    flows: FlowTracker,
}

impl TcpSplice {
    /// A splice handler for `service`.
    pub fn new(service: Service, connect_timeout: Duration, flows: FlowTracker) -> Self {
        TcpSplice {
            service,
            connect_timeout,
            flows,
        }
    }
}

impl TcpHandler for TcpSplice {
    fn on_connection(&self, conn: InterceptedTcp) {
        let guard = self.flows.start();
        let service = self.service;
        let timeout = self.connect_timeout;
        tokio::spawn(async move {
            let InterceptedTcp {
                stream,
                client,
                orig_dst,
            } = conn;
            splice_to_origin(service, stream, client, orig_dst, &[], timeout).await;
            drop(guard);
        });
    }
}

/// Connect to `orig_dst`, send `prefix` (bytes already read from the client, e.g. a peeked
/// TLS ClientHello), then copy both ways until both sides close. Logs the flow line.
pub async fn splice_to_origin<S>(
    service: Service,
    client_stream: S,
    client: ClientAddr,
    orig_dst: OrigDstAddr,
    prefix: &[u8],
    connect_timeout: Duration,
) where
    S: SpliceEnd,
{
    splice_to_origin_with(
        None,
        service,
        client_stream,
        client,
        orig_dst,
        prefix,
        connect_timeout,
    )
    .await;
}

/// [`splice_to_origin`], joining the two sockets in the kernel with `relay` when there is one
/// and both ends are TCP sockets; `splice(2)` otherwise. The flow line's `path` says which:
/// `sockmap`, `splice` or `copy` (an end that is not a socket).
pub async fn splice_to_origin_with<S>(
    relay: Option<&KernelRelay>,
    service: Service,
    client_stream: S,
    client: ClientAddr,
    orig_dst: OrigDstAddr,
    prefix: &[u8],
    connect_timeout: Duration,
) where
    S: SpliceEnd,
{
    let started = Instant::now();
    let upstream = match tokio::time::timeout(connect_timeout, TcpStream::connect(orig_dst.0)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            warn!(service = service.name(), %client, %orig_dst, transport = "tcp", error = %e,
                "connecting to the original destination failed");
            return;
        }
        Err(_) => {
            warn!(service = service.name(), %client, %orig_dst, transport = "tcp",
                timeout_ms = connect_timeout.as_millis() as u64,
                "connecting to the original destination timed out");
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    if let (Some(relay), Some(tcp)) = (relay, client_stream.as_tcp()) {
        match relay.relay(tcp, &upstream, prefix).await {
            Ok((moved, error)) => {
                let duration_ms = started.elapsed().as_millis() as u64;
                let (bytes_up, bytes_down) = (moved.up, moved.down);
                match error {
                    None => info!(service = service.name(), %client, %orig_dst, transport = "tcp",
                        path = "sockmap", bytes_up, bytes_down, duration_ms, "flow"),
                    Some(e) => info!(service = service.name(), %client, %orig_dst,
                        transport = "tcp", path = "sockmap", bytes_up, bytes_down, duration_ms,
                        error = %e, "flow"),
                }
                return;
            }
            Err(e) => debug!(%client, %orig_dst, error = %e,
                "not relayed in the kernel; splicing"),
        }
    }
    let path = if client_stream.as_tcp().is_some() {
        "splice"
    } else {
        "copy"
    };
    let mut upstream = upstream;
    let (up_count, down_count) = (AtomicU64::new(0), AtomicU64::new(0));
    let mut error = None;
    if !prefix.is_empty() {
        if let Err(e) = tokio::io::AsyncWriteExt::write_all(&mut upstream, prefix).await {
            error = Some(e);
        }
        up_count.fetch_add(prefix.len() as u64, Ordering::Relaxed);
    }
    if error.is_none() {
        let result = match client_stream.as_tcp() {
            Some(tcp) => zerocopy::bidirectional(tcp, &upstream, &up_count, &down_count).await,
            None => {
                let (mut down, ups) = Counted::new(client_stream);
                let (mut up, downs) = Counted::new(upstream);
                let r = copy_bidirectional_with_sizes(&mut down, &mut up, COPY_BUF, COPY_BUF).await;
                up_count.fetch_add(ups.load(Ordering::Relaxed), Ordering::Relaxed);
                down_count.fetch_add(downs.load(Ordering::Relaxed), Ordering::Relaxed);
                r.map(|_| ())
            }
        };
        error = result.err();
    }
    let bytes_up = up_count.load(Ordering::Relaxed);
    let bytes_down = down_count.load(Ordering::Relaxed);
    let duration_ms = started.elapsed().as_millis() as u64;
    match error {
        None => info!(service = service.name(), %client, %orig_dst, transport = "tcp", path,
            bytes_up, bytes_down, duration_ms, "flow"),
        Some(e) => info!(service = service.name(), %client, %orig_dst, transport = "tcp", path,
            bytes_up, bytes_down, duration_ms, error = %e, "flow"),
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    #[tokio::test]
    async fn splice_copies_both_ways_unchanged() {
        // An "origin" that answers with its input reversed after the client half-closes.
        let origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin_addr = origin.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = origin.accept().await.unwrap();
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await.unwrap();
            buf.reverse();
            s.write_all(&buf).await.unwrap();
        });
        let (mut client_side, proxy_side) = tokio::io::duplex(1024);
        let task = tokio::spawn(splice_to_origin(
            Service::Http,
            proxy_side,
            ClientAddr("10.0.0.2:40000".parse().unwrap()),
            OrigDstAddr(origin_addr),
            b"he",
            Duration::from_secs(5),
        ));
        client_side.write_all(b"llo").await.unwrap();
        client_side.shutdown().await.unwrap();
        let mut out = Vec::new();
        client_side.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"olleh");
        task.await.unwrap();
    }

    #[tokio::test]
    async fn unreachable_origin_closes_the_client() {
        // Bind then drop to get a port with nothing listening.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let (mut client_side, proxy_side) = tokio::io::duplex(64);
        splice_to_origin(
            Service::Http,
            proxy_side,
            ClientAddr("10.0.0.2:40000".parse().unwrap()),
            OrigDstAddr(port),
            &[],
            Duration::from_secs(5),
        )
        .await;
        let mut out = Vec::new();
        assert_eq!(client_side.read_to_end(&mut out).await.unwrap(), 0);
    }
}
