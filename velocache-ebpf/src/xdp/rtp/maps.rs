//! The fast path's maps. The daemon creates and deletes every entry; the program only looks
//! them up, so a packet in flight cannot resurrect a flow the daemon just removed.
//!
//! `RTP_CAPTURE` carries copies of the frames of flows whose call is being captured
//! (`FLOW_CAPTURE`) to the daemon.
//!
//! The daemon pins all four (aya `map_pin_path`) when it has a bpffs directory, so learned flows
//! (and their counters) survive a daemon restart; the daemon expires them by `last_seen_ns`.
use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuHashMap, RingBuf},
};
use velocache_common::rtp::{
    CAPTURE_RING_BYTES, FlowCounters, FlowKey, MAX_MEDIA_FLOWS, MediaFlow, RtpQuality,
};

/// Learned flows: 5-tuple → what to do with it.
#[map]
pub static RTP_FLOWS: HashMap<FlowKey, MediaFlow> = HashMap::with_max_entries(MAX_MEDIA_FLOWS, 0);

/// Per-CPU packet and byte counters of each learned flow.
#[map]
pub static RTP_COUNTERS: PerCpuHashMap<FlowKey, FlowCounters> =
    PerCpuHashMap::with_max_entries(MAX_MEDIA_FLOWS, 0);

/// RTP sequence, loss and jitter state of each learned flow (shared by all CPUs: sequence
/// tracking needs one view of the stream even when its packets move between CPUs).
#[map]
pub static RTP_QUALITY: HashMap<FlowKey, RtpQuality> =
    HashMap::with_max_entries(MAX_MEDIA_FLOWS, 0);

/// Frames of captured flows, for the daemon (`velocache calls capture`). A full ring loses the
/// copy, never the packet.
#[map]
pub static RTP_CAPTURE: RingBuf = RingBuf::with_byte_size(CAPTURE_RING_BYTES, 0);
