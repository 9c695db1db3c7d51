//! The proxy's cache as one value ([`HttpCache`]): the store, the collapsed-forwarding lock, the
//! RAM tier of small objects and the settings the cache path decides with — plus the helpers
//! the lookup path (`cached`) and the hit path (`serve`) share: keys, the request the cache
//! sends upstream, lengths and the clock.
//!
//! Objects enter the store through fills (`cached`, `serve`'s slice fetches) and leave through
//! lookups and readers; the RAM tier is filled by `serve` from the store and emptied by purges
//! and its own size limit.
use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, header, request};

use super::{ctx::Ctx, metrics::Metrics};
use crate::cache::{
    KeyInput, ObjectId, ObjectKey, Storage, lock::CacheLock, policy::Heuristic,
    shared::TieredStorage,
};

/// What the cache path decides with.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// `Via` pseudonym, on responses served from the cache.
    pub via: HeaderValue,
    /// Waiting for another client's download.
    pub lock_wait: Duration,
    /// Per-object limit.
    pub max_object_bytes: u64,
    /// Slice size of new objects.
    pub slice_bytes: u64,
    /// RAM-tier object limit.
    pub memory_object_max_bytes: u64,
    /// Heuristic freshness.
    pub heuristic: Heuristic,
    /// Seconds a stale response may answer for a failed origin without `stale-if-error`.
    pub stale_if_error_default: u64,
}

/// The store, the fills and the RAM tier.
pub struct HttpCache {
    /// The store.
    pub storage: Arc<dyn Storage>,
    /// Fills in progress (collapsed forwarding).
    pub lock: Arc<dyn CacheLock>,
    /// The shared tier behind the store, when `[shared]` configures one (for purges).
    pub shared: Option<Arc<TieredStorage>>,
    /// Small complete objects, whole, by (object, version).
    pub(super) hot: moka::sync::Cache<(ObjectId, u64), Bytes>,
    pub(super) settings: CacheSettings,
    metrics: Arc<Metrics>,
}

impl HttpCache {
    /// A cache over `storage` and `lock` with a RAM tier of `memory_bytes`; the store's
    /// occupancy is published to `metrics`.
    pub fn new(
        storage: Arc<dyn Storage>,
        lock: Arc<dyn CacheLock>,
        memory_bytes: u64,
        settings: CacheSettings,
        metrics: Arc<Metrics>,
    ) -> HttpCache {
        metrics.store(storage.usage());
        HttpCache {
            storage,
            lock,
            shared: None,
            hot: moka::sync::Cache::builder()
                .max_capacity(memory_bytes)
                .weigher(|_, v: &Bytes| v.len().try_into().unwrap_or(u32::MAX))
                .build(),
            settings,
            metrics,
        }
    }

    /// The same cache, told which shared tier its store has behind it.
    pub fn with_shared(mut self, shared: Arc<TieredStorage>) -> HttpCache {
        self.shared = Some(shared);
        self
    }

    /// Publish the store's occupancy (after a fill or a purge).
    pub fn publish_usage(&self) {
        self.metrics.store(self.storage.usage());
    }
}

/// The key of `path` on the request's host and original destination, under its key options.
pub(super) fn key_for(ctx: &Ctx, path: &str) -> ObjectKey {
    ObjectKey::derive(
        KeyInput {
            host: &ctx.host,
            dst: ctx.conn.orig_dst.0,
            path_and_query: path,
        },
        &ctx.key_options,
    )
}

/// Seconds since the epoch.
pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `Content-Length`, unless the body is chunked.
pub(super) fn content_length(h: &HeaderMap) -> Option<u64> {
    if h.contains_key(header::TRANSFER_ENCODING) {
        return None;
    }
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The request the cache sends upstream for a client's request: no client validators, no
/// client Range (the cache wants whole objects or whole slices).
pub(super) fn without_conditionals(mut parts: request::Parts, keep_range: bool) -> request::Parts {
    for h in [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
    ] {
        parts.headers.remove(h);
    }
    if !keep_range {
        parts.headers.remove(header::RANGE);
        parts.headers.remove(header::IF_RANGE);
    }
    parts.method = Method::GET;
    parts
}
