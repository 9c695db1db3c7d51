//! From kernel counters to what a call record says about its media: packets, loss %, jitter
//! in milliseconds, and a MOS estimate.
//!
//! The MOS is the ITU-T G.107 E-model reduced to what a relay can see (as sngrep, Homer and
//! most SBCs report it): no one-way delay is known, so the delay impairment comes from the
//! de-jitter buffer a receiver needs (twice the jitter) plus one packetisation interval; the
//! equipment impairment and packet-loss robustness come from the codec (G.113 Appendix I
//! values, PLC on). An estimate for comparing calls, not a listening test.
use velocache_common::rtp::RtpQuality;

use super::FlowStats;

/// One direction's media numbers, ready for a log line.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DirectionReport {
    /// Packets seen by the kernel.
    pub packets: u64,
    /// IP bytes.
    pub bytes: u64,
    /// Packets forwarded by the XDP program itself (the rest went through the stack).
    pub fast_path_packets: u64,
    /// Packets lost (expected − received, never negative).
    pub lost: u64,
    /// Lost / expected, in percent.
    pub loss_pct: f64,
    /// RFC 3550 interarrival jitter at the end of the call, in milliseconds.
    pub jitter_ms: f64,
    /// Highest jitter seen, in milliseconds.
    pub max_jitter_ms: f64,
    /// MOS estimate (1–4.5); `None` without RTP.
    pub mos: Option<f64>,
    /// SSRC changes seen.
    pub ssrc_changes: u32,
    /// Duplicates (including RFC 2833/4733 end-of-event repeats that reuse a number).
    pub duplicates: u32,
}

/// (equipment impairment Ie, packet-loss robustness Bpl) for an encoding name.
fn codec_impairment(codec: Option<&str>) -> (f64, f64) {
    match codec.map(str::to_ascii_uppercase).as_deref() {
        Some("PCMU" | "PCMA") => (0.0, 25.1),
        Some("G729" | "G729A") => (11.0, 19.0),
        Some("G723") => (15.0, 16.1),
        Some("GSM") => (20.0, 10.0),
        Some("G722") => (0.0, 20.0),
        Some("ILBC") => (11.0, 32.0),
        Some("OPUS") => (0.0, 35.0),
        _ => (0.0, 20.0),
    }
}

/// E-model MOS from loss and jitter (see the module comment).
pub fn mos(loss_pct: f64, jitter_ms: f64, codec: Option<&str>) -> f64 {
    let (ie, bpl) = codec_impairment(codec);
    let ppl = loss_pct.clamp(0.0, 100.0);
    let ie_eff = ie + (95.0 - ie) * ppl / (ppl + bpl);
    let delay = 2.0 * jitter_ms.max(0.0) + 20.0;
    let id = 0.024 * delay
        + if delay > 177.3 {
            0.11 * (delay - 177.3)
        } else {
            0.0
        };
    let r = 93.2 - id - ie_eff;
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6
    }
}

fn ms(units_x16: u32, clock_rate: u32) -> f64 {
    if clock_rate == 0 {
        return 0.0;
    }
    f64::from(units_x16) / 16.0 * 1000.0 / f64::from(clock_rate)
}

/// Sum RTP flows (one or more streams) of one direction into a report. `streams` pairs each
/// flow's statistics with its clock rate and codec.
pub fn direction(streams: &[(FlowStats, u32, Option<&str>)]) -> DirectionReport {
    let mut r = DirectionReport::default();
    let mut expected = 0u64;
    let mut codec = None;
    for (s, clock, c) in streams {
        // Map values are summed saturating: a corrupt or absurd counter must not panic.
        r.packets = r.packets.saturating_add(s.counters.packets);
        r.bytes = r.bytes.saturating_add(s.counters.bytes);
        r.fast_path_packets = r.fast_path_packets.saturating_add(s.counters.redirected);
        let q: &RtpQuality = &s.quality;
        expected = expected.saturating_add(q.expected());
        r.lost = r.lost.saturating_add(q.lost());
        r.jitter_ms = r.jitter_ms.max(ms(q.jitter_x16, *clock));
        r.max_jitter_ms = r.max_jitter_ms.max(ms(q.max_jitter_x16, *clock));
        r.ssrc_changes = r.ssrc_changes.saturating_add(q.ssrc_changes);
        r.duplicates = r.duplicates.saturating_add(q.duplicates);
        if codec.is_none() {
            codec = *c;
        }
    }
    if expected > 0 {
        r.loss_pct = r.lost as f64 * 100.0 / expected as f64;
        r.mos = Some((mos(r.loss_pct, r.jitter_ms, codec) * 100.0).round() / 100.0);
    }
    r.loss_pct = (r.loss_pct * 100.0).round() / 100.0;
    r.jitter_ms = (r.jitter_ms * 1000.0).round() / 1000.0;
    r.max_jitter_ms = (r.max_jitter_ms * 1000.0).round() / 1000.0;
    r
}

#[cfg(test)]
mod tests {
    use velocache_common::rtp::FlowCounters;

    use super::*;

    #[test]
    fn absurd_map_values_give_finite_figures_not_a_panic() {
        let huge = FlowStats {
            counters: FlowCounters {
                packets: u64::MAX,
                bytes: u64::MAX,
                redirected: u64::MAX,
                passed: 0,
                last_seen_ns: 0,
            },
            quality: RtpQuality {
                started: 1,
                cycles: u32::MAX,
                max_seq: u32::MAX,
                received: 0,
                expected_prior: u32::MAX,
                ssrc_changes: u32::MAX,
                duplicates: u32::MAX,
                jitter_x16: u32::MAX,
                max_jitter_x16: u32::MAX,
                ..RtpQuality::default()
            },
        };
        let r = direction(&[(huge, 8000, Some("PCMA")), (huge, 1, None)]);
        assert_eq!(r.packets, u64::MAX);
        assert!(r.loss_pct.is_finite() && r.loss_pct <= 100.0);
        assert!(r.mos.is_some_and(f64::is_finite));
    }

    #[test]
    fn a_clean_g711_call_scores_near_the_top() {
        let m = mos(0.0, 0.5, Some("PCMA"));
        assert!(m > 4.3 && m <= 4.5, "{m}");
        assert!(mos(5.0, 0.5, Some("PCMA")) < m);
        assert!(mos(5.0, 0.5, Some("G729")) < mos(5.0, 0.5, Some("PCMA")));
        assert!(mos(0.0, 200.0, Some("PCMA")) < 4.0);
        assert_eq!(mos(100.0, 1000.0, None), 1.0);
    }

    #[test]
    fn direction_sums_streams_and_converts_jitter() {
        let s = FlowStats {
            counters: FlowCounters {
                packets: 98,
                bytes: 98 * 200,
                redirected: 97,
                ..Default::default()
            },
            quality: RtpQuality {
                started: 1,
                base_seq: 1,
                max_seq: 100,
                received: 98,
                jitter_x16: 16 * 8,
                ..Default::default()
            },
        };
        let r = direction(&[(s, 8000, Some("PCMA"))]);
        assert_eq!(r.packets, 98);
        assert_eq!(r.lost, 2);
        assert_eq!(r.loss_pct, 2.0);
        assert_eq!(r.jitter_ms, 1.0, "8 units at 8 kHz");
        assert!(r.mos.unwrap() < 4.41);
        assert_eq!(r.fast_path_packets, 97);
    }
}
