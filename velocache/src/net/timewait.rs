//! Reaping TIME_WAIT sockets that hold intercepted (non-local) addresses.
//!
//! A transparent proxy that closes a client connection first inherits the TIME_WAIT its server
//! would have had — but on the gateway, holding the *server's* address. Two things then break
//! for a client that soon reuses its port toward the same server: the classifier has no socket
//! that can take the new SYN (given to the TIME_WAIT socket it looks for a listener on the
//! original port; given to our listener it is dropped as a duplicate), and the kernel's early
//! demultiplexing attaches the TIME_WAIT socket to the packet so it cannot even be forwarded
//! around us. Netfilter's TPROXY solves this by killing the TIME_WAIT socket when such a SYN
//! arrives; BPF cannot, so a small thread does it shortly after the fact: it lists TIME_WAIT
//! sockets over `sock_diag` and destroys (`SOCK_DESTROY`, the `ss -K` mechanism) those whose
//! local port is an intercepted port and whose local address is not one of the gateway's.
//! The socket cookie is echoed back, so a newer socket on the same tuple is never touched.
use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::mpsc,
    thread::JoinHandle,
    time::Duration,
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
const TCP_TIME_WAIT: u8 = 6;
const NLMSG_HDRLEN: usize = 16;
/// `struct inet_diag_sockid`.
const SOCKID_LEN: usize = 48;
/// `struct inet_diag_req_v2`.
const REQ_LEN: usize = 8 + SOCKID_LEN;
/// `struct inet_diag_msg`.
const MSG_LEN: usize = 4 + SOCKID_LEN + 20;

/// How often TIME_WAIT sockets are looked for.
const PERIOD: Duration = Duration::from_millis(200);

/// A TIME_WAIT socket found in the dump: its family, raw `inet_diag_sockid`, local address/port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    family: u8,
    sockid: [u8; SOCKID_LEN],
    local: IpAddr,
    local_port: u16,
}

/// The reaper thread; stopping it (or dropping the handle) ends the thread.
pub struct TimeWaitReaper {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TimeWaitReaper {
    /// Start reaping TIME_WAIT sockets on `ports` in the current network namespace.
    pub fn spawn(ports: Vec<u16>) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let ports: HashSet<u16> = ports.into_iter().collect();
        let thread = std::thread::Builder::new()
            .name("timewait-reaper".into())
            .spawn(move || {
                let socket = match open() {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(error = %e, "sock_diag unavailable: TIME_WAIT sockets of intercepted flows will not be reaped");
                        return;
                    }
                };
                let mut seq = 1u32;
                // recv_timeout doubles as the period and the stop signal.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(PERIOD) {
                    if let Err(e) = reap_once(&socket, &ports, &mut seq) {
                        debug!(error = %e, "TIME_WAIT reaping failed");
                    }
                }
            })
            .ok();
        TimeWaitReaper {
            stop: Some(stop),
            thread,
        }
    }
}

impl Drop for TimeWaitReaper {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
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

fn reap_once(socket: &Socket, ports: &HashSet<u16>, seq: &mut u32) -> std::io::Result<()> {
    let mut found = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        *seq = seq.wrapping_add(1);
        socket.send(&dump_request(family, *seq), 0)?;
        read_dump(socket, &mut found)?;
    }
    if found.is_empty() {
        return Ok(());
    }
    let local = local_addresses();
    for f in found
        .into_iter()
        .filter(|f| ports.contains(&f.local_port) && !local.contains(&f.local))
    {
        *seq = seq.wrapping_add(1);
        socket.send(&destroy_request(&f, *seq), 0)?;
        // The ACK (an NLMSG_ERROR with code 0, or ENOENT if it expired meanwhile).
        let mut buf = vec![0u8; 4096];
        let _ = socket.recv(&mut &mut buf[..], 0)?;
        debug!(local = %f.local, port = f.local_port, "reaped a TIME_WAIT socket of an intercepted flow");
    }
    Ok(())
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
    buf.extend_from_slice(&(1u32 << TCP_TIME_WAIT).to_ne_bytes());
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
    buf.extend_from_slice(&(1u32 << TCP_TIME_WAIT).to_ne_bytes());
    buf.extend_from_slice(&f.sockid);
    buf
}

/// Read a multipart dump until NLMSG_DONE, collecting TIME_WAIT sockets.
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
    if state != TCP_TIME_WAIT {
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
        sockid,
        local,
        local_port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_inet_diag_msg_and_echoes_its_id() {
        let mut msg = vec![libc::AF_INET as u8, TCP_TIME_WAIT, 3, 0];
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
        // Established sockets and short messages are ignored.
        let mut est = msg.clone();
        est[1] = 1;
        assert!(parse_msg(&est).is_none());
        assert!(parse_msg(&msg[..10]).is_none());
    }
}
