//! Writing the configuration into the kernel maps and reading the counters back.
//!
//! Updates are ordered so that the classifier never sees a half-applied configuration that
//! intercepts more than either the old or the new one: new bypass entries go in before stale
//! ones come out, and stale service ports are removed only after new ones are present.
use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use aya::{
    Ebpf,
    maps::{
        Array, HashMap, MapData, PerCpuArray,
        lpm_trie::{Key, LpmTrie},
    },
};
use ipnet::IpNet;
use serde::Serialize;
use velocache_common::{
    COUNTER_SLOTS, ClassifierConfig, IPPROTO_TCP, IPPROTO_UDP, PortKey, Service, ServiceEntry,
    Verdict, counter_index,
};

use super::DatapathError;
use crate::config::{DatapathConfig, Intercept, Transport};

fn map_err(name: &'static str, e: impl std::fmt::Display) -> DatapathError {
    DatapathError::Map {
        name,
        reason: e.to_string(),
    }
}

fn map_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut aya::maps::Map, DatapathError> {
    ebpf.map_mut(name)
        .ok_or_else(|| map_err(name, "missing from the object"))
}

/// Write ports, bypass prefixes and switches. Interception is enabled last.
pub(super) fn apply(
    ebpf: &mut Ebpf,
    cfg: &DatapathConfig,
    intercepts: &[Intercept],
) -> Result<(), DatapathError> {
    apply_ports(ebpf, intercepts)?;
    let (clients_v4, clients_v6) = split(&cfg.bypass_clients);
    let (dests_v4, dests_v6) = split(&cfg.bypass_destinations);
    apply_trie::<4>(ebpf, "BYPASS_CLIENTS_V4", &clients_v4)?;
    apply_trie::<16>(ebpf, "BYPASS_CLIENTS_V6", &clients_v6)?;
    apply_trie::<4>(ebpf, "BYPASS_DESTS_V4", &dests_v4)?;
    apply_trie::<16>(ebpf, "BYPASS_DESTS_V6", &dests_v6)?;

    let mut config: Array<&mut MapData, ClassifierConfig> =
        Array::try_from(map_mut(ebpf, "CONFIG")?).map_err(|e| map_err("CONFIG", e))?;
    let value = ClassifierConfig {
        mark: cfg.mark,
        enabled: 1,
        intercept_gateway: u32::from(cfg.intercept_gateway_addresses),
        _reserved: 0,
    };
    config.set(0, value, 0).map_err(|e| map_err("CONFIG", e))
}

fn apply_ports(ebpf: &mut Ebpf, intercepts: &[Intercept]) -> Result<(), DatapathError> {
    let mut ports: HashMap<&mut MapData, PortKey, ServiceEntry> =
        HashMap::try_from(map_mut(ebpf, "SERVICE_PORTS")?)
            .map_err(|e| map_err("SERVICE_PORTS", e))?;
    let mut wanted = HashSet::new();
    for ic in intercepts.iter().filter(|i| i.enabled) {
        for &tr in ic.transports {
            let proto = match tr {
                Transport::Tcp => IPPROTO_TCP,
                Transport::Udp => IPPROTO_UDP,
            };
            for &port in &ic.ports {
                let key = PortKey::new(proto, port);
                let entry = ServiceEntry {
                    service: ic.service as u32,
                    listen_port: u32::from(ic.listen_port),
                };
                ports
                    .insert(key, entry, 0)
                    .map_err(|e| map_err("SERVICE_PORTS", e))?;
                wanted.insert(key);
            }
        }
    }
    let stale: Vec<PortKey> = ports
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !wanted.contains(k))
        .collect();
    for key in stale {
        ports
            .remove(&key)
            .map_err(|e| map_err("SERVICE_PORTS", e))?;
    }
    Ok(())
}

/// A prefix as an LPM-trie key: (prefix length, network address bytes).
type Prefix<const N: usize> = (u32, [u8; N]);

fn split(nets: &[IpNet]) -> (Vec<Prefix<4>>, Vec<Prefix<16>>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for net in nets {
        match net.trunc() {
            IpNet::V4(n) => v4.push((u32::from(n.prefix_len()), n.network().octets())),
            IpNet::V6(n) => v6.push((u32::from(n.prefix_len()), n.network().octets())),
        }
    }
    (v4, v6)
}

fn apply_trie<const N: usize>(
    ebpf: &mut Ebpf,
    name: &'static str,
    wanted: &[Prefix<N>],
) -> Result<(), DatapathError> {
    let mut trie: LpmTrie<&mut MapData, [u8; N], u32> =
        LpmTrie::try_from(map_mut(ebpf, name)?).map_err(|e| map_err(name, e))?;
    for (len, addr) in wanted {
        trie.insert(&Key::new(*len, *addr), 1, 0)
            .map_err(|e| map_err(name, e))?;
    }
    let stale: Vec<Key<[u8; N]>> = trie
        .keys()
        .filter_map(Result::ok)
        .filter(|k| {
            !wanted
                .iter()
                .any(|(len, addr)| k.prefix_len() == *len && k.data() == *addr)
        })
        .collect();
    for key in stale {
        trie.remove(&key).map_err(|e| map_err(name, e))?;
    }
    Ok(())
}

/// Shared handle to the per-CPU counters map.
#[derive(Clone)]
pub struct Counters {
    map: Arc<Mutex<PerCpuArray<MapData, u64>>>,
}

/// Counter totals (summed over CPUs) per service and verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CounterSnapshot {
    /// `(service, verdict, packets)` for every non-zero counter.
    pub entries: Vec<(String, String, u64)>,
}

impl CounterSnapshot {
    /// Packets of `service` with `verdict`.
    pub fn get(&self, service: Service, verdict: Verdict) -> u64 {
        self.entries
            .iter()
            .find(|(s, v, _)| s == service.name() && v == verdict.name())
            .map_or(0, |e| e.2)
    }
}

impl Counters {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, DatapathError> {
        let map = ebpf
            .take_map("COUNTERS")
            .ok_or_else(|| map_err("COUNTERS", "missing from the object"))?;
        let map = PerCpuArray::try_from(map).map_err(|e| map_err("COUNTERS", e))?;
        Ok(Counters {
            map: Arc::new(Mutex::new(map)),
        })
    }

    /// Sum every slot over all CPUs.
    pub fn snapshot(&self) -> Result<CounterSnapshot, DatapathError> {
        let map = self
            .map
            .lock()
            .map_err(|_| map_err("COUNTERS", "lock poisoned"))?;
        let mut entries = Vec::new();
        for service in Service::ALL {
            for verdict in Verdict::ALL {
                let idx = counter_index(service as u32, verdict);
                debug_assert!(idx < COUNTER_SLOTS);
                let values = map.get(&idx, 0).map_err(|e| map_err("COUNTERS", e))?;
                let total: u64 = values.iter().sum();
                if total > 0 {
                    entries.push((
                        service.name().to_string(),
                        verdict.name().to_string(),
                        total,
                    ));
                }
            }
        }
        Ok(CounterSnapshot { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_truncated_and_split_by_family() {
        let nets: Vec<IpNet> = vec![
            "10.1.2.3/8".parse().unwrap(),
            "fd00::1/64".parse().unwrap(),
            "192.168.1.7/32".parse().unwrap(),
        ];
        let (v4, v6) = split(&nets);
        assert_eq!(v4, vec![(8, [10, 0, 0, 0]), (32, [192, 168, 1, 7])]);
        assert_eq!(v6.len(), 1);
        assert_eq!(v6[0].0, 64);
        assert_eq!(&v6[0].1[..2], &[0xfd, 0x00]);
        assert!(v6[0].1[8..].iter().all(|b| *b == 0), "host bits cleared");
    }
}
