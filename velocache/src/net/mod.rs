//! Transparent sockets: where intercepted flows enter the daemon.
//!
//! The classifier assigns a client's packets to these sockets; they see the client's original
//! destination as their local address (TCP) or in `IP_RECVORIGDSTADDR` ancillary data (UDP).
//! Handlers receive that as an [`OrigDstAddr`] next to the [`ClientAddr`], and answer UDP from the
//! address the client asked through [`UdpReplier`], so clients never notice the daemon.
//!
//! # Layout
//! - `addrs`: the address newtypes.
//! - `service`: the handler traits services implement, and the accept/receive loops.
//! - `tcp`: the transparent TCP listener.
//! - `udp`: the transparent UDP socket, original-destination recovery and reply sockets.

mod addrs;
mod service;
mod tcp;
mod udp;

pub use addrs::{ClientAddr, OrigDstAddr, canonical};
pub use service::{TcpHandler, UdpHandler, serve_tcp, serve_udp};
pub use tcp::{InterceptedTcp, TransparentListener};
pub use udp::{Datagram, TransparentUdp, UdpReplier};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The wildcard addresses a service's listeners bind to (IPv4 and IPv6). The classifier's
/// listener lookup uses a zeroed destination address, which only a wildcard bind matches.
pub fn wildcard_addrs(port: u16) -> [SocketAddr; 2] {
    [
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
    ]
}

/// A non-blocking socket for `addr`'s family with `IP_TRANSPARENT` (it may carry any address:
/// steered flows keep their original destination) and `SO_REUSEADDR`; IPv6 sockets are
/// IPv6-only, so each family has its own socket.
fn transparent_socket(
    addr: SocketAddr,
    ty: socket2::Type,
    proto: socket2::Protocol,
) -> std::io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), ty, Some(proto))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
        socket.set_ip_transparent_v6(true)?;
    } else {
        socket.set_ip_transparent_v4(true)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}
