//! The transparent TCP listener: where steered connections enter the daemon.
//!
//! A connection the classifier assigned to the listener is accepted with the client's original
//! destination as its local address (`IP_TRANSPARENT`); it leaves as an [`InterceptedTcp`] — the
//! stream, the [`ClientAddr`], the [`OrigDstAddr`] — handed by `serve_tcp` to the service's
//! handler. A connection made directly to the listener's own port was not steered and is
//! refused, so a splice can never connect the daemon to itself.
use std::{io, net::SocketAddr};

use socket2::{Protocol, SockAddr, Type};
use tokio::net::{TcpListener, TcpStream};

use super::{ClientAddr, OrigDstAddr, addrs::canonical};

/// A listening socket with `IP_TRANSPARENT`, so that connections steered to it may have any
/// destination address.
pub struct TransparentListener {
    inner: TcpListener,
    port: u16,
}

/// One accepted, intercepted connection.
pub struct InterceptedTcp {
    /// The client's stream.
    pub stream: TcpStream,
    /// Who connected.
    pub client: ClientAddr,
    /// Where they meant to connect.
    pub orig_dst: OrigDstAddr,
}

impl TransparentListener {
    /// Bind and listen on `addr` (a wildcard address and the service's listener port).
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let socket = super::transparent_socket(addr, Type::STREAM, Protocol::TCP)?;
        socket.bind(&SockAddr::from(addr))?;
        socket.listen(1024)?;
        let inner = TcpListener::from_std(socket.into())?;
        Ok(TransparentListener {
            inner,
            port: addr.port(),
        })
    }

    /// A listener bound some other way, without `IP_TRANSPARENT` (tests of the daemon's life
    /// cycle bind one on loopback port 0). Nothing reaches it but direct connections, so none
    /// is refused as such: its handler sees the listener's own address as the destination.
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        Ok(TransparentListener {
            inner: TcpListener::from_std(listener)?,
            // No accepted connection has local port 0, so the direct-connection check is off.
            port: 0,
        })
    }

    /// The local address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Accept the next connection. A connection addressed to the listener's own port was not
    /// intercepted but made directly to the daemon; it is refused (`Ok(None)`) because splicing
    /// it "to its original destination" would connect the daemon to itself.
    pub async fn accept(&self) -> io::Result<Option<InterceptedTcp>> {
        let (stream, peer) = self.inner.accept().await?;
        let local = canonical(stream.local_addr()?);
        if local.port() == self.port {
            tracing::debug!(client = %peer, "refused a direct connection to the listener port");
            return Ok(None);
        }
        stream.set_nodelay(true)?;
        Ok(Some(InterceptedTcp {
            stream,
            client: ClientAddr(canonical(peer)),
            orig_dst: OrigDstAddr(local),
        }))
    }
}
