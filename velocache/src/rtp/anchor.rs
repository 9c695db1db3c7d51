//! Gateway ports for anchored media, and the userspace relay behind the kernel's.
//!
//! Anchoring announces a gateway port instead of an endpoint's own in the SDP. Each port is
//! held by a bound UDP socket for as long as the call lasts: that reserves it (no other program
//! gets it from the kernel) and gives the packets the XDP program passes to the stack — the
//! first one before the neighbour entry exists, one that would need fragmenting — somewhere to
//! go. [`AnchorPorts::relay`] forwards those in userspace; in steady state it sees nothing.
use std::{
    collections::HashSet,
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
};

use thiserror::Error;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// No anchor port could be had.
#[derive(Debug, Error)]
pub enum AnchorError {
    /// Every pair in the range is taken.
    #[error("no free port pair left in {min}..={max}")]
    Exhausted {
        /// Range start.
        min: u16,
        /// Range end.
        max: u16,
    },
}

/// The configured anchoring range; hands out even/odd (RTP/RTCP) pairs.
pub struct PortPool {
    min: u16,
    max: u16,
    state: Mutex<PoolState>,
}

struct PoolState {
    next: u16,
    in_use: HashSet<u16>,
}

impl PortPool {
    /// A pool over `min..=max` (`min` even).
    pub fn new(min: u16, max: u16) -> Arc<Self> {
        Arc::new(PortPool {
            min,
            max,
            state: Mutex::new(PoolState {
                next: min,
                in_use: HashSet::new(),
            }),
        })
    }

    /// Pairs in use.
    pub fn in_use(&self) -> usize {
        self.state.lock().map(|s| s.in_use.len()).unwrap_or(0)
    }

    /// Bind the next free pair. Ports some other program holds are skipped.
    pub fn allocate(self: &Arc<Self>) -> Result<AnchorPorts, AnchorError> {
        let exhausted = AnchorError::Exhausted {
            min: self.min,
            max: self.max,
        };
        let Ok(mut st) = self.state.lock() else {
            return Err(exhausted);
        };
        let pairs = (u32::from(self.max) - u32::from(self.min)).div_ceil(2);
        for _ in 0..pairs {
            let port = st.next;
            st.next = if u32::from(port) + 3 > u32::from(self.max) {
                self.min
            } else {
                port + 2
            };
            if st.in_use.contains(&port) {
                continue;
            }
            let (Ok(rtp), Ok(rtcp)) = (bind(port), bind(port + 1)) else {
                continue;
            };
            st.in_use.insert(port);
            return Ok(AnchorPorts {
                rtp: Arc::new(rtp),
                rtcp: Arc::new(rtcp),
                port,
                pool: self.clone(),
            });
        }
        Err(exhausted)
    }

    fn release(&self, port: u16) {
        if let Ok(mut st) = self.state.lock() {
            st.in_use.remove(&port);
        }
    }
}

fn bind(port: u16) -> std::io::Result<UdpSocket> {
    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s)
}

/// One RTP/RTCP port pair of the gateway, held for a call. Dropping it frees the pair.
pub struct AnchorPorts {
    rtp: Arc<UdpSocket>,
    rtcp: Arc<UdpSocket>,
    port: u16,
    pool: Arc<PortPool>,
}

impl std::fmt::Debug for AnchorPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AnchorPorts({}/{})", self.port, self.port + 1)
    }
}

impl AnchorPorts {
    /// The RTP port (even).
    pub fn rtp_port(&self) -> u16 {
        self.port
    }

    /// The RTCP port (`rtp_port + 1`).
    pub fn rtcp_port(&self) -> u16 {
        self.port + 1
    }

    /// Relay what the kernel passes to the stack between two anchors until `cancel`: what
    /// arrives at `self` from `self_peer`'s address is sent from `other` to `other_peer`, and
    /// the reverse. `self_peer` is the endpoint that sends to `self` (RTP and RTCP addresses).
    pub fn relay(
        &self,
        other: &AnchorPorts,
        self_peer: (SocketAddr, SocketAddr),
        other_peer: (SocketAddr, SocketAddr),
        cancel: CancellationToken,
    ) {
        for (a, b, a_peer, b_peer) in [
            (&self.rtp, &other.rtp, self_peer.0, other_peer.0),
            (&self.rtcp, &other.rtcp, self_peer.1, other_peer.1),
        ] {
            tokio::spawn(pump(a.clone(), b.clone(), a_peer, b_peer, cancel.clone()));
        }
    }
}

impl Drop for AnchorPorts {
    fn drop(&mut self) {
        self.pool.release(self.port);
    }
}

/// Both directions between two sockets; packets from anyone but the expected peer address are
/// dropped, so an anchor is never an open relay.
async fn pump(
    a: Arc<UdpSocket>,
    b: Arc<UdpSocket>,
    a_peer: SocketAddr,
    b_peer: SocketAddr,
    cancel: CancellationToken,
) {
    let mut buf_a = vec![0u8; 2048];
    let mut buf_b = vec![0u8; 2048];
    let mut relayed = 0u64;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            got = a.recv_from(&mut buf_a) => if let Ok((n, from)) = got
                && from.ip() == a_peer.ip()
                && b.send_to(&buf_a[..n], b_peer).await.is_ok()
            {
                relayed += 1;
            },
            got = b.recv_from(&mut buf_b) => if let Ok((n, from)) = got
                && from.ip() == b_peer.ip()
                && a.send_to(&buf_b[..n], a_peer).await.is_ok()
            {
                relayed += 1;
            },
        }
    }
    if relayed > 0 {
        debug!(relayed, %a_peer, %b_peer, "anchor packets relayed in userspace");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pairs_are_even_distinct_and_reused_after_release() {
        let pool = PortPool::new(41000, 41005);
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        assert_eq!(a.rtp_port() % 2, 0);
        assert_eq!(a.rtcp_port(), a.rtp_port() + 1);
        assert_ne!(a.rtp_port(), b.rtp_port());
        let c = pool.allocate().unwrap();
        assert!(pool.allocate().is_err(), "three pairs fit in 41000..=41005");
        let freed = c.rtp_port();
        drop(c);
        let d = pool.allocate().unwrap();
        assert_eq!(d.rtp_port(), freed);
        assert_eq!(pool.in_use(), 3);
        drop((a, b, d));
        assert_eq!(pool.in_use(), 0);
    }
}
