//! Types of the RTP fast path (the `velocache_rtp` program, slot [`XdpSlot::Rtp`] of the XDP
//! dispatcher) and the maps the daemon fills.
//!
//! [`XdpSlot::Rtp`]: crate::xdp::XdpSlot::Rtp
//!
//! The daemon learns media flows from SIP/SDP and writes one [`MediaFlow`] per direction into
//! `RTP_FLOWS`, keyed by the packet's 5-tuple ([`FlowKey`], never the SSRC: endpoints reuse
//! SSRCs and one SSRC may move between ports). For each learned key it also creates a zeroed
//! [`FlowCounters`] entry in the per-CPU `RTP_COUNTERS` map and a zeroed [`RtpQuality`] entry in
//! `RTP_QUALITY`; the kernel program only ever looks entries up, so when the daemon deletes a
//! flow no packet in flight can re-create it.
//!
//! Addresses are stored as 16 bytes in network byte order (IPv4 in the first four, the rest
//! zero) and ports in network byte order, exactly as they appear on the wire, so the kernel
//! builds a key without conversions.

/// Name of the RTP fast path's program in the `velocache-xdp` object.
pub const RTP_PROGRAM: &str = "velocache_rtp";

/// `FlowKey::family` for IPv4.
pub const FAMILY_V4: u8 = 4;
/// `FlowKey::family` for IPv6.
pub const FAMILY_V6: u8 = 6;

/// [`MediaFlow::flags`]: rewrite addresses and ports to `new_*` (media anchoring).
pub const FLOW_REWRITE: u32 = 1;
/// [`MediaFlow::flags`]: the flow carries RTCP, not RTP; no sequence or jitter tracking.
pub const FLOW_RTCP: u32 = 2;
/// [`MediaFlow::flags`]: the SDP announced SRTP (`RTP/SAVP`…); headers are read, payload untouched.
pub const FLOW_SRTP: u32 = 4;

/// [`MediaFlow::flags`]: the flow's call is being captured; the program copies each packet (as
/// it arrived, before any rewrite) into `RTP_CAPTURE` as a [`CaptureEvent`]. Flows without it pay
/// one flag test.
pub const FLOW_CAPTURE: u32 = 8;

/// Bytes of a frame a [`CaptureEvent`] holds at most (longer frames are cut, as a snap length).
pub const CAPTURE_BYTES: usize = 2048;

/// Size of the `RTP_CAPTURE` ring buffer: about 2 000 events waiting for the daemon.
pub const CAPTURE_RING_BYTES: u32 = 1 << 22;

/// One frame of a captured flow, as the kernel hands it to the daemon through `RTP_CAPTURE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureEvent {
    /// `bpf_ktime_get_ns()` when the frame arrived (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// The frame's length on the wire.
    pub len: u32,
    /// Bytes copied into `data` (`min(len, CAPTURE_BYTES - 1)`).
    pub caplen: u32,
    /// The frame from its Ethernet header on.
    pub data: [u8; CAPTURE_BYTES],
}

/// A UDP 5-tuple as it appears on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// Source address, network order; IPv4 in `src[..4]`.
    pub src: [u8; 16],
    /// Destination address, network order; IPv4 in `dst[..4]`.
    pub dst: [u8; 16],
    /// Source port, network order.
    pub sport_be: u16,
    /// Destination port, network order.
    pub dport_be: u16,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// IP protocol (17, UDP).
    pub proto: u8,
    /// Always zero.
    pub _pad: [u8; 2],
}

/// What to do with the packets of one learned flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MediaFlow {
    /// With [`FLOW_REWRITE`]: the new source address (the gateway's, towards the peer).
    pub new_src: [u8; 16],
    /// With [`FLOW_REWRITE`]: the new destination address (the real peer).
    pub new_dst: [u8; 16],
    /// With [`FLOW_REWRITE`]: the new source port, network order.
    pub new_sport_be: u16,
    /// With [`FLOW_REWRITE`]: the new destination port, network order.
    pub new_dport_be: u16,
    /// `FLOW_*` bits.
    pub flags: u32,
    /// RTP clock rate of the negotiated payload (Hz), from the SDP `rtpmap`; jitter needs it.
    /// Zero: jitter is not computed.
    pub clock_rate: u32,
    /// Always zero.
    pub _pad: u32,
}

/// Per-CPU packet counters of one flow; the daemon sums them over CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowCounters {
    /// Packets seen (forwarded or passed).
    pub packets: u64,
    /// IP bytes seen.
    pub bytes: u64,
    /// Packets the program redirected itself.
    pub redirected: u64,
    /// Packets passed to the stack (no route or neighbour yet, TTL expiring, too big).
    pub passed: u64,
    /// `bpf_ktime_get_ns()` of the last packet; idle flows are expired by it.
    pub last_seen_ns: u64,
}

impl FlowCounters {
    /// These counters and `other`'s summed (two CPUs' shares of one flow): saturating, so
    /// values read from a map can never overflow the sum; the latest `last_seen_ns` wins.
    pub const fn merged(&self, other: &FlowCounters) -> FlowCounters {
        FlowCounters {
            packets: self.packets.saturating_add(other.packets),
            bytes: self.bytes.saturating_add(other.bytes),
            redirected: self.redirected.saturating_add(other.redirected),
            passed: self.passed.saturating_add(other.passed),
            last_seen_ns: if other.last_seen_ns > self.last_seen_ns {
                other.last_seen_ns
            } else {
                self.last_seen_ns
            },
        }
    }
}

/// RTP sequence and jitter state of one flow (RFC 3550 appendix A.1 and A.8), shared by all
/// CPUs. One stream arrives 50 times a second, so two CPUs updating the same entry at once is
/// rare; the worst case is one lost jitter update, never a wrong packet count (those are
/// per-CPU in [`FlowCounters`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RtpQuality {
    /// SSRC of the current stream.
    pub ssrc: u32,
    /// Non-zero once the first RTP packet was seen.
    pub started: u32,
    /// First sequence number of the current stream (extended, with `cycles` = 0).
    pub base_seq: u32,
    /// Highest sequence number seen in the current stream.
    pub max_seq: u32,
    /// Sequence number wrap-arounds (× 65536) in the current stream.
    pub cycles: u32,
    /// Packets received in all streams of this flow, immediate duplicates excluded.
    pub received: u32,
    /// Packets expected in earlier streams (before SSRC changes).
    pub expected_prior: u32,
    /// Immediate repeats of the last sequence number (duplicates, RFC 2833/4733 end-of-event
    /// retransmissions that reuse the number): never counted as received or as negative loss.
    pub duplicates: u32,
    /// Packets that arrived after a higher sequence number (reordered or late).
    pub late: u32,
    /// SSRC changes seen.
    pub ssrc_changes: u32,
    /// RFC 3550 interarrival jitter × 16, in RTP timestamp units.
    pub jitter_x16: u32,
    /// Relative transit time of the previous packet (arrival in timestamp units − timestamp).
    pub last_transit: u32,
    /// Highest jitter seen × 16, in timestamp units.
    pub max_jitter_x16: u32,
    /// Always zero.
    pub _pad: u32,
}

impl RtpQuality {
    /// Packets expected in all streams so far (RFC 3550 A.3).
    pub const fn expected(&self) -> u64 {
        if self.started == 0 {
            return 0;
        }
        let ext_max = (self.cycles as u64) * 65_536 + self.max_seq as u64;
        let current = ext_max.saturating_sub(self.base_seq as u64) + 1;
        self.expected_prior as u64 + current
    }

    /// Packets lost: expected − received, never negative (duplicates and late copies can make
    /// the difference negative; RFC 3550 allows that in reports, a call record should not).
    pub const fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received as u64)
    }
}

impl RtpQuality {
    /// Account one RTP packet (RFC 3550 A.1 sequence tracking, A.8 jitter). `arrival` is the
    /// arrival time in RTP timestamp units (`None` when the clock rate is unknown: no jitter).
    /// Integer-only, loop-free and branch-light: the XDP program calls it per packet and the
    /// verifier must accept it; host unit tests exercise the very same code.
    #[inline(always)]
    pub fn on_packet(&mut self, seq: u16, timestamp: u32, ssrc: u32, arrival: Option<u32>) {
        let transit = match arrival {
            Some(a) => a.wrapping_sub(timestamp),
            None => 0,
        };
        if self.started == 0 {
            self.started = 1;
            self.ssrc = ssrc;
            self.restart(seq);
            self.last_transit = transit;
            return;
        }
        if ssrc != self.ssrc {
            // A new source on the same 5-tuple (a re-INVITE, a transfer, a DTMF generator):
            // close the old stream's expectation and start counting afresh.
            self.ssrc_changes = self.ssrc_changes.wrapping_add(1);
            self.ssrc = ssrc;
            self.expected_prior = self.expected_prior.wrapping_add(self.current_expected());
            self.restart(seq);
            self.last_transit = transit;
            return;
        }
        let max = self.max_seq as u16;
        let delta = seq.wrapping_sub(max) as u32;
        if delta == 0 {
            // The same number again: a duplicate or an end-of-event retransmission.
            self.duplicates = self.duplicates.wrapping_add(1);
            return;
        }
        if delta < MAX_DROPOUT {
            if seq < max {
                self.cycles = self.cycles.wrapping_add(1);
            }
            self.max_seq = seq as u32;
        } else if delta <= 65_536 - MAX_MISORDER {
            // A jump too large to be loss: the sender restarted its sequence.
            self.expected_prior = self.expected_prior.wrapping_add(self.current_expected());
            self.restart(seq);
            self.last_transit = transit;
            return;
        } else {
            self.late = self.late.wrapping_add(1);
        }
        self.received = self.received.wrapping_add(1);
        if arrival.is_some() {
            let d = transit.wrapping_sub(self.last_transit) as i32;
            self.last_transit = transit;
            // Clamp so one absurd timestamp cannot overflow the running value.
            let d = if d < 0 {
                d.wrapping_neg() as u32
            } else {
                d as u32
            };
            let d = if d > (1 << 24) { 1 << 24 } else { d };
            // J += (|D| - J) / 16, kept × 16 to stay in integers (RFC 3550 A.8).
            self.jitter_x16 = self
                .jitter_x16
                .wrapping_add(d)
                .wrapping_sub(self.jitter_x16.wrapping_add(8) >> 4);
            if self.jitter_x16 > self.max_jitter_x16 {
                self.max_jitter_x16 = self.jitter_x16;
            }
        }
    }

    #[inline(always)]
    fn restart(&mut self, seq: u16) {
        self.base_seq = seq as u32;
        self.max_seq = seq as u32;
        self.cycles = 0;
        self.received = self.received.wrapping_add(1);
    }

    #[inline(always)]
    const fn current_expected(&self) -> u32 {
        let ext_max = self.cycles.wrapping_mul(65_536).wrapping_add(self.max_seq);
        ext_max.wrapping_sub(self.base_seq).wrapping_add(1)
    }
}

/// Arrival time in RTP timestamp units for a clock of `clock_rate` Hz, from nanoseconds.
/// Microsecond resolution keeps the product far from overflow for any realistic uptime.
#[inline(always)]
pub const fn arrival_units(now_ns: u64, clock_rate: u32) -> u32 {
    ((now_ns / 1_000) * clock_rate as u64 / 1_000_000) as u32
}

/// Incremental one's-complement checksum update for one 16-bit word (RFC 1624 eqn. 3).
/// Words are taken exactly as they lie in memory; the one's-complement sum does not care about
/// byte order as long as checksum and data are read the same way.
#[inline(always)]
pub const fn csum_replace2(csum: u16, old: u16, new: u16) -> u16 {
    let mut sum = (!csum) as u32 + (!old) as u32 + new as u32;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// [`csum_replace2`] for a 4-byte field (an IPv4 address), bytes as in memory.
#[inline(always)]
pub const fn csum_replace4(csum: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    let c = csum_replace2(
        csum,
        u16::from_ne_bytes([old[0], old[1]]),
        u16::from_ne_bytes([new[0], new[1]]),
    );
    csum_replace2(
        c,
        u16::from_ne_bytes([old[2], old[3]]),
        u16::from_ne_bytes([new[2], new[3]]),
    )
}

/// Greatest forward jump of the sequence number still treated as loss rather than a restart
/// (RFC 3550 A.1 `MAX_DROPOUT`).
pub const MAX_DROPOUT: u32 = 3000;
/// Greatest backward jump treated as a late packet rather than a restart (`MAX_MISORDER`).
pub const MAX_MISORDER: u32 = 100;

/// Maximum number of learned flow directions (each call uses up to four per media line).
pub const MAX_MEDIA_FLOWS: u32 = 65_536;

const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);
const _: () = assert!(core::mem::size_of::<MediaFlow>() == 48);
const _: () = assert!(core::mem::size_of::<FlowCounters>() == 40);
const _: () = assert!(core::mem::size_of::<RtpQuality>() == 56);
const _: () = assert!(core::mem::size_of::<CaptureEvent>() == 16 + CAPTURE_BYTES);

#[cfg(feature = "user")]
mod user {
    // SAFETY (for all impls below): `#[repr(C)]`, only integer fields and byte arrays, no
    // implicit padding (checked by the size assertions above), so every bit pattern is valid.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::MediaFlow {}
    unsafe impl aya::Pod for super::FlowCounters {}
    unsafe impl aya::Pod for super::RtpQuality {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_from_any_map_value_sum_without_overflow() {
        let max = FlowCounters {
            packets: u64::MAX,
            bytes: u64::MAX - 1,
            redirected: 1,
            passed: u64::MAX,
            last_seen_ns: 7,
        };
        let sum = max.merged(&max).merged(&FlowCounters {
            last_seen_ns: 9,
            ..FlowCounters::default()
        });
        assert_eq!(
            (sum.packets, sum.bytes, sum.redirected),
            (u64::MAX, u64::MAX, 2)
        );
        assert_eq!(sum.last_seen_ns, 9);
    }

    #[test]
    fn the_sequence_tracker_continues_from_any_state_without_overflow() {
        // A corrupt or hostile map value: every field at its maximum.
        let mut q = RtpQuality {
            ssrc: 5,
            started: 1,
            base_seq: u32::MAX,
            max_seq: u32::MAX,
            cycles: u32::MAX,
            received: u32::MAX,
            expected_prior: u32::MAX,
            duplicates: u32::MAX,
            late: u32::MAX,
            ssrc_changes: u32::MAX,
            jitter_x16: u32::MAX,
            last_transit: u32::MAX,
            max_jitter_x16: u32::MAX,
            _pad: 0,
        };
        for seq in [0u16, 1, 40_000, 65_535, 2] {
            q.on_packet(seq, 1_000, 5, Some(u32::MAX));
        }
        q.on_packet(3, 0, 6, None);
        assert!(q.lost() <= q.expected());
    }

    fn feed(q: &mut RtpQuality, seqs: &[u16]) {
        for &s in seqs {
            q.on_packet(s, s as u32 * 160, 7, Some(s as u32 * 160));
        }
    }

    #[test]
    fn gaps_count_as_loss_and_duplicates_do_not() {
        let mut q = RtpQuality::default();
        feed(&mut q, &[1, 2, 3, 5, 6, 6, 6, 9]);
        assert_eq!(q.expected(), 9);
        assert_eq!(q.received, 6);
        assert_eq!(q.duplicates, 2);
        assert_eq!(q.lost(), 3);
        assert_eq!(q.jitter_x16, 0, "perfect timing has no jitter");
    }

    #[test]
    fn late_packets_fill_gaps_and_wraps_extend() {
        let mut q = RtpQuality::default();
        feed(&mut q, &[65_534, 65_535, 1, 0, 2]);
        assert_eq!(q.cycles, 1);
        assert_eq!(q.late, 1);
        assert_eq!(q.expected(), 5);
        assert_eq!(q.lost(), 0);
    }

    #[test]
    fn ssrc_change_starts_a_new_stream() {
        let mut q = RtpQuality::default();
        feed(&mut q, &[100, 101, 102]);
        q.on_packet(5000, 0, 99, Some(0));
        q.on_packet(5001, 160, 99, Some(160));
        assert_eq!(q.ssrc_changes, 1);
        assert_eq!(q.expected(), 5);
        assert_eq!(q.lost(), 0);
    }

    #[test]
    fn jitter_follows_rfc3550() {
        // Packets 20 ms apart in timestamp, arriving alternately 10 units early and late.
        let mut q = RtpQuality::default();
        let mut expect = 0f64;
        let mut last_transit = 0i64;
        for i in 0..200u32 {
            let ts = i * 160;
            let arrival = ts + if i % 2 == 0 { 0 } else { 20 };
            q.on_packet(i as u16, ts, 1, Some(arrival));
            let transit = arrival as i64 - ts as i64;
            if i > 0 {
                let d = (transit - last_transit).abs() as f64;
                expect += (d - expect) / 16.0;
            }
            last_transit = transit;
        }
        let got = q.jitter_x16 as f64 / 16.0;
        assert!(
            (got - expect).abs() < 1.0,
            "got {got}, RFC formula {expect}"
        );
    }

    #[test]
    fn checksum_update_matches_a_full_recompute() {
        fn full(words: &[u16]) -> u16 {
            let mut sum: u32 = words.iter().map(|w| *w as u32).sum();
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            !(sum as u16)
        }
        let mut words = [
            0x4500u16, 0x0054, 0x1234, 0x4000, 0x4011, 0, 0x0a4d, 0x0102, 0x0a4d, 0x0202,
        ];
        let c = full(&words);
        let old = [0x0a, 0x4d, 0x01, 0x02];
        let new = [0xc0, 0xa8, 0x07, 0x09];
        let updated = csum_replace4(c.to_be(), old, new);
        words[6] = 0xc0a8;
        words[7] = 0x0709;
        assert_eq!(u16::from_be(updated), full(&words));
        assert_eq!(arrival_units(1_000_000_000, 8000), 8000);
    }

    #[test]
    fn loss_is_never_negative() {
        let q = RtpQuality {
            started: 1,
            base_seq: 10,
            max_seq: 19,
            received: 12,
            duplicates: 3,
            ..Default::default()
        };
        assert_eq!(q.expected(), 10);
        assert_eq!(q.lost(), 0);
        let q = RtpQuality { received: 7, ..q };
        assert_eq!(q.lost(), 3);
    }

    #[test]
    fn expected_spans_wraps_and_earlier_streams() {
        let q = RtpQuality {
            started: 1,
            base_seq: 65_530,
            max_seq: 4,
            cycles: 1,
            expected_prior: 100,
            ..Default::default()
        };
        assert_eq!(q.expected(), 100 + 11);
    }
}
