//! Captures of single calls, for `velocache calls capture` and the web page's pcap download.
//!
//! A capture is started and stopped through the admin API ([`Captures::start`],
//! [`Captures::stop`]). While it runs, packets enter two ways: every SIP message of the call,
//! as the observer sees it ([`Captures::sip`], wrapped in a synthesised IP/UDP header with the
//! real addresses), and every frame of the call's RTP/RTCP flows that the kernel copies into
//! `RTP_CAPTURE` ([`Captures::rtp`], matched to the call by its addresses). They leave as one
//! pcap file ([`Captures::pcap`]). Each capture is bounded ([`MAX_PACKETS`], [`MAX_BYTES`]):
//! at the bound it stops itself and says why; at most [`MAX_CAPTURES`] are kept.
use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

use super::pcap::{self, Packet};
use crate::admin::calls_api::CaptureStatus;

/// Packets one capture holds at most.
pub const MAX_PACKETS: usize = 50_000;
/// Bytes one capture holds at most.
pub const MAX_BYTES: usize = 64 << 20;
/// Captures kept (running or finished); the oldest finished one goes first.
pub const MAX_CAPTURES: usize = 8;

const ETH_HLEN: usize = 14;

/// A capture that cannot be started.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CaptureError {
    /// Every kept capture is still running.
    #[error("{MAX_CAPTURES} captures are running already; stop one first")]
    Busy,
}

#[derive(Debug, Default)]
struct Capture {
    active: bool,
    packets: Vec<Packet>,
    bytes: usize,
    rtp_packets: u64,
    refused: u64,
    stopped: String,
}

impl Capture {
    /// Add a packet; `false` when the bound was reached (the capture is stopped then).
    fn push(&mut self, p: Packet, rtp: bool) -> bool {
        if !self.active {
            self.refused += 1;
            return true;
        }
        if self.packets.len() >= MAX_PACKETS || self.bytes + p.data.len() > MAX_BYTES {
            self.refused += 1;
            self.active = false;
            self.stopped = if self.packets.len() >= MAX_PACKETS {
                format!("limit: {MAX_PACKETS} packets")
            } else {
                format!("limit: {} MiB", MAX_BYTES >> 20)
            };
            return false;
        }
        self.bytes += p.data.len();
        self.rtp_packets += u64::from(rtp);
        self.packets.push(p);
        true
    }

    fn status(&self, call_id: &str) -> CaptureStatus {
        CaptureStatus {
            call_id: call_id.to_string(),
            active: self.active,
            packets: self.packets.len() as u64,
            rtp_packets: self.rtp_packets,
            bytes: self.bytes as u64,
            stopped: self.stopped.clone(),
            refused: self.refused,
        }
    }
}

/// The captures, and which media flows feed which.
#[derive(Debug, Default)]
pub struct Captures {
    /// Oldest first.
    calls: VecDeque<(String, Capture)>,
    /// (sender, destination) of a captured media flow → its call.
    flows: HashMap<(SocketAddr, SocketAddr), String>,
}

impl Captures {
    fn get(&self, call_id: &str) -> Option<&Capture> {
        self.calls
            .iter()
            .find(|(c, _)| c == call_id)
            .map(|(_, c)| c)
    }

    fn get_mut(&mut self, call_id: &str) -> Option<&mut Capture> {
        self.calls
            .iter_mut()
            .find(|(c, _)| c == call_id)
            .map(|(_, c)| c)
    }

    /// Start (or restart, keeping its packets) capturing `call_id`.
    pub fn start(&mut self, call_id: &str) -> Result<CaptureStatus, CaptureError> {
        if let Some(c) = self.get_mut(call_id) {
            if !c.active && c.stopped.starts_with("limit") {
                return Ok(c.status(call_id));
            }
            c.active = true;
            c.stopped.clear();
            return Ok(c.status(call_id));
        }
        if self.calls.len() >= MAX_CAPTURES {
            let oldest_done = self
                .calls
                .iter()
                .position(|(_, c)| !c.active)
                .ok_or(CaptureError::Busy)?;
            if let Some((gone, _)) = self.calls.remove(oldest_done) {
                self.flows.retain(|_, c| *c != gone);
            }
        }
        let c = Capture {
            active: true,
            ..Capture::default()
        };
        let status = c.status(call_id);
        self.calls.push_back((call_id.to_string(), c));
        Ok(status)
    }

    /// Stop capturing `call_id` (`why` says how); its media flows no longer feed it.
    pub fn stop(&mut self, call_id: &str, why: &str) -> Option<CaptureStatus> {
        self.flows.retain(|_, c| c != call_id);
        let c = self.get_mut(call_id)?;
        if c.active {
            c.active = false;
            c.stopped = why.to_string();
        }
        Some(c.status(call_id))
    }

    /// Whether `call_id` is being captured.
    pub fn is_active(&self, call_id: &str) -> bool {
        self.get(call_id).is_some_and(|c| c.active)
    }

    /// The capture of `call_id`, if one was started.
    pub fn status(&self, call_id: &str) -> Option<CaptureStatus> {
        self.get(call_id).map(|c| c.status(call_id))
    }

    /// These media flows (sender, destination) belong to `call_id`'s capture.
    pub fn add_flows(
        &mut self,
        call_id: &str,
        flows: impl IntoIterator<Item = (SocketAddr, SocketAddr)>,
    ) {
        for f in flows {
            self.flows.insert(f, call_id.to_string());
        }
    }

    /// A SIP message of `call_id`; `false` when the capture just reached its bound.
    pub fn sip(
        &mut self,
        call_id: &str,
        ts_us: u64,
        src: SocketAddr,
        dst: SocketAddr,
        bytes: &[u8],
    ) -> bool {
        let Some(c) = self.get_mut(call_id) else {
            return true;
        };
        if !c.active {
            return true;
        }
        let Some(data) = pcap::udp_packet(src, dst, bytes) else {
            return true;
        };
        let orig_len = data.len() as u32;
        c.push(
            Packet {
                ts_us,
                data,
                orig_len,
            },
            false,
        )
    }

    /// A frame the kernel copied (from its Ethernet header on; `len` its length on the wire).
    /// Returns the call whose capture just reached its bound, if this frame made it so.
    pub fn rtp(&mut self, ts_us: u64, frame: &[u8], len: u32) -> Option<String> {
        let (src, dst) = udp4_addrs(frame)?;
        let call_id = self.flows.get(&(src, dst))?.clone();
        let c = self.get_mut(&call_id)?;
        let data = frame.get(ETH_HLEN..)?.to_vec();
        let orig_len = len.saturating_sub(ETH_HLEN as u32);
        if c.push(
            Packet {
                ts_us,
                data,
                orig_len,
            },
            true,
        ) {
            None
        } else {
            Some(call_id)
        }
    }

    /// The capture of `call_id` as a pcap file, packets in time order.
    pub fn pcap(&self, call_id: &str) -> Option<Vec<u8>> {
        let c = self.get(call_id)?;
        let mut order: Vec<&Packet> = c.packets.iter().collect();
        // Kernel copies arrive in batches: sort so readers see one timeline.
        order.sort_by_key(|p| p.ts_us);
        Some(pcap::file(order))
    }
}

/// The UDP source and destination of an Ethernet/IPv4 frame.
pub fn udp4_addrs(frame: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = frame.get(ETH_HLEN..)?;
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if ip.first()? >> 4 != 4 || ihl < 20 || *ip.get(9)? != 17 {
        return None;
    }
    let a = |o: usize| -> Option<IpAddr> {
        let b: [u8; 4] = ip.get(o..o + 4)?.try_into().ok()?;
        Some(IpAddr::V4(Ipv4Addr::from(b)))
    };
    let port = |o: usize| -> Option<u16> {
        let b: [u8; 2] = ip.get(o..o + 2)?.try_into().ok()?;
        Some(u16::from_be_bytes(b))
    };
    Some((
        SocketAddr::new(a(12)?, port(ihl)?),
        SocketAddr::new(a(16)?, port(ihl + 2)?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.resize(f.len() + payload, 0x80);
        f
    }

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn frames_of_captured_flows_go_to_their_call_and_others_nowhere() {
        let mut c = Captures::default();
        c.start("call-1").unwrap();
        c.add_flows("call-1", [(a("10.1.0.2:4000"), a("10.2.0.2:6000"))]);
        let f = frame([10, 1, 0, 2], 4000, [10, 2, 0, 2], 6000, 172);
        assert_eq!(c.rtp(5, &f, f.len() as u32), None);
        let other = frame([10, 1, 0, 2], 4002, [10, 2, 0, 2], 6000, 172);
        assert_eq!(c.rtp(6, &other, other.len() as u32), None);
        assert!(c.sip("call-1", 1, a("10.1.0.2:5060"), a("10.2.0.2:5060"), b"BYE"));
        let s = c.status("call-1").unwrap();
        assert_eq!((s.packets, s.rtp_packets), (2, 1));
        // Time order in the file: the SIP message (ts 1) before the frame (ts 5).
        let file = c.pcap("call-1").unwrap();
        assert_eq!(file[24 + 4..24 + 8], 1u32.to_le_bytes());
        let stopped = c.stop("call-1", "stopped").unwrap();
        assert!(!stopped.active);
        assert_eq!(c.rtp(7, &f, f.len() as u32), None, "no longer fed");
        assert_eq!(c.status("call-1").unwrap().rtp_packets, 1);
    }

    #[test]
    fn a_capture_stops_itself_at_its_packet_bound() {
        let mut c = Captures::default();
        c.start("loop").unwrap();
        c.add_flows("loop", [(a("10.1.0.2:4000"), a("10.2.0.2:6000"))]);
        let f = frame([10, 1, 0, 2], 4000, [10, 2, 0, 2], 6000, 10);
        for i in 0..MAX_PACKETS {
            assert_eq!(c.rtp(i as u64, &f, f.len() as u32), None);
        }
        assert_eq!(c.rtp(0, &f, f.len() as u32), Some("loop".to_string()));
        let s = c.status("loop").unwrap();
        assert!(!s.active);
        assert_eq!(s.packets, MAX_PACKETS as u64);
        assert_eq!(s.stopped, "limit: 50000 packets");
        // Restarting a capture that hit its bound does not grow it further.
        assert!(!c.start("loop").unwrap().active);
    }

    #[test]
    fn old_finished_captures_make_room_and_running_ones_do_not() {
        let mut c = Captures::default();
        for i in 0..MAX_CAPTURES {
            c.start(&format!("c{i}")).unwrap();
        }
        assert_eq!(c.start("one-more"), Err(CaptureError::Busy));
        c.stop("c3", "stopped");
        assert!(c.start("one-more").unwrap().active);
        assert!(c.status("c3").is_none());
        assert!(c.status("c0").is_some());
    }

    #[test]
    fn frames_that_are_not_ipv4_udp_are_ignored() {
        assert_eq!(udp4_addrs(&[0u8; 10]), None);
        let mut f = frame([1, 2, 3, 4], 1, [5, 6, 7, 8], 2, 0);
        assert_eq!(udp4_addrs(&f), Some((a("1.2.3.4:1"), a("5.6.7.8:2"))));
        f[12] = 0x86;
        assert_eq!(udp4_addrs(&f), None);
        let short = frame([1, 2, 3, 4], 1, [5, 6, 7, 8], 2, 0);
        assert_eq!(udp4_addrs(&short[..36]), None);
    }
}
