//! The answer cache: upstream answers kept as wire bytes, patched in place on every hit.
//!
//! An upstream answer enters through [`CachedAnswer::from_upstream`]: its TTLs are clamped
//! (`min_ttl`/`max_ttl`, a rule's `ttl_override`, RFC 2308 for NXDOMAIN/NODATA), written back
//! into the bytes, and the offset of every TTL field is remembered. A hit leaves through
//! [`CachedAnswer::render`]: one copy of the bytes, then the client's ID, flags and question
//! spelling are written in, every TTL is lowered by the entry's age (or set to the stale-answer
//! TTL), and the OPT record is dropped for clients that sent none. Nothing is re-encoded, so
//! what the upstream said (AD, EDNS options such as Extended DNS Errors, RRSIGs next to their
//! RRsets) reaches the client as it was sent.
//!
//! Entries live in a `quick_cache` cache (sharded, S3-FIFO-like eviction; a lookup costs
//! ~40 ns against moka's ~190 ns, measured here) keyed by ([`KeyBuf`]) query type, class, DO
//! and CD bits, the resolver asked (when forwarding to each client's own resolver) and the
//! lower-cased name. They stay past their TTL for the serve-stale window (RFC 8767); a lookup
//! that finds one older than that removes it. The cache is bounded both by count and by bytes:
//! every entry weighs at least `max_bytes / max_entries`, so the weighted bound implies both.
use std::{
    net::IpAddr,
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicU32},
    },
    time::{Duration, Instant},
};

use quick_cache::{Weighter, sync::Cache};

use super::wire::{
    self, AnswerLayout, FLAG_AD, FLAG_CD, FLAG_RD, FLAG_TC, HEADER_LEN, QueryView, get16, put16,
    rcode,
};
use crate::rules::RuleSet;

/// Bytes of bookkeeping per entry on top of its answer and key (the entry struct, the cache's
/// node, the key's box): used for the memory bound.
const ENTRY_OVERHEAD: usize = 192;

/// A cache key, built on the stack so that a lookup allocates nothing.
pub struct KeyBuf {
    bytes: [u8; 4 + 1 + 17 + 255],
    len: usize,
}

impl KeyBuf {
    /// The key of `q` (whose bytes are `raw`); `resolver` when answers are per resolver.
    pub fn new(raw: &[u8], q: &QueryView, resolver: Option<IpAddr>) -> KeyBuf {
        let mut k = KeyBuf {
            bytes: [0; 4 + 1 + 17 + 255],
            len: 0,
        };
        k.push(&q.qtype.to_be_bytes());
        k.push(&q.qclass.to_be_bytes());
        k.push(&[u8::from(q.dnssec_ok()) | (u8::from(q.checking_disabled()) << 1)]);
        match resolver {
            None => k.push(&[0]),
            Some(IpAddr::V4(a)) => {
                k.push(&[4]);
                k.push(&a.octets());
            }
            Some(IpAddr::V6(a)) => {
                k.push(&[16]);
                k.push(&a.octets());
            }
        }
        let start = k.len;
        k.push(q.qname(raw));
        k.bytes[start..k.len].make_ascii_lowercase();
        k
    }

    fn push(&mut self, b: &[u8]) {
        let end = (self.len + b.len()).min(self.bytes.len());
        let n = end - self.len;
        self.bytes[self.len..end].copy_from_slice(&b[..n]);
        self.len = end;
    }

    /// The key bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// TTL limits applied when an answer is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlPolicy {
    /// Positive answers are kept at least this long.
    pub min_ttl: u32,
    /// No answer is kept longer.
    pub max_ttl: u32,
    /// NXDOMAIN / NODATA are kept at most this long.
    pub max_negative_ttl: u32,
}

/// How an answer may be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cacheability {
    /// Records answer the question.
    Positive,
    /// NXDOMAIN or NODATA with an SOA (RFC 2308).
    Negative,
    /// Relayed once, never stored (errors, truncated, TTL 0, negative without SOA).
    No,
}

/// One stored answer.
#[derive(Debug)]
pub struct CachedAnswer {
    wire: Box<[u8]>,
    ttl_offsets: Box<[u16]>,
    opt: Option<(u16, u16)>,
    qname_len: usize,
    /// When it was stored (TTLs in `wire` are as of this instant).
    pub stored_at: Instant,
    /// Seconds it stays fresh.
    pub ttl: u32,
    /// Its response code.
    pub rcode: u8,
    /// Whether and how it may be stored.
    pub cacheability: Cacheability,
    /// The upstream it came from, for logs.
    pub upstream: Arc<str>,
    /// Cache hits so far (prefetch picks popular entries).
    pub hits: AtomicU32,
    /// Set while a prefetch or a stale refresh for this entry runs, so only one does.
    pub refreshing: AtomicBool,
    /// The rule set that decided how this name is handled; a hit re-evaluates the rules only
    /// after a reload replaced it.
    pub rules: Weak<RuleSet>,
    /// A plugin shaped it (asked upstream under another name): never handed to the kernel,
    /// never refreshed in the background.
    pub plugin: bool,
}

/// How TTLs are written on the way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlMode {
    /// Lower every TTL by this many seconds (the entry's age).
    Age(u32),
    /// Set every TTL to this value (stale answers).
    Fixed(u32),
}

impl CachedAnswer {
    /// The stored message (TTLs as of `stored_at`).
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// Build an entry from an upstream answer `bytes` with its `layout`, applying `policy`
    /// and the rule's `ttl_override` to every TTL.
    pub fn from_upstream(
        mut bytes: Vec<u8>,
        layout: &AnswerLayout,
        policy: &TtlPolicy,
        ttl_override: Option<u32>,
        upstream: Arc<str>,
        rules: Weak<RuleSet>,
    ) -> CachedAnswer {
        bytes.truncate(layout.end);
        let truncated = layout.flags & FLAG_TC != 0;
        let negative = layout.rcode == rcode::NXDOMAIN
            || (layout.rcode == rcode::NOERROR && layout.answers == 0);
        let (cacheability, ttl) = if truncated {
            (Cacheability::No, 0)
        } else if negative {
            match (ttl_override, layout.negative_ttl) {
                (Some(o), _) => (Cacheability::Negative, o),
                (None, Some(n)) => (
                    Cacheability::Negative,
                    n.min(policy.max_negative_ttl).min(policy.max_ttl),
                ),
                // RFC 2308 §5: without an SOA there is nothing to say how long it holds.
                (None, None) => (Cacheability::No, 0),
            }
        } else if layout.rcode == rcode::NOERROR {
            let clamp = |t: u32| {
                ttl_override.unwrap_or_else(|| t.clamp(policy.min_ttl, policy.max_ttl.max(1)))
            };
            (Cacheability::Positive, layout.min_ttl.map_or(0, clamp))
        } else {
            (Cacheability::No, 0)
        };
        let cacheability = if ttl == 0 {
            Cacheability::No
        } else {
            cacheability
        };
        match cacheability {
            Cacheability::Positive => {
                let o = ttl_override;
                wire::patch_ttls(&mut bytes, &layout.ttl_offsets, |t| {
                    o.unwrap_or_else(|| t.clamp(policy.min_ttl, policy.max_ttl.max(1)))
                });
            }
            Cacheability::Negative => {
                wire::patch_ttls(&mut bytes, &layout.ttl_offsets, |t| t.min(ttl));
            }
            Cacheability::No => {}
        }
        CachedAnswer {
            wire: bytes.into_boxed_slice(),
            ttl_offsets: layout.ttl_offsets.clone().into_boxed_slice(),
            opt: layout.opt,
            qname_len: layout.qname_len,
            stored_at: Instant::now(),
            ttl,
            rcode: layout.rcode,
            cacheability,
            upstream,
            hits: AtomicU32::new(0),
            refreshing: AtomicBool::new(false),
            rules,
            plugin: false,
        }
    }

    /// Seconds since it was stored.
    pub fn age(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.stored_at)
            .as_secs()
            .min(u64::from(u32::MAX)) as u32
    }

    /// Seconds of freshness left.
    pub fn remaining(&self, now: Instant) -> u32 {
        self.ttl.saturating_sub(self.age(now))
    }

    /// The header flags as stored (the upstream's, before a client's RD/CD/AD are mixed in).
    pub fn stored_flags(&self) -> u16 {
        get16(&self.wire, 2)
    }

    /// Bytes this entry holds.
    pub fn size(&self) -> usize {
        self.wire.len() + self.ttl_offsets.len() * 2 + ENTRY_OVERHEAD
    }

    /// The answer for the client whose query is `query` (parsed as `q`), at most `max_len`
    /// bytes (longer ones become a TC=1 reply so that the client retries over TCP).
    pub fn render(&self, query: &[u8], q: &QueryView, ttl: TtlMode, max_len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.wire.len() + 11);
        out.extend_from_slice(&self.wire);
        put16(&mut out, 0, q.id);
        let stored = get16(&out, 2);
        let mut flags = (stored & !(FLAG_RD | FLAG_CD | FLAG_TC | FLAG_AD)) | wire::FLAG_QR;
        flags |= q.flags & (FLAG_RD | FLAG_CD);
        // RFC 6840 §5.7: AD only to clients that said they understand it.
        if stored & FLAG_AD != 0 && (q.flags & FLAG_AD != 0 || q.dnssec_ok()) {
            flags |= FLAG_AD;
        }
        put16(&mut out, 2, flags);
        // Echo the client's own spelling of the name (DNS 0x20 clients check it).
        if self.qname_len == q.qname_len
            && let Some(dst) = out.get_mut(HEADER_LEN..HEADER_LEN + self.qname_len)
        {
            dst.copy_from_slice(q.qname(query));
        }
        match ttl {
            TtlMode::Age(0) => {}
            TtlMode::Age(age) => {
                wire::patch_ttls(&mut out, &self.ttl_offsets, |t| t.saturating_sub(age))
            }
            TtlMode::Fixed(v) => wire::patch_ttls(&mut out, &self.ttl_offsets, |_| v),
        }
        match (q.edns, self.opt) {
            // RFC 6891 §7: no OPT in answers to queries without one.
            (None, Some((start, end))) => {
                out.drain(usize::from(start)..usize::from(end));
                let ar = get16(&out, 10).saturating_sub(1);
                put16(&mut out, 10, ar);
            }
            // ... and one in answers to queries with one.
            (Some(e), None) => {
                out.extend_from_slice(&[0, 0, 41]);
                out.extend_from_slice(&wire::EDNS_UDP_SIZE.to_be_bytes());
                out.extend_from_slice(&[0, 0, if e.dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
                let ar = get16(&out, 10).saturating_add(1);
                put16(&mut out, 10, ar);
            }
            _ => {}
        }
        if out.len() > max_len {
            return wire::truncated(query, q, flags);
        }
        out
    }
}

/// What a lookup found.
pub enum Lookup {
    /// A fresh entry and its age in seconds.
    Fresh(Arc<CachedAnswer>, u32),
    /// An expired entry still inside the stale window.
    Stale(Arc<CachedAnswer>),
    /// Nothing.
    Miss,
}

/// Weighs an entry in bytes, never less than the per-entry floor.
#[derive(Clone)]
struct Weigh {
    floor: u64,
}

impl Weighter<Box<[u8]>, Arc<CachedAnswer>> for Weigh {
    fn weight(&self, key: &Box<[u8]>, value: &Arc<CachedAnswer>) -> u64 {
        ((key.len() + value.size()) as u64).max(self.floor)
    }
}

/// The bounded answer cache.
pub struct AnswerCache {
    map: Cache<Box<[u8]>, Arc<CachedAnswer>, Weigh>,
    stale_window: Duration,
}

impl AnswerCache {
    /// A cache of at most `max_entries` entries and `max_bytes` bytes, keeping entries
    /// `stale_window` past their TTL.
    pub fn new(max_entries: u64, max_bytes: u64, stale_window: Duration) -> Self {
        let floor = (max_bytes / max_entries.max(1)).max(1);
        let map = Cache::with_weighter(
            max_entries.min(1 << 24) as usize,
            max_bytes,
            Weigh { floor },
        );
        AnswerCache { map, stale_window }
    }

    /// Look `key` up at `now`.
    pub fn get(&self, key: &[u8], now: Instant) -> Lookup {
        match self.map.get(key) {
            Some(e) => {
                let age = e.age(now);
                if age < e.ttl {
                    Lookup::Fresh(e, age)
                } else if u64::from(age - e.ttl) < self.stale_window.as_secs() {
                    Lookup::Stale(e)
                } else {
                    self.map.remove(key);
                    Lookup::Miss
                }
            }
            None => Lookup::Miss,
        }
    }

    /// Store an entry (only cacheable ones are kept).
    pub fn insert(&self, key: &[u8], entry: Arc<CachedAnswer>) {
        if entry.cacheability != Cacheability::No {
            self.map.insert(key.into(), entry);
        }
    }

    /// Entries held.
    pub fn entries(&self) -> u64 {
        self.map.len() as u64
    }

    /// Weighted size in bytes.
    pub fn bytes(&self) -> u64 {
        self.map.weight()
    }

    /// Drop the entries for `name` (wire form, lower-case: the key's last part) whatever their
    /// type, class, flags and resolver; how many went.
    pub fn remove_name(&self, name: &[u8]) -> u64 {
        let removed = std::sync::atomic::AtomicU64::new(0);
        self.map.retain(|key, _| {
            // Key layout (KeyBuf::new): type, class, flags byte, resolver length, resolver, name.
            let resolver = key.get(5).map_or(0, |&l| usize::from(l));
            let same = key.get(6 + resolver..) == Some(name);
            if same {
                removed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            !same
        });
        removed.into_inner()
    }

    /// The entries for `name` (wire form, lower-case) and query type `qtype`, whatever their
    /// class, flags and resolver.
    pub fn find(&self, name: &[u8], qtype: u16) -> Vec<Arc<CachedAnswer>> {
        self.map
            .iter()
            .filter(|(key, _)| {
                let resolver = key.get(5).map_or(0, |&l| usize::from(l));
                key.get(..2) == Some(&qtype.to_be_bytes()[..])
                    && key.get(6 + resolver..) == Some(name)
            })
            .map(|(_, v)| v)
            .collect()
    }

    /// Drop every entry.
    pub fn clear(&self) {
        self.map.clear();
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
