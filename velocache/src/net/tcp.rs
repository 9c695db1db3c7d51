//! The transparent TCP listener: where intercepted connections are accepted.
//!
//! Data enters as connections the classifier steered (or the kernel's own lookup handed over,
//! see `datapath::steering`) and leaves as [`InterceptedTcp`]: the stream, the client and the
//! original destination (the accepted socket's local address). A service may listen with a
//! group of sockets sharing its port (`SO_REUSEPORT`, [`TransparentListener::bind_group`]): the
//! kernel spreads new connections over them, so accepting runs on every core in parallel.
use std::{
    io,
    net::SocketAddr,
    os::fd::{AsFd, BorrowedFd},
};

use socket2::{Protocol, SockAddr, Type};
use tokio::net::{TcpListener, TcpStream};

use super::{ClientAddr, OrigDstAddr, addrs::canonical};

/// A listening socket with `IP_TRANSPARENT`, so that connections steered to it may have any
/// destination address.
pub struct TransparentListener {
    inner: TcpListener,
    port: u16,
}

impl AsFd for TransparentListener {
    /// The listening socket, for the datapath's `LISTENERS` map (the kernel's own lookups hand
    /// it connections the classifier could not assign directly).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
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
        Self::bind_with(addr, false)
    }

    /// `n` listeners sharing `addr` (`SO_REUSEPORT`); one plain listener when `n` is 1.
    pub fn bind_group(addr: SocketAddr, n: usize) -> io::Result<Vec<Self>> {
        let shared = n > 1;
        (0..n.max(1))
            .map(|_| Self::bind_with(addr, shared))
            .collect()
    }

    fn bind_with(addr: SocketAddr, reuse_port: bool) -> io::Result<Self> {
        let socket = super::transparent_socket(addr, Type::STREAM, Protocol::TCP)?;
        if reuse_port {
            socket.set_reuse_port(true)?;
        }
        // Accepted sockets inherit TCP_NODELAY from the listener: no system call per connection.
        socket.set_tcp_nodelay(true)?;
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
        Ok(Some(InterceptedTcp {
            stream,
            client: ClientAddr(canonical(peer)),
            orig_dst: OrigDstAddr(local),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs `CAP_NET_ADMIN` (IP_TRANSPARENT), like the daemon.
    #[tokio::test]
    async fn accepted_connections_inherit_nodelay_and_a_group_shares_its_port() {
        let group = TransparentListener::bind_group("127.0.0.1:0".parse().unwrap(), 1)
            .expect("binding a transparent listener needs CAP_NET_ADMIN");
        let addr = group[0].local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = group[0].inner.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap(), "TCP_NODELAY not inherited");
        drop(client);

        // Two listeners on one port only as a reuseport group.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port_addr = free.local_addr().unwrap();
        drop(free);
        let pair = TransparentListener::bind_group(port_addr, 2).unwrap();
        assert_eq!(pair.len(), 2);
        assert!(TransparentListener::bind(port_addr).is_err());
    }
}
