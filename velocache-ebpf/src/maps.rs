//! The maps the programs read and the daemon fills, declared once; their key and value types come
//! from `velocache-common`. Sizes are upper bounds: the configuration maps hold what an operator
//! configures, the LRU maps (`STEERED`, `FRAGMENTS`) hold short-lived state and evict the oldest.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, SockMap},
};
use velocache_common::{
    COUNTER_SLOTS, ClassifierConfig, Ipv4Prefix, Ipv6Prefix, PortKey, ServiceEntry,
    steer::{FragKey, FragValue, LISTENER_SLOTS, SteerKey, SteerValue},
};

/// (protocol, destination port) → service and listener port.
#[map]
pub static SERVICE_PORTS: HashMap<PortKey, ServiceEntry> = HashMap::with_max_entries(256, 0);

/// Mark and switches; a single entry at index 0.
#[map]
pub static CONFIG: Array<ClassifierConfig> = Array::with_max_entries(1, 0);

/// Client (source) prefixes that are never intercepted.
#[map]
pub static BYPASS_CLIENTS_V4: LpmTrie<Ipv4Prefix, u32> = LpmTrie::with_max_entries(4096, 0);
/// Client (source) prefixes that are never intercepted, IPv6.
#[map]
pub static BYPASS_CLIENTS_V6: LpmTrie<Ipv6Prefix, u32> = LpmTrie::with_max_entries(4096, 0);
/// Destination prefixes that are never intercepted.
#[map]
pub static BYPASS_DESTS_V4: LpmTrie<Ipv4Prefix, u32> = LpmTrie::with_max_entries(4096, 0);
/// Destination prefixes that are never intercepted, IPv6.
#[map]
pub static BYPASS_DESTS_V6: LpmTrie<Ipv6Prefix, u32> = LpmTrie::with_max_entries(4096, 0);

/// Per-CPU packet counters indexed by `velocache_common::counter_index`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// The daemon's listening sockets by `steer::listener_slot`; the daemon inserts them after
/// binding, and the kernel drops an entry when its socket closes (so an empty slot means the
/// daemon, or that service, is gone).
#[map]
pub static LISTENERS: SockMap = SockMap::with_max_entries(LISTENER_SLOTS, 0);

/// Tuples the classifier steered where the kernel's own listener lookup decides next (a SYN
/// handed to a closing socket, a datagram reassembled after the classifier ran). Only these are
/// answered by the `sk_lookup` program.
#[map]
pub static STEERED: LruHashMap<SteerKey, SteerValue> = LruHashMap::with_max_entries(65536, 0);

/// Tuples whose latest SYN was passed around a closing daemon socket (no listener then): the
/// connection runs directly, so its later packets are passed too, even while that socket still
/// holds the tuple. Deleted when a SYN of the tuple is steered again.
#[map]
pub static PASSED: LruHashMap<SteerKey, u32> = LruHashMap::with_max_entries(16384, 0);

/// Per fragmented datagram: what was done with it, and its first fragment's ports.
#[map]
pub static FRAGMENTS: LruHashMap<FragKey, FragValue> = LruHashMap::with_max_entries(16384, 0);
