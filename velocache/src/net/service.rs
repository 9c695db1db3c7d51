//! The seam between transparent sockets and the services behind them.
//!
//! A service implements [`TcpHandler`] and/or [`UdpHandler`]; the accept and receive loops here
//! hand it every intercepted connection or datagram. Handlers are called from the loop and must
//! not block it: they spawn what takes time. That lets a DNS cache answer a hit inline while a
//! splice spawns a task per connection.
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Datagram, InterceptedTcp, TransparentListener, TransparentUdp, UdpReplier};

/// Receives intercepted TCP connections.
pub trait TcpHandler: Send + Sync + 'static {
    /// Take one connection. Called from the accept loop: spawn, do not block.
    fn on_connection(&self, conn: InterceptedTcp);
}

/// Receives intercepted UDP datagrams.
pub trait UdpHandler: Send + Sync + 'static {
    /// Take one datagram; answer through `replier`. Called from the receive loop: spawn, do
    /// not block.
    fn on_datagram(&self, dgram: Datagram, replier: &Arc<UdpReplier>);

    /// A runtime of the handler's own to receive on — say, a single-threaded one on a dedicated
    /// thread, so that a hot service never hands its socket between worker threads and is not
    /// delayed by other services' work. `None` (the default): the daemon's runtime.
    fn runtime(&self) -> Option<tokio::runtime::Handle> {
        None
    }
}

/// Accept until cancelled, then drop the listener so that new flows fail open.
pub async fn serve_tcp(
    listener: TransparentListener,
    handler: Arc<dyn TcpHandler>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(Some(conn)) => handler.on_connection(conn),
                Ok(None) => {}
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
    debug!(addr = ?listener.local_addr().ok(), "TCP listener closed");
}

/// Receive until cancelled, then drop the socket so that new datagrams fail open.
pub async fn serve_udp(
    socket: TransparentUdp,
    replier: Arc<UdpReplier>,
    handler: Arc<dyn UdpHandler>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            received = socket.recv() => match received {
                Ok(dgram) => handler.on_datagram(dgram, &replier),
                Err(e) => {
                    warn!(error = %e, "UDP receive failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
        }
    }
    debug!(addr = ?socket.local_addr().ok(), "UDP socket closed");
}
