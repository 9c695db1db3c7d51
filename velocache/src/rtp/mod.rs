//! The userspace side of the RTP fast path.
//!
//! Data enters as [`FlowSpec`]s — one per direction of each RTP and RTCP stream the SIP
//! observer learned from an offer/answer — and leaves as entries in the kernel maps of the
//! `velocache_rtp` XDP program (slot `Rtp` of the datapath's dispatcher), which forwards those
//! packets itself. Reading goes the other
//! way: per-CPU counters and the RFC 3550 state come back as [`FlowStats`], which
//! [`report`] turns into the numbers a call record carries (packets, loss %, jitter ms, MOS).
//!
//! The SIP side talks to the media plane through the [`MediaPlane`] trait: [`FastPath`] is the
//! kernel implementation; [`NoMediaPlane`] stands in when the fast path is off (media then
//! simply follows the stack and calls carry no media statistics).
//!
//! # Layout
//! - `fastpath`: writing and reading the program's maps (the datapath's XDP owner loads,
//!   attaches and pins them).
//! - `anchor`: gateway ports for anchored media (a configured range) and the userspace relay
//!   that carries the few packets the kernel hands to the stack (first packet before the
//!   neighbour is resolved).
//! - `report`: loss, jitter and MOS from the kernel's counters.
//! - `capture`: frames of captured calls' flows, copied by the kernel (`RTP_CAPTURE`).

mod anchor;
pub mod capture;
mod fastpath;
pub mod report;

use std::net::{IpAddr, SocketAddr};

pub use anchor::{AnchorError, AnchorPorts, PortPool};
pub use fastpath::FastPath;
use thiserror::Error;

use crate::datapath::XdpError;
use velocache_common::rtp::{
    FAMILY_V4, FLOW_REWRITE, FLOW_RTCP, FLOW_SRTP, FlowCounters, FlowKey, MediaFlow, RtpQuality,
};

/// The media plane failed.
#[derive(Debug, Error)]
pub enum RtpError {
    /// The XDP slot could not be claimed (the programs did not load, an interface is missing).
    #[error("the RTP fast path's XDP slot: {0}")]
    Xdp(#[from] XdpError),
    /// A map is missing or an update failed.
    #[error("RTP map `{name}`: {reason}")]
    Map {
        /// Map name.
        name: &'static str,
        /// What failed.
        reason: String,
    },
}

/// An address rewrite for anchored media: what the packet becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rewrite {
    /// New source (the gateway's anchor on the egress side).
    pub from: SocketAddr,
    /// New destination (the real peer).
    pub to: SocketAddr,
}

/// One learned direction of one RTP or RTCP stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowSpec {
    /// Sender as seen on the wire.
    pub from: SocketAddr,
    /// Destination as seen on the wire.
    pub to: SocketAddr,
    /// For anchored media: where the packet is sent instead.
    pub rewrite: Option<Rewrite>,
    /// RTP clock rate (0: unknown, no jitter).
    pub clock_rate: u32,
    /// RTCP rather than RTP.
    pub rtcp: bool,
    /// SRTP profile (informational: the program never touches payloads).
    pub srtp: bool,
}

fn octets(ip: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => out = a.octets(),
    }
    out
}

impl FlowSpec {
    /// The kernel key, for IPv4 flows (the program handles IPv4 only; IPv6 media is forwarded
    /// by the stack and carries no kernel statistics).
    pub fn key(&self) -> Option<FlowKey> {
        let (IpAddr::V4(_), IpAddr::V4(_)) = (self.from.ip(), self.to.ip()) else {
            return None;
        };
        Some(FlowKey {
            src: octets(self.from.ip()),
            dst: octets(self.to.ip()),
            sport_be: self.from.port().to_be(),
            dport_be: self.to.port().to_be(),
            family: FAMILY_V4,
            proto: 17,
            _pad: [0; 2],
        })
    }

    /// The kernel value.
    pub fn action(&self) -> MediaFlow {
        let mut flags = 0;
        if self.rtcp {
            flags |= FLOW_RTCP;
        }
        if self.srtp {
            flags |= FLOW_SRTP;
        }
        let mut v = MediaFlow {
            flags,
            clock_rate: self.clock_rate,
            ..MediaFlow::default()
        };
        if let Some(r) = self.rewrite {
            v.flags |= FLOW_REWRITE;
            v.new_src = octets(r.from.ip());
            v.new_dst = octets(r.to.ip());
            v.new_sport_be = r.from.port().to_be();
            v.new_dport_be = r.to.port().to_be();
        }
        v
    }
}

/// What the kernel knows about one flow, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Packet and byte counters.
    pub counters: FlowCounters,
    /// Sequence, loss and jitter state.
    pub quality: RtpQuality,
}

/// Where learned media flows go. Implementations must be cheap to call from the SIP path.
pub trait MediaPlane: Send + Sync + 'static {
    /// Start relaying these flows (idempotent per key; a changed flow replaces the old one).
    fn install(&self, flows: &[FlowSpec]) -> Result<(), RtpError>;
    /// Current statistics of a flow, if it is installed.
    fn stats(&self, flow: &FlowSpec) -> Option<FlowStats>;
    /// Stop relaying these flows and forget their statistics.
    fn remove(&self, flows: &[FlowSpec]);
    /// Flows in the kernel that none of `known` describes, idle for `idle_ns`: left by a
    /// daemon that died. Removed, and their number returned.
    fn expire_orphans(&self, known: &[FlowSpec], idle_ns: u64) -> usize;
    /// Have the kernel copy these flows' packets to the capture ring (`on`), or stop. The
    /// mark survives a re-install of the same flow. Without a fast path there is nothing to
    /// copy: media follows the stack and is not captured.
    fn capture(&self, _flows: &[FlowSpec], _on: bool) -> Result<(), RtpError> {
        Ok(())
    }
    /// The clock of `FlowCounters::last_seen_ns` (CLOCK_MONOTONIC, as `bpf_ktime_get_ns`).
    fn now_ns(&self) -> u64 {
        monotonic_ns()
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds, the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// The media plane when the fast path is off: flows are not installed, media follows the
/// stack, calls carry no media statistics.
pub struct NoMediaPlane;

impl MediaPlane for NoMediaPlane {
    fn install(&self, _flows: &[FlowSpec]) -> Result<(), RtpError> {
        Ok(())
    }
    fn stats(&self, _flow: &FlowSpec) -> Option<FlowStats> {
        None
    }
    fn remove(&self, _flows: &[FlowSpec]) {}
    fn expire_orphans(&self, _known: &[FlowSpec], _idle_ns: u64) -> usize {
        0
    }
}
