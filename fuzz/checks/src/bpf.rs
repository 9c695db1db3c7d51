//! Values of the kernel's maps, decoded as the daemon decodes them (`aya::Pod`: the bytes as
//! they lie, native endian, any bit pattern) and then used: media statistics from the RTP
//! fast path's counters and sequence state, and the sequence tracker itself (the very code the
//! XDP program runs per packet) continuing from any state.
use velocache::rtp::{FlowStats, report};
use velocache_common::{
    Service, Verdict,
    rtp::{FlowCounters, RtpQuality},
};

/// Native-endian fields off the front of the input, zero once it runs out.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }
    fn u16(&mut self) -> u16 {
        u16::from_ne_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_ne_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_ne_bytes(self.take())
    }
    fn counters(&mut self) -> FlowCounters {
        FlowCounters {
            packets: self.u64(),
            bytes: self.u64(),
            redirected: self.u64(),
            passed: self.u64(),
            last_seen_ns: self.u64(),
        }
    }
    fn quality(&mut self) -> RtpQuality {
        RtpQuality {
            ssrc: self.u32(),
            started: self.u32(),
            base_seq: self.u32(),
            max_seq: self.u32(),
            cycles: self.u32(),
            received: self.u32(),
            expected_prior: self.u32(),
            duplicates: self.u32(),
            late: self.u32(),
            ssrc_changes: self.u32(),
            jitter_x16: self.u32(),
            last_transit: self.u32(),
            max_jitter_x16: self.u32(),
            _pad: self.u32(),
        }
    }
}

/// Two flows' map values (per-CPU counters summed, sequence state) become a direction report
/// with finite figures; the rest of the input drives the sequence tracker packet by packet
/// from the second flow's state, and loss never exceeds what was expected.
pub fn bpf_map_values(data: &[u8]) {
    let mut f = Fields(data);
    let _ = Service::from_u32(f.u32());
    let _ = Verdict::ALL.get(f.u32() as usize % 16).map(|v| v.name());
    let clock = f.u32();
    let mut flows = Vec::new();
    for _ in 0..2 {
        let mut counters = FlowCounters::default();
        // Two CPUs' counters, summed as the daemon sums them.
        for _ in 0..2 {
            counters = counters.merged(&f.counters());
        }
        flows.push(FlowStats {
            counters,
            quality: f.quality(),
        });
    }
    let streams: Vec<_> = flows.iter().map(|s| (*s, clock, Some("PCMA"))).collect();
    let r = report::direction(&streams);
    assert!(r.loss_pct.is_finite() && r.jitter_ms.is_finite() && r.max_jitter_ms.is_finite());
    assert!(r.mos.is_none_or(f64::is_finite));
    let mut q = flows[1].quality;
    while !f.0.is_empty() {
        let (seq, ts, ssrc) = (f.u16(), f.u32(), f.u32());
        let arrival = (ssrc & 1 == 1).then_some(ts ^ ssrc);
        q.on_packet(seq, ts, ssrc & 3, arrival);
        assert!(q.lost() <= q.expected());
    }
}
