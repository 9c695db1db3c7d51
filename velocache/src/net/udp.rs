//! The transparent UDP socket and the sockets that answer from the original destination.
//!
//! One socket per family receives every steered datagram; `IP_RECVORIGDSTADDR` tells which
//! address the client sent it to. Answers must come from exactly that address and port, so
//! [`UdpReplier`] keeps one transparent socket bound to each original destination in use
//! (`IP_TRANSPARENT` + `SO_REUSEADDR`, the pattern of TPROXY UDP relays), dropping idle ones.
use std::{
    collections::HashMap,
    io::{self, IoSliceMut},
    net::{SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrIn, SockaddrIn6, SockaddrStorage, recvmsg, setsockopt,
    sockopt,
};
use socket2::{Protocol, SockAddr, Socket, Type};
use tokio::{io::Interest, net::UdpSocket};

use super::{ClientAddr, OrigDstAddr, addrs::canonical};

/// Largest datagram we accept (the IPv4/IPv6 UDP payload limit).
const MAX_DATAGRAM: usize = 65_535;

thread_local! {
    /// The receive buffer, one per thread: a datagram is copied out of it at once, so the
    /// 64 KiB are allocated and zeroed once per thread rather than once per datagram.
    static RECV_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; MAX_DATAGRAM]);
}

/// One steered datagram.
#[derive(Debug, Clone)]
pub struct Datagram {
    /// Payload.
    pub data: Bytes,
    /// Sender.
    pub client: ClientAddr,
    /// The address the client sent it to.
    pub orig_dst: OrigDstAddr,
}

/// The receiving socket of a UDP service.
pub struct TransparentUdp {
    sock: UdpSocket,
    port: u16,
}

impl AsFd for TransparentUdp {
    /// The receiving socket, for the datapath's `LISTENERS` map (reassembled datagrams reach it
    /// through the kernel's own lookup).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

fn transparent_udp_socket(addr: SocketAddr) -> io::Result<Socket> {
    super::transparent_socket(addr, Type::DGRAM, Protocol::UDP)
}

impl TransparentUdp {
    /// Bind on `addr` (wildcard address, listener port) with original-destination reporting.
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let socket = transparent_udp_socket(addr)?;
        if addr.is_ipv6() {
            setsockopt(&socket, sockopt::Ipv6OrigDstAddr, &true)?;
        } else {
            setsockopt(&socket, sockopt::Ipv4OrigDstAddr, &true)?;
        }
        socket.bind(&SockAddr::from(addr))?;
        Ok(TransparentUdp {
            sock: UdpSocket::from_std(socket.into())?,
            port: addr.port(),
        })
    }

    /// The local address the socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Register the socket with the runtime of the calling task instead of the one it was
    /// bound in, so that its readiness wakes that runtime directly.
    pub fn into_current_runtime(self) -> io::Result<Self> {
        let std = self.sock.into_std()?;
        Ok(TransparentUdp {
            sock: UdpSocket::from_std(std)?,
            port: self.port,
        })
    }

    /// Receive the next datagram with its original destination. Datagrams sent straight to the
    /// listener port (not steered) are skipped: answering them "from their original
    /// destination" would make the daemon talk to itself.
    pub async fn recv(&self) -> io::Result<Datagram> {
        loop {
            let (data, client, orig) = self
                .sock
                .async_io(Interest::READABLE, || {
                    RECV_BUF.with_borrow_mut(|buf| {
                        let (n, client, orig) = recv_with_orig_dst(&self.sock, buf)?;
                        Ok((Bytes::copy_from_slice(&buf[..n]), client, orig))
                    })
                })
                .await?;
            let Some(orig) = orig else {
                tracing::debug!(client = %client, "datagram without original destination dropped");
                continue;
            };
            if orig.port() == self.port {
                tracing::debug!(client = %client, "datagram sent directly to the listener port dropped");
                continue;
            }
            return Ok(Datagram {
                data,
                client: ClientAddr(canonical(client)),
                orig_dst: OrigDstAddr(canonical(orig)),
            });
        }
    }
}

fn recv_with_orig_dst(
    sock: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<SocketAddr>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(libc::sockaddr_in6);
    let msg = recvmsg::<SockaddrStorage>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .map_err(io::Error::from)?;
    let mut orig = None;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        match c {
            ControlMessageOwned::Ipv4OrigDstAddr(sin) => {
                orig = Some(SocketAddr::V4(SocketAddrV4::from(SockaddrIn::from(sin))));
            }
            ControlMessageOwned::Ipv6OrigDstAddr(sin6) => {
                orig = Some(SocketAddr::V6(SocketAddrV6::from(SockaddrIn6::from(sin6))));
            }
            _ => {}
        }
    }
    let from = msg
        .address
        .and_then(|a| storage_to_std(&a))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram without source"))?;
    Ok((msg.bytes, from, orig))
}

fn storage_to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    if let Some(v6) = a.as_sockaddr_in6() {
        return Some(SocketAddr::V6(SocketAddrV6::from(*v6)));
    }
    None
}

/// Sends answers from the client's original destination address.
pub struct UdpReplier {
    sockets: Mutex<HashMap<SocketAddr, (Arc<UdpSocket>, Instant)>>,
    /// Upper bound on cached sockets; the least recently used one is closed beyond it.
    max_sockets: usize,
}

impl Default for UdpReplier {
    fn default() -> Self {
        UdpReplier {
            sockets: Mutex::new(HashMap::new()),
            max_sockets: 4096,
        }
    }
}

impl UdpReplier {
    /// Send `data` to `to`, with `from` as the source address and port.
    pub async fn send(&self, from: OrigDstAddr, to: ClientAddr, data: &[u8]) -> io::Result<()> {
        let sock = self.socket_for(from.0)?;
        sock.send_to(data, to.0).await.map(|_| ())
    }

    /// Send `data` now if the socket can take it (`WouldBlock` otherwise): lets a handler
    /// answer from the receive loop without spawning a task.
    pub fn try_send(&self, from: OrigDstAddr, to: ClientAddr, data: &[u8]) -> io::Result<()> {
        let sock = self.socket_for(from.0)?;
        sock.try_send_to(data, to.0).map(|_| ())
    }

    fn socket_for(&self, from: SocketAddr) -> io::Result<Arc<UdpSocket>> {
        let now = Instant::now();
        let mut map = self
            .sockets
            .lock()
            .map_err(|_| io::Error::other("reply socket table poisoned"))?;
        if let Some((sock, used)) = map.get_mut(&from) {
            *used = now;
            return Ok(sock.clone());
        }
        if map.len() >= self.max_sockets
            && let Some(oldest) = map.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        let socket = transparent_udp_socket(from)?;
        socket.bind(&SockAddr::from(from))?;
        let sock = Arc::new(UdpSocket::from_std(socket.into())?);
        map.insert(from, (sock.clone(), now));
        Ok(sock)
    }

    /// Close reply sockets unused for `idle`.
    pub fn expire_idle(&self, idle: Duration) {
        if let Ok(mut map) = self.sockets.lock() {
            let now = Instant::now();
            map.retain(|_, (_, used)| now.duration_since(*used) < idle);
        }
    }

    /// Number of open reply sockets.
    pub fn len(&self) -> usize {
        self.sockets.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether no reply socket is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
