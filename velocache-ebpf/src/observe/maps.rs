//! The maps of TLS observation. The daemon fills the steering and policy maps and reads the
//! flows and events; the programs create and update flows and write events.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use velocache_common::tls::{
    MAX_OBSERVED_FLOWS, MAX_SNI_POLICIES, MAX_STEER_PREFIXES, MAX_STEERED_ADDRS, ObserveConfig,
    ObservedFlow, SniKey, SniPolicy, SteerEntry, TlsFlowKey,
};

/// Switch; a single entry at index 0. Zero (never configured): TLS flows are all steered.
#[map]
pub static TLS_OBSERVE: Array<ObserveConfig> = Array::with_max_entries(1, 0);

/// Observed flows by client → server 5-tuple. LRU: a flood of flows that never end evicts the
/// oldest entries instead of stopping observation of new ones.
#[map]
pub static TLS_FLOWS: LruHashMap<TlsFlowKey, ObservedFlow> =
    LruHashMap::with_max_entries(MAX_OBSERVED_FLOWS, 0);

/// Destinations learned from DNS answers for names a rule could act on, with their expiry.
#[map]
pub static TLS_STEER_V4: LruHashMap<[u8; 4], SteerEntry> =
    LruHashMap::with_max_entries(MAX_STEERED_ADDRS, 0);
/// The same for IPv6.
#[map]
pub static TLS_STEER_V6: LruHashMap<[u8; 16], SteerEntry> =
    LruHashMap::with_max_entries(MAX_STEERED_ADDRS, 0);

/// `[tls] steer_prefixes`: destinations always steered.
#[map]
pub static TLS_STEER_PREFIX_V4: LpmTrie<[u8; 4], u32> =
    LpmTrie::with_max_entries(MAX_STEER_PREFIXES, 0);
/// The same for IPv6.
#[map]
pub static TLS_STEER_PREFIX_V6: LpmTrie<[u8; 16], u32> =
    LpmTrie::with_max_entries(MAX_STEER_PREFIXES, 0);

/// Host names and dot suffixes of the rules that decide TLS connections.
#[map]
pub static TLS_SNI_POLICY: HashMap<SniKey, SniPolicy> =
    HashMap::with_max_entries(MAX_SNI_POLICIES, 0);

/// Hello and end events for the daemon (1 MiB: a few thousand events of slack for a burst of
/// new connections while the daemon's reader is descheduled).
#[map]
pub static TLS_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// The ClientHello reader (`velocache_tls_hello`) at index 0, for the classifier's tail call:
/// its own program, so its loops are verified against their own budget and its stack is not
/// added to the classifier's. The daemon fills it before attaching anything.
#[map]
pub static TLS_PROGS: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Per-CPU working space of the ClientHello reader (too large for the 512-byte stack).
#[map]
pub static TLS_SCRATCH: PerCpuArray<crate::observe::hello::Scratch> =
    PerCpuArray::with_max_entries(1, 0);
