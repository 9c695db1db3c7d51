//! The HTTP service's metrics (`velocache_http_*` in the registry it is given).
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::ctx::CacheStatus;
use crate::{cache::Usage, telemetry::metrics::MetricSet};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabel {
    cache: &'static str,
}

/// Counters and gauges.
pub struct Metrics {
    requests: Family<CacheLabel, Counter>,
    bytes_from_cache: Counter,
    bytes_from_origin: Counter,
    /// Body bytes of plain HTTP hits sent from slice files with `sendfile` (part of
    /// `bytes_from_cache`); the stream that sends them counts them.
    pub(super) sendfile_bytes: Counter,
    origin_fetches: Counter,
    store_bytes: Gauge,
    store_objects: Gauge,
    evictions: Gauge,
}

impl Metrics {
    /// Create and register in `registry`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let mut m = MetricSet::new(registry);
        Metrics {
            requests: m.counters(
                "requests",
                "Requests by what the cache did (hit, miss, revalidated, stale, bypass)",
            ),
            bytes_from_cache: m.counter(
                "bytes_from_cache",
                "Response body bytes served from the cache",
            ),
            bytes_from_origin: m.counter(
                "bytes_from_origin",
                "Response body bytes relayed from origins",
            ),
            sendfile_bytes: m.counter(
                "sendfile_bytes",
                "Response body bytes sent from the cache's files with sendfile (plain HTTP)",
            ),
            origin_fetches: m.counter("origin_fetches", "Requests the cache sent to origins"),
            store_bytes: m.gauge("store_bytes", "Bytes held by the disk cache"),
            store_objects: m.gauge("store_objects", "Objects held by the disk cache"),
            evictions: m.gauge("store_evictions", "Objects evicted since start"),
        }
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
