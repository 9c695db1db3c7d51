//! The HTTP service's metrics (`velocache_http_*` in the registry it is given).
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::ctx::CacheStatus;
use crate::cache::Usage;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabel {
    cache: &'static str,
}

/// Counters and gauges.
#[derive(Default)]
pub struct Metrics {
    requests: Family<CacheLabel, Counter>,
    bytes_from_cache: Counter,
    bytes_from_origin: Counter,
    origin_fetches: Counter,
    store_bytes: Gauge,
    store_objects: Gauge,
    evictions: Gauge,
}

impl Metrics {
    /// Create and register in `registry`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics::default();
        registry.register(
            "requests",
            "Requests by what the cache did (hit, miss, revalidated, stale, bypass)",
            m.requests.clone(),
        );
        registry.register(
            "bytes_from_cache",
            "Response body bytes served from the cache",
            m.bytes_from_cache.clone(),
        );
        registry.register(
            "bytes_from_origin",
            "Response body bytes relayed from origins",
            m.bytes_from_origin.clone(),
        );
        registry.register(
            "origin_fetches",
            "Requests the cache sent to origins",
            m.origin_fetches.clone(),
        );
        registry.register(
            "store_bytes",
            "Bytes held by the disk cache",
            m.store_bytes.clone(),
        );
        registry.register(
            "store_objects",
            "Objects held by the disk cache",
            m.store_objects.clone(),
        );
        registry.register(
            "store_evictions",
            "Objects evicted since start",
            m.evictions.clone(),
        );
        m
    }

    /// Count one finished request.
    pub fn record(&self, cache: CacheStatus, bytes: u64) {
        self.requests
            .get_or_create(&CacheLabel {
                cache: cache.as_str(),
            })
            .inc();
        if cache.from_cache() {
            self.bytes_from_cache.inc_by(bytes);
        } else {
            self.bytes_from_origin.inc_by(bytes);
        }
    }

    /// Count a request to an origin.
    pub fn origin_fetch(&self) {
        self.origin_fetches.inc();
    }

    /// Publish the store's occupancy.
    pub fn store(&self, u: Usage) {
        self.store_bytes.set(u.bytes as i64);
        self.store_objects.set(u.objects as i64);
        self.evictions.set(u.evictions as i64);
    }
}
