//! The connection to the Redis Cluster, its health, and the tier's operations in Redis terms.
//!
//! Every operation enters as a typed call ([`Tier::object`], [`Tier::slice`], [`Tier::lock`]…),
//! runs on the cluster connection under `timeout_ms`, and leaves as `Some(answer)` — or `None`
//! when the tier failed or is down, which callers treat exactly as "the tier is absent". The
//! first failure marks the tier down (a WARN line, `velocache_shared_up` 0) and drops the
//! connection; a health task builds a new one after `retry_ms` and puts the tier back once
//! `CLUSTER INFO` says `cluster_state:ok` (an INFO line). So a dead node or cluster costs a
//! request at most one timeout, and nothing while the tier is down.
//!
//! # Keys
//! - `vc:{ID}:o` — the object record, a hash: `v` (version, 16 hex digits), `meta` (the
//!   stored response's metadata, JSON as on disk), and one field per stored slice (its index,
//!   decimal) holding that slice's SHA-256. The `{ID}` hash tag keeps the record and its lock on
//!   one node, so the scripts below can touch both.
//! - `vc:{ID}:l` — the fill lock (collapsed forwarding across gateways): a gateway's token,
//!   expiring after the lock age unless its holder refreshes it.
//! - `vc:s:ID:VERSION:IDX` — one slice's bytes. No hash tag: slices spread over the masters.
//! - `vc:purges` — a stream of purged object ids that every gateway follows.
use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use redis::{
    AsyncCommands, RedisResult, Script,
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    streams::{StreamMaxlen, StreamRangeReply},
};
use tracing::{debug, info, warn};

use crate::{
    cache::{ObjectId, ObjectMeta},
    config::SharedConfig,
};

/// Where the stream of purges lives.
const PURGES: &str = "vc:purges";
/// Purge announcements kept (approximately) in the stream.
const PURGES_KEPT: usize = 10_000;

/// `vc:{ID}:o`
pub(super) fn object_key(id: &ObjectId) -> String {
    format!("vc:{{{}}}:o", id.hex())
}

/// `vc:{ID}:l`
pub(super) fn lock_key(id: &ObjectId) -> String {
    format!("vc:{{{}}}:l", id.hex())
}

/// `vc:s:ID:VERSION:IDX`
pub(super) fn slice_key(id: &ObjectId, version: u64, idx: u64) -> String {
    format!("vc:s:{}:{version:016x}:{idx}", id.hex())
}

/// Replace the record's metadata: the same version keeps its slice digests, another version
/// starts a new record (its old slices are then unreachable and left to the cluster's LRU).
const PUT_META: &str = r"
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'meta', ARGV[2])
return 1";

/// Record a slice's digest, only if the record is still the version the slice belongs to.
const ADD_DIGEST: &str = r"
if redis.call('HGET', KEYS[1], 'v') == ARGV[1] then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) return 1
end
return 0";

/// Extend the lock if this gateway still holds it.
const REFRESH: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0";

/// Free the lock if this gateway still holds it.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

/// An object as the tier holds it: its metadata and the digests of the slices stored.
#[derive(Debug)]
pub struct TierObject {
    /// The stored response's metadata.
    pub meta: Arc<ObjectMeta>,
    /// SHA-256 of each slice in the tier, by index.
    pub digests: HashMap<u64, [u8; 32]>,
}

impl TierObject {
    /// Whether every slice of a body of known length is in the tier.
    pub fn complete(&self) -> bool {
        match self.meta.slices() {
            Some(n) => (0..n).all(|i| self.digests.contains_key(&i)),
            None => false,
        }
    }

    /// Parse a record (`HGETALL`, read from the network); `Err` says what is wrong with it.
    pub fn parse(fields: HashMap<String, Vec<u8>>) -> Result<TierObject, &'static str> {
        let version = record_version(&fields).ok_or("no version")?;
        let meta = fields
            .get("meta")
            .and_then(|m| ObjectMeta::from_json(m))
            .ok_or("unreadable metadata")?;
        if meta.version != version {
            return Err("metadata of another version");
        }
        // What `[http] slice_bytes` allows: a record is another gateway's, not a trusted file.
        if !(64 << 10..=64 << 20).contains(&meta.slice_bytes) {
            return Err("slice size out of range");
        }
        let slices = meta.slices().unwrap_or(u64::MAX);
        let digests = fields
            .iter()
            .filter_map(|(k, v)| {
                let idx = k.parse::<u64>().ok().filter(|i| *i < slices)?;
                Some((idx, <[u8; 32]>::try_from(v.as_slice()).ok()?))
            })
            .collect();
        Ok(TierObject {
            meta: Arc::new(meta),
            digests,
        })
    }
}

/// A record's version (its `v` field, 16 hex digits).
fn record_version(fields: &HashMap<String, Vec<u8>>) -> Option<u64> {
    let v = std::str::from_utf8(fields.get("v")?).ok()?;
    u64::from_str_radix(v, 16).ok()
}

/// Which way bytes went.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// `read` (tier → gateway) or `write`.
    pub direction: &'static str,
}

/// The tier's counters (`velocache_shared_*`).
#[derive(Default)]
pub struct TierMetrics {
    /// 1 while the tier is usable.
    pub up: Gauge,
    /// Local misses the tier had a record for.
    pub hits: Counter,
    /// Local misses the tier had nothing for.
    pub misses: Counter,
    /// Operations that failed or timed out.
    pub errors: Counter,
    /// Slices whose bytes did not match their digest (read as a miss and fetched again).
    pub digest_mismatches: Counter,
    /// Slices written to the tier.
    pub uploads: Counter,
    /// Slices not written (the queue was full, the tier down, the object too large).
    pub upload_drops: Counter,
    /// Bytes read from and written to the tier.
    pub bytes: Family<DirectionLabel, Counter>,
    /// Fills another gateway did that this one waited for instead of fetching.
    pub collapsed: Counter,
    /// Purges announced by other gateways and applied here.
    pub purges_applied: Counter,
}

impl TierMetrics {
    fn register(registry: &mut Registry) -> TierMetrics {
        let m = TierMetrics::default();
        registry.register("up", "Whether the shared tier is usable", m.up.clone());
        let counters = [
            ("hits", "Local misses the shared tier had", &m.hits),
            (
                "misses",
                "Local misses the shared tier did not have",
                &m.misses,
            ),
            (
                "errors",
                "Shared tier operations that failed or timed out",
                &m.errors,
            ),
            (
                "digest_mismatches",
                "Slices read from the shared tier that did not match their SHA-256",
                &m.digest_mismatches,
            ),
            ("uploads", "Slices written to the shared tier", &m.uploads),
            (
                "upload_drops",
                "Slices not written to the shared tier (queue full, tier down, too large)",
                &m.upload_drops,
            ),
            (
                "collapsed",
                "Fills by another gateway waited for instead of fetching",
                &m.collapsed,
            ),
            (
                "purges_applied",
                "Purges announced by other gateways applied here",
                &m.purges_applied,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "bytes",
            "Bytes read from and written to the shared tier",
            m.bytes.clone(),
        );
        m
    }
}

const CONNECTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// The shared tier's client: one cluster connection, its health, the operations.
pub struct Tier {
    client: ClusterClient,
    conn: RwLock<Option<ClusterConnection>>,
    state: AtomicU8,
    retry_at: Mutex<Instant>,
    timeout: Duration,
    retry: Duration,
    /// This gateway's token (its locks and purge announcements carry it).
    pub(super) token: String,
    /// Counters.
    pub metrics: TierMetrics,
    /// Bytes of uploads queued at most.
    pub(super) upload_queue_bytes: u64,
    /// Largest object uploaded.
    pub(super) max_object_bytes: u64,
}

impl Tier {
    /// A tier from `[shared]` (`None` when it names no node); the health task that connects
    /// (and reconnects) is started, so the first requests may find it still connecting.
    pub fn start(config: &SharedConfig, registry: &mut Registry) -> Option<Arc<Tier>> {
        if !config.enabled() {
            return None;
        }
        let timeout = config.timeout_ms.get();
        let nodes: Vec<String> = config
            .redis
            .iter()
            .map(|n| format!("redis://{n}/"))
            .collect();
        let client = match ClusterClient::builder(nodes)
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(1)
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "the shared tier's nodes cannot be used; running without it");
                return None;
            }
        };
        let tier = Arc::new(Tier {
            client,
            conn: RwLock::new(None),
            state: AtomicU8::new(CONNECTING),
            retry_at: Mutex::new(Instant::now()),
            timeout,
            retry: config.retry_ms.get(),
            token: format!("{:016x}", rand::random::<u64>()),
            metrics: TierMetrics::register(registry),
            upload_queue_bytes: config.upload_queue_bytes,
            max_object_bytes: config.max_object_bytes,
        });
        tokio::spawn(health(Arc::downgrade(&tier)));
        Some(tier)
    }

    /// Whether operations are tried at all.
    pub fn is_up(&self) -> bool {
        self.state.load(Ordering::Relaxed) == UP
    }

    /// `up`, `down` or `connecting`, for logs.
    pub fn state_name(&self) -> &'static str {
        match self.state.load(Ordering::Relaxed) {
            UP => "up",
            DOWN => "down",
            _ => "connecting",
        }
    }

    /// Run `op` on the connection within the timeout; a failure takes the tier down.
    async fn run<T, F, Fut>(&self, what: &'static str, op: F) -> Option<T>
    where
        F: FnOnce(ClusterConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let conn = if self.is_up() {
            self.conn.read().clone()?
        } else {
            return None;
        };
        let why = match tokio::time::timeout(self.timeout, op(conn)).await {
            Ok(Ok(v)) => return Some(v),
            Ok(Err(e)) if !unreachable(&e) => {
                // The cluster answered, about this command only (a full cluster refusing a
                // write with OOM): the tier stays up for everything else.
                self.metrics.errors.inc();
                debug!(op = what, error = %e, "a shared tier operation was refused");
                return None;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", self.timeout.as_millis()),
        };
        self.failed(what, &why);
        None
    }

    fn failed(&self, what: &str, why: &str) {
        self.metrics.errors.inc();
        *self.retry_at.lock() = Instant::now() + self.retry;
        if self.state.swap(DOWN, Ordering::Relaxed) == UP {
            *self.conn.write() = None;
            self.metrics.up.set(0);
            warn!(
                op = what,
                error = why,
                retry_ms = self.retry.as_millis() as u64,
                "shared tier down; going on without it"
            );
        }
    }

    /// The object record under `id`: `Some(None)` when the tier has none (or an unreadable
    /// one, which is logged).
    pub async fn object(&self, id: &ObjectId) -> Option<Option<TierObject>> {
        let key = object_key(id);
        let fields: HashMap<String, Vec<u8>> = self
            .run("lookup", |mut c| async move { c.hgetall(key).await })
            .await?;
        if fields.is_empty() {
            return Some(None);
        }
        match TierObject::parse(fields) {
            Ok(o) => Some(Some(o)),
            Err(why) => {
                warn!(object = %id, error = why, "unusable record in the shared tier; ignoring it");
                Some(None)
            }
        }
    }

    /// Store `meta` as the record's metadata.
    pub async fn put_meta(&self, id: &ObjectId, meta: &ObjectMeta) -> Option<()> {
        let key = object_key(id);
        let version = format!("{:016x}", meta.version);
        let json = meta.to_json();
        self.run("put metadata", |mut c| async move {
            Script::new(PUT_META)
                .key(key)
                .arg(version)
                .arg(json)
                .invoke_async::<i64>(&mut c)
                .await
                .map(drop)
        })
        .await
    }

    /// Store slice `idx` of `version` and record its digest.
    pub async fn put_slice(
        &self,
        id: &ObjectId,
        version: u64,
        idx: u64,
        data: Bytes,
        digest: [u8; 32],
    ) -> Option<()> {
        let len = data.len() as u64;
        let key = slice_key(id, version, idx);
        self.run("write slice", |mut c| async move {
            c.set::<_, _, ()>(key, data.as_ref()).await
        })
        .await?;
        let record = object_key(id);
        let version = format!("{version:016x}");
        self.run("record digest", |mut c| async move {
            Script::new(ADD_DIGEST)
                .key(record)
                .arg(version)
                .arg(idx.to_string())
                .arg(digest.as_slice())
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await?;
        self.metrics.uploads.inc();
        self.metrics
            .bytes
            .get_or_create(&DirectionLabel { direction: "write" })
            .inc_by(len);
        Some(())
    }

    /// Slice `idx` of `version`'s bytes: `Some(None)` when the tier no longer has them.
    pub async fn slice(&self, id: &ObjectId, version: u64, idx: u64) -> Option<Option<Bytes>> {
        let key = slice_key(id, version, idx);
        let data: Option<Vec<u8>> = self
            .run("read slice", |mut c| async move { c.get(key).await })
            .await?;
        if let Some(d) = &data {
            self.metrics
                .bytes
                .get_or_create(&DirectionLabel { direction: "read" })
                .inc_by(d.len() as u64);
        }
        Some(data.map(Bytes::from))
    }

    /// Take the fill lock of `id` for `ttl`: `Some(false)` when another gateway holds it.
    pub async fn lock(&self, id: &ObjectId, ttl: Duration) -> Option<bool> {
        let key = lock_key(id);
        let token = self.token.clone();
        let ms = ttl.as_millis().max(1) as u64;
        let set: Option<String> = self
            .run("take lock", |mut c| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Some(set.is_some())
    }

    /// Whether anyone holds the fill lock of `id`.
    pub async fn locked(&self, id: &ObjectId) -> Option<bool> {
        let key = lock_key(id);
        self.run("check lock", |mut c| async move { c.exists(key).await })
            .await
    }

    /// Keep this gateway's lock on `id` for another `ttl`.
    pub async fn refresh_lock(&self, id: &ObjectId, ttl: Duration) -> Option<()> {
        let key = lock_key(id);
        let token = self.token.clone();
        let ms = ttl.as_millis().max(1) as u64;
        self.run("refresh lock", |mut c| async move {
            Script::new(REFRESH)
                .key(key)
                .arg(token)
                .arg(ms)
                .invoke_async::<i64>(&mut c)
                .await
                .map(drop)
        })
        .await
    }

    /// Free this gateway's lock on `id`.
    pub async fn unlock(&self, id: &ObjectId) -> Option<()> {
        let key = lock_key(id);
        let token = self.token.clone();
        self.run("free lock", |mut c| async move {
            Script::new(UNLOCK)
                .key(key)
                .arg(token)
                .invoke_async::<i64>(&mut c)
                .await
                .map(drop)
        })
        .await
    }

    /// Remove `id` from the tier and announce it to the other gateways. `None`: the tier could
    /// not be reached.
    pub async fn purge(&self, id: &ObjectId) -> Option<()> {
        let record = object_key(id);
        let fields: HashMap<String, Vec<u8>> = self
            .run("purge", |mut c| async move { c.hgetall(record).await })
            .await?;
        let version = record_version(&fields);
        let mut doomed = vec![object_key(id)];
        if let Some(version) = version {
            doomed.extend(
                fields
                    .keys()
                    .filter_map(|k| k.parse::<u64>().ok())
                    .map(|idx| slice_key(id, version, idx)),
            );
        }
        for key in doomed {
            self.run("purge", |mut c| async move { c.del::<_, ()>(key).await })
                .await?;
        }
        let entry = [("id", id.hex()), ("from", self.token.clone())];
        self.run("announce purge", |mut c| async move {
            c.xadd_maxlen::<_, _, _, _, String>(
                PURGES,
                StreamMaxlen::Approx(PURGES_KEPT),
                "*",
                &entry,
            )
            .await
            .map(drop)
        })
        .await
    }

    /// The newest purge announcement's stream id (`0-0` when there is none): where a gateway
    /// starts following.
    pub async fn purges_head(&self) -> Option<String> {
        let reply: StreamRangeReply = self
            .run("follow purges", |mut c| async move {
                c.xrevrange_count(PURGES, "+", "-", 1).await
            })
            .await?;
        Some(
            reply
                .ids
                .first()
                .map_or_else(|| "0-0".to_string(), |e| e.id.clone()),
        )
    }

    /// Purges announced after `after` by other gateways: (stream id, object) in order; the
    /// last stream id seen comes back even for this gateway's own announcements.
    pub async fn purges_after(&self, after: &str) -> Option<(String, Vec<ObjectId>)> {
        let from = format!("({after}");
        let reply: StreamRangeReply = self
            .run("follow purges", |mut c| async move {
                c.xrange_count(PURGES, from, "+", 100).await
            })
            .await?;
        let last = reply
            .ids
            .last()
            .map_or_else(|| after.to_string(), |e| e.id.clone());
        let ids = reply
            .ids
            .iter()
            .filter(|e| e.get::<String>("from").as_deref() != Some(self.token.as_str()))
            .filter_map(|e| ObjectId::from_hex(&e.get::<String>("id")?))
            .collect();
        Some((last, ids))
    }

    /// Connect (again) and check the cluster; `Err` says why not.
    async fn probe(&self) -> Result<ClusterConnection, String> {
        let connect = self.client.get_async_connection();
        let mut conn = match tokio::time::timeout(self.timeout * 4, connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("no connection within the timeout".into()),
        };
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("INFO");
        let info = cmd.query_async::<String>(&mut conn);
        match tokio::time::timeout(self.timeout, info).await {
            Ok(Ok(text)) if text.contains("cluster_state:ok") => Ok(conn),
            Ok(Ok(_)) => Err("cluster_state is not ok".into()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("CLUSTER INFO got no answer within the timeout".into()),
        }
    }
}

/// Whether `e` says the cluster (or a node of it) cannot be used, rather than refusing one
/// command.
fn unreachable(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::MasterDown | ServerErrorKind::BusyLoading)
        )
}

/// Connect, and reconnect after failures, until the tier is dropped.
async fn health(tier: std::sync::Weak<Tier>) {
    let mut logged_connecting = false;
    loop {
        let Some(t) = tier.upgrade() else { return };
        if !t.is_up() && Instant::now() >= *t.retry_at.lock() {
            match t.probe().await {
                Ok(conn) => {
                    *t.conn.write() = Some(conn);
                    t.state.store(UP, Ordering::Relaxed);
                    t.metrics.up.set(1);
                    info!("shared tier up");
                }
                Err(why) => {
                    *t.retry_at.lock() = Instant::now() + t.retry;
                    let was = t.state.swap(DOWN, Ordering::Relaxed);
                    if was == CONNECTING && !logged_connecting {
                        logged_connecting = true;
                        warn!(error = %why, retry_ms = t.retry.as_millis() as u64,
                            "shared tier down: cannot connect; going on without it");
                    }
                }
            }
        }
        drop(t);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::meta::sample;

    fn record(meta: &ObjectMeta) -> HashMap<String, Vec<u8>> {
        HashMap::from([
            (
                "v".to_string(),
                format!("{:016x}", meta.version).into_bytes(),
            ),
            ("meta".to_string(), meta.to_json()),
        ])
    }

    #[test]
    fn a_record_lists_the_slices_whose_digests_it_holds() {
        let meta = sample(Some(3 << 20), 1 << 20);
        let mut fields = record(&meta);
        fields.insert("0".into(), vec![1; 32]);
        fields.insert("2".into(), vec![2; 32]);
        fields.insert("7".into(), vec![3; 32]); // beyond the body: ignored
        fields.insert("1".into(), vec![4; 31]); // not a digest: ignored
        let o = TierObject::parse(fields).unwrap();
        assert_eq!(o.digests.len(), 2);
        assert!(!o.complete());
        assert_eq!(o.digests[&2], [2; 32]);
    }

    #[test]
    fn records_of_another_version_or_without_metadata_are_refused() {
        let meta = sample(Some(10), 1 << 20);
        let mut fields = record(&meta);
        fields.insert("v".into(), b"0000000000000001".to_vec());
        assert!(TierObject::parse(fields).is_err());
        let mut fields = record(&meta);
        fields.insert("meta".into(), b"{not json".to_vec());
        assert!(TierObject::parse(fields).is_err());
        assert!(TierObject::parse(HashMap::new()).is_err());
    }

    #[test]
    fn keys_put_a_record_and_its_lock_on_one_slot_and_spread_slices() {
        let id = ObjectId([0xab; 16]);
        let tag = format!("{{{}}}", id.hex());
        assert!(object_key(&id).contains(&tag) && lock_key(&id).contains(&tag));
        assert!(!slice_key(&id, 7, 3).contains('{'));
        assert!(slice_key(&id, 7, 3).ends_with(":0000000000000007:3"));
    }
}
