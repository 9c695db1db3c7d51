//! TCP splice to the original destination: connect, send the bytes already read, then move
//! both directions until both ends close — joined in the kernel by the relay when the caller has
//! one, else with `splice(2)` (or a copy through the counting wrapper for an end that is not a
//! socket). Bytes and failures are recorded on the connection's flow guard.
use std::time::Duration;

use tokio::{
    io::{AsyncRead, AsyncWrite, copy_bidirectional_with_sizes},
    net::TcpStream,
};
use tracing::{debug, warn};
use velocache_common::Service;

use super::{KernelRelay, zerocopy};
use crate::{
    flow::{FlowGuard, FlowTracker, Metered},
    net::{InterceptedTcp, OrigDstAddr, TcpHandler},
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
        let InterceptedTcp {
            stream,
            client,
            orig_dst,
        } = conn;
        let flow = self.flows.open(self.service, client, orig_dst, "tcp");
        let timeout = self.connect_timeout;
        tokio::spawn(async move {
            splice_to_origin(&flow, stream, orig_dst, &[], timeout).await;
        });
    }
}

/// Connect to `orig_dst`, send `prefix` (bytes already read from the client, e.g. a peeked
/// TLS ClientHello), then copy both ways until both sides close. The bytes are counted into
/// `flow`, and a failure is recorded on it: its line says what happened when it drops.
pub async fn splice_to_origin<S>(
    flow: &FlowGuard,
    client_stream: S,
    orig_dst: OrigDstAddr,
    prefix: &[u8],
    connect_timeout: Duration,
) where
    S: SpliceEnd,
{
    splice_to_origin_with(None, flow, client_stream, orig_dst, prefix, connect_timeout).await;
}

/// [`splice_to_origin`], joining the two sockets in the kernel with `relay` when there is one
/// and both ends are TCP sockets; `splice(2)` otherwise. The flow line's `path` says which:
/// `sockmap`, `splice` or `copy` (an end that is not a socket).
pub async fn splice_to_origin_with<S>(
    relay: Option<&KernelRelay>,
    flow: &FlowGuard,
    client_stream: S,
    orig_dst: OrigDstAddr,
    prefix: &[u8],
    connect_timeout: Duration,
) where
    S: SpliceEnd,
{
    let upstream = match tokio::time::timeout(connect_timeout, TcpStream::connect(orig_dst.0)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            warn!(%orig_dst, error = %e, "connecting to the original destination failed");
            flow.fail(&e);
            return;
        }
        Err(_) => {
            warn!(%orig_dst, timeout_ms = connect_timeout.as_millis() as u64,
                "connecting to the original destination timed out");
            flow.record("error", "connecting to the original destination timed out");
            return;
        }
    };
    splice_streams(relay, flow, client_stream, upstream, prefix).await;
}

/// Copy both ways between `client_stream` and an `upstream` already connected — after sending
/// `prefix` upstream — until both sides close; what [`splice_to_origin_with`] does once it has
/// connected, for a caller that opened the upstream itself (a plugin's stream that asked to be
/// spliced). Bytes and failures go on `flow`, and its `path` says how they moved.
pub async fn splice_streams<S>(
    relay: Option<&KernelRelay>,
    flow: &FlowGuard,
    client_stream: S,
    upstream: TcpStream,
    prefix: &[u8],
) where
    S: SpliceEnd,
{
    let counts = flow.counts();
    let _ = upstream.set_nodelay(true);
    if let (Some(relay), Some(tcp)) = (relay, client_stream.as_tcp()) {
        match relay.relay(tcp, &upstream, prefix).await {
            Ok((moved, error)) => {
                counts.add_up(moved.up);
                counts.add_down(moved.down);
                flow.record("path", "sockmap");
                if let Some(e) = error {
                    flow.fail(&e);
                }
                return;
            }
            Err(e) => debug!(error = %e, "not relayed in the kernel; splicing"),
        }
    }
    flow.record(
        "path",
        if client_stream.as_tcp().is_some() {
            "splice"
        } else {
            "copy"
        },
    );
    let mut upstream = upstream;
    if !prefix.is_empty() {
        if let Err(e) = tokio::io::AsyncWriteExt::write_all(&mut upstream, prefix).await {
            flow.fail(&e);
            return;
        }
        counts.add_up(prefix.len() as u64);
    }
    let result = match client_stream.as_tcp() {
        Some(tcp) => zerocopy::bidirectional(tcp, &upstream, &counts.up, &counts.down).await,
        None => {
            let mut client = Metered::new(client_stream, counts.clone());
            copy_bidirectional_with_sizes(&mut client, &mut upstream, COPY_BUF, COPY_BUF)
                .await
                .map(|_| ())
        }
    };
    if let Err(e) = result {
        flow.fail(&e);
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;
    use crate::net::ClientAddr;

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
        let flow = FlowTracker::new().open(
            Service::Http,
            ClientAddr("10.0.0.2:40000".parse().unwrap()),
            OrigDstAddr(origin_addr),
            "tcp",
        );
        let counts = flow.counts();
        let task = tokio::spawn(async move {
            splice_to_origin(
                &flow,
                proxy_side,
                OrigDstAddr(origin_addr),
                b"he",
                Duration::from_secs(5),
            )
            .await
        });
        client_side.write_all(b"llo").await.unwrap();
        client_side.shutdown().await.unwrap();
        let mut out = Vec::new();
        client_side.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"olleh");
        task.await.unwrap();
        // Each direction counted once: the replayed prefix and the rest up, the answer down.
        assert_eq!(counts.up.load(std::sync::atomic::Ordering::Relaxed), 5);
        assert_eq!(counts.down.load(std::sync::atomic::Ordering::Relaxed), 5);
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
        let flow = FlowTracker::new().open(
            Service::Http,
            ClientAddr("10.0.0.2:40000".parse().unwrap()),
            OrigDstAddr(port),
            "tcp",
        );
        splice_to_origin(
            &flow,
            proxy_side,
            OrigDstAddr(port),
            &[],
            Duration::from_secs(5),
        )
        .await;
        let mut out = Vec::new();
        assert_eq!(client_side.read_to_end(&mut out).await.unwrap(), 0);
    }
}
