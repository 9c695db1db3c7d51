//! Destroying the daemon's TCP sockets that hold intercepted addresses, once the classifier is
//! detached.
//!
//! While the classifier runs, a closing daemon socket (TIME_WAIT, or an orphaned FIN_WAIT2 after
//! the daemon closed first) gets its tuple's packets, and a SYN that reuses its tuple is handed
//! through it to the daemon's listener (see the kernel's `ingress` and `lookup` programs). Once
//! the classifier is detached nothing can reach such a socket any more — yet the kernel's early
//! demultiplexing still attaches it to a packet of its tuple, and `ip_forward()` drops any packet
//! that carries a socket: a client reusing its port would stall until the socket expires (up to
//! a minute), and an established flow left after the grace period would hang instead of ending.
//! So on a clean stop, after detaching, every TCP socket (any state but LISTEN) whose local
//! port is an intercepted port and whose local address is not one of the gateway's is destroyed
//! over `sock_diag` (`SOCK_DESTROY`, the `ss -K` mechanism): traffic then flows as if VeloCache
//! had never been there. The socket cookie is echoed back, so only the socket dumped is touched.
//!
//! Data enters as the intercepted TCP ports; it leaves as the number of sockets destroyed.
use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};
use tracing::{debug, warn};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const TCP_LISTEN: u8 = 10;
/// `TCPF_ALL` without LISTEN: every state a connection (or its timewait minisocket, reported
/// under its substate) can be in.
const STATES: u32 = 0xfff & !(1 << TCP_LISTEN);
const NLMSG_HDRLEN: usize = 16;
/// `struct inet_diag_sockid`.
const SOCKID_LEN: usize = 48;
/// `struct inet_diag_req_v2`.
const REQ_LEN: usize = 8 + SOCKID_LEN;
/// `struct inet_diag_msg`.
const MSG_LEN: usize = 4 + SOCKID_LEN + 20;

/// A socket found in the dump: its family, state, raw `inet_diag_sockid`, local address/port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    family: u8,
    state: u8,
    sockid: [u8; SOCKID_LEN],
    local: IpAddr,
    local_port: u16,
}

/// Destroy the TCP sockets of this network namespace that hold an intercepted address on one of
/// `ports`. Returns how many were destroyed; failures are logged, never fatal.
pub(super) fn sweep(ports: &HashSet<u16>) -> usize {
    if ports.is_empty() {
        return 0;
    }
    let socket = match open() {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "sock_diag unavailable: sockets of intercepted flows are left to expire");
            return 0;
        }
    };
    match sweep_once(&socket, ports) {
        Ok(n) => n,
        Err(e) => {
            warn!(error = %e, "destroying the sockets of intercepted flows failed");
            0
        }
    }
}

fn open() -> std::io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    Ok(socket)
}

fn local_addresses() -> HashSet<IpAddr> {
    nix::ifaddrs::getifaddrs()
        .map(|list| {
            list.filter_map(|i| {
                let a = i.address?;
                if let Some(v4) = a.as_sockaddr_in() {
                    Some(IpAddr::V4(v4.ip()))
                } else {
                    a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
                }
            })
            .collect()
        })
        .unwrap_or_default()
}

fn sweep_once(socket: &Socket, ports: &HashSet<u16>) -> std::io::Result<usize> {
    let mut found = Vec::new();
    let mut seq = 1u32;
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        seq = seq.wrapping_add(1);
        socket.send(&dump_request(family, seq), 0)?;
        read_dump(socket, &mut found)?;
    }
    let local = local_addresses();
    let mut destroyed = 0;
    for f in found
        .into_iter()
        .filter(|f| ports.contains(&f.local_port) && !local.contains(&f.local))
    {
        seq = seq.wrapping_add(1);
        socket.send(&destroy_request(&f, seq), 0)?;
        // The ACK (an NLMSG_ERROR with code 0, or ENOENT if it went away meanwhile).
        let mut buf = vec![0u8; 4096];
        let _ = socket.recv(&mut &mut buf[..], 0)?;
        debug!(local = %f.local, port = f.local_port, state = f.state, "destroyed a socket of an intercepted flow");
        destroyed += 1;
    }
    Ok(destroyed)
}

fn header(buf: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, body_len: usize) {
    buf.extend_from_slice(&((NLMSG_HDRLEN + body_len) as u32).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
}

fn dump_request(family: u8, seq: u32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(NLMSG_HDRLEN + REQ_LEN);
    header(
        &mut buf,
        SOCK_DIAG_BY_FAMILY,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        REQ_LEN,
    );
    buf.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    buf.extend_from_slice(&STATES.to_ne_bytes());
    buf.extend_from_slice(&[0u8; SOCKID_LEN]);
    buf
}

fn destroy_request(f: &Found, seq: u32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(NLMSG_HDRLEN + REQ_LEN);
    header(
        &mut buf,
        SOCK_DESTROY,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        REQ_LEN,
    );
    buf.extend_from_slice(&[f.family, libc::IPPROTO_TCP as u8, 0, 0]);
    buf.extend_from_slice(&(1u32 << f.state).to_ne_bytes());
    buf.extend_from_slice(&f.sockid);
    buf
}

/// Read a multipart dump until NLMSG_DONE, collecting the sockets.
fn read_dump(socket: &Socket, out: &mut Vec<Found>) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = socket.recv(&mut &mut buf[..], 0)?;
        let mut off = 0;
        while off + NLMSG_HDRLEN <= n {
            let len = u32::from_ne_bytes(word(&buf, off)) as usize;
            let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
            if len < NLMSG_HDRLEN || off + len > n {
                return Ok(());
            }
            match kind {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    return Err(std::io::Error::other("sock_diag dump refused"));
                }
                SOCK_DIAG_BY_FAMILY => {
                    if let Some(f) = parse_msg(&buf[off + NLMSG_HDRLEN..off + len]) {
                        out.push(f);
                    }
                }
                _ => {}
            }
            // Messages are 4-byte aligned.
            off += (len + 3) & !3;
        }
    }
}

fn word(buf: &[u8], off: usize) -> [u8; 4] {
    [buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]
}

/// Parse an `inet_diag_msg`.
fn parse_msg(msg: &[u8]) -> Option<Found> {
    if msg.len() < MSG_LEN {
        return None;
    }
    let family = msg[0];
    let state = msg[1];
    if state == TCP_LISTEN || state > 11 {
        return None;
    }
    let mut sockid = [0u8; SOCKID_LEN];
    sockid.copy_from_slice(&msg[4..4 + SOCKID_LEN]);
    let local_port = u16::from_be_bytes([sockid[0], sockid[1]]);
    let src = &sockid[4..20];
    let local = if family == libc::AF_INET as u8 {
        IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3]))
    } else {
        let mut a = [0u8; 16];
        a.copy_from_slice(src);
        IpAddr::V6(Ipv6Addr::from(a))
    };
    Some(Found {
        family,
        state,
        sockid,
        local,
        local_port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_inet_diag_msg_and_echoes_its_id_and_state() {
        // A FIN_WAIT2 timewait minisocket (an orphan whose close is pending).
        let mut msg = vec![libc::AF_INET as u8, 5, 3, 0];
        let mut id = [0u8; SOCKID_LEN];
        id[0..2].copy_from_slice(&80u16.to_be_bytes());
        id[2..4].copy_from_slice(&40000u16.to_be_bytes());
        id[4..8].copy_from_slice(&[10, 77, 2, 2]);
        id[20..24].copy_from_slice(&[10, 77, 1, 2]);
        id[40..48].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        msg.extend_from_slice(&id);
        msg.extend_from_slice(&[0u8; 20]);
        let f = parse_msg(&msg).unwrap();
        assert_eq!(f.local, IpAddr::V4(Ipv4Addr::new(10, 77, 2, 2)));
        assert_eq!(f.local_port, 80);
        let req = destroy_request(&f, 9);
        assert_eq!(req.len(), NLMSG_HDRLEN + REQ_LEN);
        assert_eq!(
            &req[NLMSG_HDRLEN + 8..],
            &id[..],
            "cookie and tuple echoed unchanged"
        );
        assert_eq!(
            &req[NLMSG_HDRLEN + 4..NLMSG_HDRLEN + 8],
            &(1u32 << 5).to_ne_bytes(),
            "destroy asks for the socket's own state"
        );
        // Listeners and short messages are ignored.
        let mut listener = msg.clone();
        listener[1] = TCP_LISTEN;
        assert!(parse_msg(&listener).is_none());
        assert!(parse_msg(&msg[..10]).is_none());
    }
}
