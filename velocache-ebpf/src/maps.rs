//! The maps the classifier reads and the daemon fills. Sizes are upper bounds on what an operator
//! configures; none grows with traffic.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuArray},
};
use velocache_common::{
    COUNTER_SLOTS, ClassifierConfig, Ipv4Prefix, Ipv6Prefix, PortKey, ServiceEntry,
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
