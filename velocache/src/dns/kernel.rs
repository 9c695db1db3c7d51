//! Kernel answers: the daemon's side of the XDP `Dns` slot (`velocache_common::dns`).
//!
//! The forwarder's hit path hands every UDP hit of an entry asked at least `kernel_min_hits`
//! times to [`KernelAnswers::offer`]. An entry that qualifies — fresh, answered under the rules
//! in force with no rule acting on its name (no deny, passthrough or `ttl_override`), not a
//! name TLS steering learns addresses from, rendered in at most 508 bytes, at most 32 TTLs — is
//! rendered once for that query shape exactly as the hit path renders it, and the sections
//! after the question go into `DNS_ANSWERS` with the entry's store time and freshness. From then
//! on the XDP program answers that shape in the kernel and the daemon never sees those queries.
//!
//! What leaves: map updates and deletes, and per stats interval one summary `query` line per
//! name the kernel answered (with `count`), instead of one line per packet. Entries leave the
//! map when their freshness ends (the sweep, every second), when a new answer replaces the
//! cache entry (a prefetch, a refresh: [`KernelAnswers::forget`]), and all at once when the
//! rules change (a reload) — the kernel itself stops answering an entry at `fresh_until_ns`, so
//! the sweep's delay never serves an expired answer. With prefetch on, the kernel stops early,
//! at the start of the prefetch window, so the daemon sees the hits that trigger the refresh.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use aya::maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuArray};
use parking_lot::Mutex;
use thiserror::Error;
use velocache_common::dns::{
    DNS_ANSWER_MAX, DNS_MAX_TTLS, DnsAnswer, DnsCounter, DnsKey, FLAG_AD, FLAG_TC, KEY_CD, KEY_DO,
    KEY_EDNS,
};

use super::{
    cache::{CachedAnswer, TtlMode},
    forwarder::verdict,
    handler::Request,
    wire::{self, HEADER_LEN, QueryView, get16},
};
use crate::{
    datapath::xdp::{SlotMaps, XdpError},
    observe::{Steering, monotonic_ns},
    rules::{Action, Rules},
};

/// Why kernel answers could not start.
#[derive(Debug, Error)]
pub enum KernelAnswersError {
    /// The slot could not be claimed or its maps taken.
    #[error(transparent)]
    Xdp(#[from] XdpError),
    /// A map has another shape than expected.
    #[error("DNS kernel map: {0}")]
    Map(#[from] MapError),
}

/// What decides admission.
#[derive(Debug, Clone, Copy)]
pub struct KernelSettings {
    /// Hits an entry needs before it goes to the kernel.
    pub min_hits: u32,
    /// The prefetch window (percent of the TTL), when prefetch is on.
    pub prefetch_percent: Option<u32>,
}

/// One kernel entry, as the daemon remembers it.
struct Installed {
    cache_key: Box<[u8]>,
    qname: String,
    qtype: u16,
    /// When the kernel stops answering it.
    until: Instant,
    /// Its hit counter at the last summary.
    hits_seen: u64,
    /// `false`: not in the kernel (refused by the map, or the entry does not qualify); not
    /// offered again until `until`.
    in_kernel: bool,
}

struct State {
    map: BpfHashMap<MapData, DnsKey, DnsAnswer>,
    installed: HashMap<DnsKey, Installed>,
    by_cache_key: HashMap<Box<[u8]>, Vec<DnsKey>>,
}

/// The daemon's half of kernel answers.
pub struct KernelAnswers {
    state: Mutex<State>,
    counters: PerCpuArray<MapData, u64>,
    settings: KernelSettings,
    rules: Rules,
    steering: Option<Steering>,
    /// Names a plugin wants to see the hits of are never answered here.
    plugins: std::sync::OnceLock<crate::plugins::Plugins>,
}

/// One name's kernel answers over a summary interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The name, as text.
    pub qname: String,
    /// Query type.
    pub qtype: u16,
    /// Answers sent by the kernel since the last summary.
    pub count: u64,
}

/// The kernel key of query `q` (bytes `raw`) sent to `resolver`.
pub fn key_of(raw: &[u8], q: &QueryView, resolver: IpAddr) -> DnsKey {
    let mut key = DnsKey {
        resolver: match resolver {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        },
        qtype: q.qtype,
        qclass: q.qclass,
        flags: 0,
        name_len: 0,
        name: [0; 256],
    };
    if q.dnssec_ok() {
        key.flags |= KEY_DO;
    }
    if q.checking_disabled() {
        key.flags |= KEY_CD;
    }
    if q.edns.is_some() {
        key.flags |= KEY_EDNS;
    }
    let name = q.qname(raw);
    let n = name.len().min(key.name.len());
    key.name[..n].copy_from_slice(&name[..n]);
    key.name[..n].make_ascii_lowercase();
    key.name_len = n as u16;
    key
}

/// The kernel's value for `rendered` (the hit path's answer to a query whose question ends at
/// `question_end`), or why not.
pub fn answer_of(
    rendered: &[u8],
    question_end: usize,
    stored_flags: u16,
    stored_ns: u64,
    fresh_until_ns: u64,
) -> Result<DnsAnswer, &'static str> {
    if rendered.len() > DNS_ANSWER_MAX {
        return Err("answer longer than 508 bytes");
    }
    if get16(rendered, 2) & FLAG_TC != 0 {
        return Err("truncated answer");
    }
    let layout = wire::scan_answer(rendered).map_err(|_| "answer does not parse")?;
    if layout.ttl_offsets.len() > DNS_MAX_TTLS {
        return Err("more than 32 records");
    }
    let tail = rendered
        .get(question_end..)
        .ok_or("question past the end")?;
    let mut answer = DnsAnswer {
        stored_ns,
        fresh_until_ns,
        hits: 0,
        flags: stored_flags,
        ad: u16::from(stored_flags & FLAG_AD != 0),
        counts: [get16(rendered, 6), get16(rendered, 8), get16(rendered, 10)],
        len: tail.len() as u16,
        ttl_count: layout.ttl_offsets.len() as u16,
        ttl_offsets: [0; DNS_MAX_TTLS],
        tail: [0; 512],
        _pad: [0; 2],
    };
    for (slot, off) in answer.ttl_offsets.iter_mut().zip(&layout.ttl_offsets) {
        *slot = (usize::from(*off))
            .checked_sub(question_end)
            .ok_or("TTL inside the question")? as u16;
    }
    answer.tail[..tail.len()].copy_from_slice(tail);
    Ok(answer)
}

/// `instant` on the kernel's clock (`CLOCK_MONOTONIC`, ns).
fn kernel_ns(instant: Instant, now: Instant, now_ns: u64) -> u64 {
    if instant <= now {
        now_ns.saturating_sub(now.duration_since(instant).as_nanos() as u64)
    } else {
        now_ns.saturating_add(instant.duration_since(now).as_nanos() as u64)
    }
}

impl KernelAnswers {
    /// Over the maps of the claimed `Dns` slot, answering on `interfaces`.
    pub fn new(
        mut maps: SlotMaps,
        interfaces: &[String],
        settings: KernelSettings,
        rules: Rules,
        steering: Option<Steering>,
    ) -> Result<Self, KernelAnswersError> {
        let map = BpfHashMap::try_from(maps.take("DNS_ANSWERS")?)?;
        let counters = PerCpuArray::try_from(maps.take("DNS_COUNTERS")?)?;
        let mut redirect: BpfHashMap<MapData, u32, u32> =
            BpfHashMap::try_from(maps.take("DNS_REDIRECT")?)?;
        for iface in interfaces {
            // veth wakes a peer for redirected frames but not for XDP_TX ones (see the program).
            match crate::datapath::interface_driver(iface) {
                Ok(driver) if driver == "veth" => {
                    if let Ok(ifindex) = nix::net::if_::if_nametoindex(iface.as_str()) {
                        redirect.insert(ifindex, 1, 0)?;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(interface = %iface, error = %e, "driver unknown: answers leave with XDP_TX");
                }
            }
        }
        Ok(KernelAnswers {
            state: Mutex::new(State {
                map,
                installed: HashMap::new(),
                by_cache_key: HashMap::new(),
            }),
            counters,
            settings,
            rules,
            steering,
            plugins: std::sync::OnceLock::new(),
        })
    }

    /// Keep the names `plugins` wants to see the hits of out of the kernel (and drop every
    /// entry when they are swapped: `kernel_task`).
    pub fn set_plugins(&self, plugins: crate::plugins::Plugins) {
        let _ = self.plugins.set(plugins);
    }

    /// Hits an entry needs before it is offered.
    pub fn min_hits(&self) -> u32 {
        self.settings.min_hits
    }

    /// A UDP hit of `entry` (cache key `cache_key`) for `req`, parsed as `q`: put it in the
    /// kernel if it qualifies and is not there yet.
    pub fn offer(&self, req: &Request, q: &QueryView, entry: &Arc<CachedAnswer>, cache_key: &[u8]) {
        let key = key_of(&req.bytes, q, req.orig_dst.0.ip());
        let mut state = self.state.lock();
        if state.installed.contains_key(&key) {
            return;
        }
        let now = Instant::now();
        match self.admit(req, q, entry, now) {
            Ok((answer, until)) => {
                let in_kernel = match state.map.insert(key, answer, 0) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::debug!(error = %e, "DNS kernel map refused an entry (full?)");
                        false
                    }
                };
                state.installed.insert(
                    key,
                    Installed {
                        cache_key: cache_key.into(),
                        // Lower-cased: one kernel entry serves every spelling of the name.
                        qname: wire::name_text(&req.bytes, HEADER_LEN).to_ascii_lowercase(),
                        qtype: q.qtype,
                        until,
                        hits_seen: 0,
                        in_kernel,
                    },
                );
                state
                    .by_cache_key
                    .entry(cache_key.into())
                    .or_default()
                    .push(key);
            }
            Err(why) => {
                // Remembered until the entry ends (or the rules change, or a new answer replaces
                // it), so later hits do not pay for the same verdict and rendering again.
                tracing::trace!(qname = %wire::name_text(&req.bytes, HEADER_LEN), why, "not a kernel answer");
                state.installed.insert(
                    key,
                    Installed {
                        cache_key: cache_key.into(),
                        qname: String::new(),
                        qtype: q.qtype,
                        until: entry.stored_at + Duration::from_secs(u64::from(entry.ttl)),
                        hits_seen: 0,
                        in_kernel: false,
                    },
                );
                state
                    .by_cache_key
                    .entry(cache_key.into())
                    .or_default()
                    .push(key);
            }
        }
    }

    fn admit(
        &self,
        req: &Request,
        q: &QueryView,
        entry: &Arc<CachedAnswer>,
        now: Instant,
    ) -> Result<(DnsAnswer, Instant), &'static str> {
        let rules = self.rules.current();
        if !std::ptr::eq(entry.rules.as_ptr(), Arc::as_ptr(&rules)) {
            return Err("stored under other rules");
        }
        let v = verdict(&rules, &req.bytes);
        match v.action {
            None | Some(Action::Cache) if v.ttl_override.is_none() => {}
            _ => return Err("a rule acts on this name"),
        }
        if entry.plugin {
            return Err("a plugin shaped this answer");
        }
        if let Some(plugins) = self.plugins.get()
            && plugins.dns_any_sees_hits()
            && plugins.dns_sees_hits(&super::plugin_hook::plugin_name(req))
        {
            return Err("a plugin sees this name's hits");
        }
        if let Some(steering) = &self.steering
            && steering.could_steer()
            && steering.steers(&wire::name_text(&req.bytes, HEADER_LEN))
        {
            return Err("TLS steering learns from this name");
        }
        let ttl = u64::from(entry.ttl);
        let fresh = match self.settings.prefetch_percent {
            Some(p) => ttl * u64::from(100u32.saturating_sub(p)) / 100,
            None => ttl,
        };
        let until = entry.stored_at + Duration::from_secs(fresh);
        if until <= now {
            return Err("not fresh long enough");
        }
        let rendered = entry.render(&req.bytes, q, TtlMode::Age(0), wire::PLAIN_UDP_SIZE);
        let now_ns = monotonic_ns();
        let answer = answer_of(
            &rendered,
            HEADER_LEN + q.qname_len + 4,
            entry.stored_flags(),
            kernel_ns(entry.stored_at, now, now_ns),
            kernel_ns(until, now, now_ns),
        )?;
        Ok((answer, until))
    }

    /// A new answer replaced cache entry `cache_key`: its kernel copies go.
    pub fn forget(&self, cache_key: &[u8]) {
        let mut state = self.state.lock();
        let Some(keys) = state.by_cache_key.remove(cache_key) else {
            return;
        };
        for key in keys {
            state.installed.remove(&key);
            let _ = state.map.remove(&key);
        }
    }

    /// Remove the kernel answers for `name` (wire form, lower-case); how many were in the map.
    pub fn forget_name(&self, name: &[u8]) -> u64 {
        let mut state = self.state.lock();
        let keys: Vec<DnsKey> = state
            .installed
            .keys()
            .filter(|k| k.name.get(..usize::from(k.name_len)) == Some(name))
            .copied()
            .collect();
        let mut removed = 0;
        for key in keys {
            if let Some(i) = state.installed.remove(&key) {
                if let Some(keys) = state.by_cache_key.get_mut(&i.cache_key) {
                    keys.retain(|k| *k != key);
                }
                if state.map.remove(&key).is_ok() {
                    removed += 1;
                }
            }
        }
        state.by_cache_key.retain(|_, keys| !keys.is_empty());
        removed
    }

    /// Remove every kernel answer (the rules changed, or a flush); how many were in the map.
    pub fn clear(&self) -> u64 {
        let mut state = self.state.lock();
        let mut removed = 0;
        let keys: Vec<DnsKey> = state.installed.keys().copied().collect();
        for key in keys {
            if state.map.remove(&key).is_ok() {
                removed += 1;
            }
        }
        state.installed.clear();
        state.by_cache_key.clear();
        removed
    }

    /// Drop entries whose freshness ended.
    pub fn sweep(&self, now: Instant) {
        let mut state = self.state.lock();
        let expired: Vec<DnsKey> = state
            .installed
            .iter()
            .filter(|(_, i)| i.until <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            if let Some(i) = state.installed.remove(&key) {
                if let Some(keys) = state.by_cache_key.get_mut(&i.cache_key) {
                    keys.retain(|k| *k != key);
                    if keys.is_empty() {
                        state.by_cache_key.remove(&i.cache_key);
                    }
                }
                let _ = state.map.remove(&key);
            }
        }
    }

    /// Answers the kernel sent per name since the last call (names with none are left out).
    pub fn summaries(&self) -> Vec<Summary> {
        let mut state = self.state.lock();
        let State { map, installed, .. } = &mut *state;
        let mut by_name: HashMap<(String, u16), u64> = HashMap::new();
        for (key, i) in installed.iter_mut().filter(|(_, i)| i.in_kernel) {
            let Ok(value) = map.get(key, 0) else { continue };
            let new = value.hits.saturating_sub(i.hits_seen);
            i.hits_seen = value.hits;
            if new > 0 {
                *by_name.entry((i.qname.clone(), i.qtype)).or_default() += new;
            }
        }
        let mut out: Vec<Summary> = by_name
            .into_iter()
            .map(|((qname, qtype), count)| Summary {
                qname,
                qtype,
                count,
            })
            .collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.qname.cmp(&b.qname)));
        out
    }

    /// Entries in the kernel now.
    pub fn entries(&self) -> usize {
        self.state
            .lock()
            .installed
            .values()
            .filter(|i| i.in_kernel)
            .count()
    }

    /// A kernel counter, summed over the CPUs.
    pub fn counter(&self, c: DnsCounter) -> u64 {
        self.counters
            .get(&(c as u32), 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }

    /// The rules the kernel answers were admitted under; a change clears them.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }
}

#[cfg(test)]
#[path = "kernel_tests.rs"]
mod tests;
