//! The dispatcher's chain through `BPF_PROG_TEST_RUN`, without a network: the test object
//! (`velocache-xdp-probes`, built from the same dispatcher source as `velocache-xdp`) has a probe
//! program per slot number that records that it ran and then hands the frame on or keeps it, as
//! told. Frames enter on `lo` of this process's namespace, where slots are enabled without
//! attaching anything. Needs root, like the daemon (`crate::testutil`).
use aya::maps::{Array, HashMap, MapData, PerCpuHashMap, PerCpuValues};
use velocache_common::{
    rtp::{FAMILY_V4, FlowCounters, FlowKey, MediaFlow},
    xdp::{XDP_DISPATCHER, XDP_SLOT_COUNT, XdpSlot},
};

use super::*;
use crate::testutil::require_root;

static PROBES: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/velocache-xdp-probes"));

const PROBE_PROGRAMS: [&str; XDP_SLOT_COUNT as usize] = [
    "velocache_probe0",
    "velocache_probe1",
    "velocache_probe2",
    "velocache_probe3",
    "velocache_probe4",
    "velocache_probe5",
    "velocache_probe6",
    "velocache_probe7",
];

const XDP_ABORTED: u32 = 0;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

/// The probe object, loaded; slots filled and enabled by each test.
struct Chain {
    owner: XdpOwner,
}

impl Chain {
    fn new() -> Chain {
        require_root("loading BPF programs");
        Chain {
            owner: XdpOwner::with_object(PROBES, XdpSettings::default()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut object::Loaded) -> T) -> T {
        let mut owner = self.owner.inner.lock();
        f(owner.loaded().expect("loading the probe object"))
    }

    /// Put probe programs into `slots`.
    fn fill(&self, slots: &[u32]) {
        self.with(|l| {
            for s in slots {
                l.fill(*s, PROBE_PROGRAMS[*s as usize])
                    .expect("filling a slot");
            }
        });
    }

    /// Enable exactly `slots` on `lo`.
    fn enable(&self, slots: &[u32]) {
        let mask = slots.iter().fold(0, |m, s| m | 1 << s);
        self.with(|l| l.set_mask(lo(), mask).expect("XDP_INTERFACES"));
    }

    /// The probe in `slot` returns `action` instead of handing the frame on.
    fn keep(&self, slot: u32, action: u32) {
        self.with(|l| {
            let mut actions: Array<&mut MapData, u32> =
                Array::try_from(l.ebpf_mut().map_mut("PROBE_ACTIONS").unwrap()).unwrap();
            actions.set(slot, action + 1, 0).unwrap();
        });
    }

    /// One frame through the dispatcher: (action, the slots whose probes ran, in order).
    fn run(&self, frame: &[u8]) -> (u32, Vec<u32>) {
        self.with(|l| {
            let mut trace: Array<&mut MapData, u32> =
                Array::try_from(l.ebpf_mut().map_mut("PROBE_TRACE").unwrap()).unwrap();
            trace.set(0, 0, 0).unwrap();
        });
        let (action, out) = self.owner.test_run(XDP_DISPATCHER, frame);
        assert_eq!(out, frame, "no probe touches the frame");
        let ran = self.with(|l| {
            let trace: Array<&mut MapData, u32> =
                Array::try_from(l.ebpf_mut().map_mut("PROBE_TRACE").unwrap()).unwrap();
            let n = trace.get(&0, 0).unwrap();
            (1..=n).map(|i| trace.get(&i, 0).unwrap()).collect()
        });
        (action, ran)
    }
}

fn lo() -> u32 {
    nix::net::if_::if_nametoindex("lo").unwrap()
}

/// Ethernet + IPv4 + UDP + a 12-byte RTP header and 20 bytes of payload.
fn udp_frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let payload = 12 + 20;
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    let tot = (20 + 8 + payload) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&tot.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&[0x80, 8, 0, 1, 0, 0, 0, 160, 0, 0, 0, 7]);
    f.extend_from_slice(&[0xd5; 20]);
    f
}

fn frame() -> Vec<u8> {
    udp_frame([192, 0, 2, 10], [198, 51, 100, 20], 6000, 7000)
}

#[test]
fn a_frame_visits_the_enabled_slots_in_slot_order() {
    let chain = Chain::new();
    // Filled out of order: the slot number decides, not when a program came.
    chain.fill(&[7, 2, 0, 1]);
    chain.enable(&[0, 1, 2, 7]);
    assert_eq!(chain.run(&frame()), (XDP_PASS, vec![0, 1, 2, 7]));
}

#[test]
fn empty_and_disabled_slots_are_skipped() {
    let chain = Chain::new();
    // 1 is enabled but empty; 3 is filled but not enabled here; 4 is neither.
    chain.fill(&[0, 2, 3, 5]);
    chain.enable(&[0, 1, 2, 5]);
    assert_eq!(chain.run(&frame()), (XDP_PASS, vec![0, 2, 5]));
    // Only empty slots enabled: straight to the stack.
    chain.enable(&[1, 4]);
    assert_eq!(chain.run(&frame()), (XDP_PASS, vec![]));
}

#[test]
fn a_slot_that_does_not_pass_ends_the_chain() {
    let chain = Chain::new();
    chain.fill(&[0, 1, 2]);
    chain.enable(&[0, 1, 2]);
    chain.keep(1, XDP_DROP);
    assert_eq!(chain.run(&frame()), (XDP_DROP, vec![0, 1]));
    chain.keep(1, XDP_TX);
    assert_eq!(chain.run(&frame()), (XDP_TX, vec![0, 1]));
    chain.keep(0, XDP_ABORTED);
    assert_eq!(chain.run(&frame()), (XDP_ABORTED, vec![0]));
}

#[test]
fn an_interface_without_slots_passes_every_frame_untouched() {
    let chain = Chain::new();
    chain.fill(&[0, 1]);
    // Enabled elsewhere only.
    chain.with(|l| l.set_mask(lo() + 100_000, 0b11).unwrap());
    assert_eq!(chain.run(&frame()), (XDP_PASS, vec![]));
    chain.enable(&[0, 1]);
    assert_eq!(chain.run(&frame()).1, vec![0, 1]);
    // Disabling removes the entry: back to nothing.
    chain.enable(&[]);
    assert_eq!(chain.run(&frame()), (XDP_PASS, vec![]));
    // Runts and non-IP frames take the same way as any frame.
    chain.enable(&[0]);
    assert_eq!(chain.run(&frame()[..20]), (XDP_PASS, vec![0]));
}

#[test]
fn the_rtp_program_hands_what_it_does_not_forward_to_the_next_slot() {
    let chain = Chain::new();
    let rtp = XdpSlot::Rtp as u32;
    chain.with(|l| l.fill(rtp, XdpSlot::Rtp.program()).unwrap());
    chain.fill(&[rtp + 1]);
    chain.enable(&[rtp, rtp + 1]);
    // Not a learned flow.
    assert_eq!(chain.run(&frame()), (XDP_PASS, vec![rtp + 1]));

    // A learned one the test namespace cannot route: counted by the fast path, then passed on.
    let mut key = FlowKey {
        sport_be: 6000u16.to_be(),
        dport_be: 7000u16.to_be(),
        family: FAMILY_V4,
        proto: 17,
        ..FlowKey::default()
    };
    key.src[..4].copy_from_slice(&[192, 0, 2, 10]);
    key.dst[..4].copy_from_slice(&[198, 51, 100, 20]);
    let cpus = aya::util::nr_cpus().unwrap();
    chain.with(|l| {
        let ebpf = l.ebpf_mut();
        let mut counters: PerCpuHashMap<&mut MapData, FlowKey, FlowCounters> =
            PerCpuHashMap::try_from(ebpf.map_mut("RTP_COUNTERS").unwrap()).unwrap();
        let zero = PerCpuValues::try_from(vec![FlowCounters::default(); cpus]).unwrap();
        counters.insert(key, zero, 0).unwrap();
        let mut flows: HashMap<&mut MapData, FlowKey, MediaFlow> =
            HashMap::try_from(ebpf.map_mut("RTP_FLOWS").unwrap()).unwrap();
        flows.insert(key, MediaFlow::default(), 0).unwrap();
    });
    assert_eq!(chain.run(&frame()), (XDP_PASS, vec![rtp + 1]));
    let packets: u64 = chain.with(|l| {
        let counters: PerCpuHashMap<&mut MapData, FlowKey, FlowCounters> =
            PerCpuHashMap::try_from(l.ebpf_mut().map_mut("RTP_COUNTERS").unwrap()).unwrap();
        counters
            .get(&key, 0)
            .unwrap()
            .iter()
            .map(|c| c.packets)
            .sum()
    });
    assert_eq!(packets, 1, "the fast path ran before the next slot");
}

#[test]
fn a_slot_is_claimed_once_and_only_on_interfaces_that_exist() {
    let missing = XdpOwner::with_object(PROBES, XdpSettings::default());
    match missing.claim(XdpSlot::Rtp, &["vc-no-such0".to_string()]) {
        Err(XdpError::NoSuchInterface(i)) => assert_eq!(i, "vc-no-such0"),
        other => panic!("unexpected: {:?}", other.map(|_| ())),
    }
    assert!(!missing.claimed());

    let chain = Chain::new();
    let maps = chain.owner.claim(XdpSlot::Rtp, &[]).unwrap();
    assert!(chain.owner.claimed());
    match chain.owner.claim(XdpSlot::Rtp, &[]) {
        Err(XdpError::AlreadyClaimed(s)) => assert_eq!(s, "rtp"),
        other => panic!("unexpected: {:?}", other.map(|_| ())),
    }
    // The claimant holds the slot's maps; they are no longer in the object.
    let mut maps = maps;
    for name in XdpSlot::Rtp.maps() {
        maps.take(name).unwrap();
    }
    assert!(chain.with(|l| l.ebpf_mut().map("RTP_FLOWS").is_none()));
    // With nothing attached, attach and detach are no-ops that leave the maps usable.
    chain.owner.attach();
    chain.owner.detach();
}
