//! DNS counters and latency histograms, registered under `velocache_dns_…`.
//!
//! Every handle is created once at start-up so that the hot path only increments atomics; the
//! admin API exports the registry they live in.
use prometheus_client::{
    metrics::{
        counter::Counter,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::telemetry::metrics::MetricSet;

type Labels = Vec<(String, String)>;

/// The DNS service's metrics.
#[derive(Clone)]
pub struct DnsStats {
    /// Queries received over UDP.
    pub queries_udp: Counter,
    /// Queries received over TCP.
    pub queries_tcp: Counter,
    /// Answered from a fresh cache entry.
    pub hits: Counter,
    /// Asked upstream (collapsed followers included).
    pub misses: Counter,
    /// Misses that waited for an identical query already in flight.
    pub collapsed: Counter,
    /// Answered from an expired entry because no upstream could answer.
    pub stale: Counter,
    /// Background refreshes of popular entries about to expire.
    pub prefetches: Counter,
    /// Answered SERVFAIL or FORMERR, or dropped for lack of capacity.
    pub errors: Counter,
    /// Malformed queries (answered FORMERR or dropped).
    pub malformed: Counter,
    /// Queries refused by a `deny` rule.
    pub denied: Counter,
    /// Queries forwarded without caching (rules, unusual shapes, other opcodes).
    pub uncached: Counter,
    /// Upstream replies dropped because they did not answer our query (wrong ID, question).
    pub dropped_replies: Counter,
    /// Upstream exchanges that failed (timeout, refused, SERVFAIL).
    pub upstream_failures: Counter,
    /// Entries in the cache (updated on every store).
    pub entries: Gauge,
    /// Latency of answers from the cache, receive to send, in seconds.
    pub hit_latency: Histogram,
    /// Latency of answers that needed an upstream.
    pub miss_latency: Histogram,
}

impl DnsStats {
    /// Create the metrics and register them in `registry` (the service's sub-registry).
    pub fn register(registry: &mut Registry) -> Self {
        let mut m = MetricSet::new(registry);
        let queries = m.counters::<Labels>("queries", "DNS queries received");
        let latency = m.histograms::<Labels>(
            "latency_seconds",
            "Time from receiving a query to sending its answer",
            || Histogram::new(exponential_buckets(0.000_005, 2.0, 22)),
        );
        let entries = m.gauge("cache_entries", "Answers in the cache");
        let transport = |t: &str| vec![("transport".to_string(), t.to_string())];
        let cache = |c: &str| vec![("cache".to_string(), c.to_string())];
        // One statement each: `get_or_create` returns a read guard, and creating the next
        // label set while it lives would wait on it forever.
        let queries_udp = queries.get_or_create(&transport("udp")).clone();
        let queries_tcp = queries.get_or_create(&transport("tcp")).clone();
        let hit_latency = latency.get_or_create(&cache("hit")).clone();
        let miss_latency = latency.get_or_create(&cache("miss")).clone();
        DnsStats {
            queries_udp,
            queries_tcp,
            hits: m.counter("cache_hits", "Answers served from the cache"),
            misses: m.counter("cache_misses", "Queries sent upstream"),
            collapsed: m.counter(
                "collapsed",
                "Misses that joined an identical query already in flight",
            ),
            stale: m.counter("stale_answers", "Expired answers served (RFC 8767)"),
            prefetches: m.counter("prefetches", "Background refreshes before expiry"),
            errors: m.counter("errors", "SERVFAIL/FORMERR answers and dropped queries"),
            malformed: m.counter("malformed", "Malformed queries"),
            denied: m.counter("denied", "Queries refused by a deny rule"),
            uncached: m.counter("uncached", "Queries forwarded without caching"),
            dropped_replies: m.counter(
                "dropped_replies",
                "Upstream replies that did not answer our query (wrong ID or question)",
            ),
            upstream_failures: m.counter("upstream_failures", "Upstream exchanges that failed"),
            entries,
            hit_latency,
            miss_latency,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registering_twice_label_sets_does_not_deadlock() {
        let mut registry = Registry::with_prefix("velocache");
        let stats = DnsStats::register(registry.sub_registry_with_prefix("dns"));
        stats.hits.inc();
        stats.queries_udp.inc();
        stats.hit_latency.observe(0.000_02);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("velocache_dns_cache_hits_total 1"), "{text}");
        assert!(
            text.contains("velocache_dns_queries_total{transport=\"udp\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("velocache_dns_latency_seconds_count{cache=\"hit\"} 1"),
            "{text}"
        );
    }
}
