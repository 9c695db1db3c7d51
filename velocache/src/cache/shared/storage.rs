//! The two-tier store: this gateway's disk in front, the shared tier behind it.
//!
//! [`TieredStorage`] is a [`Storage`] over a local store and a [`Tier`]. Lookups answer from
//! the local store; a local miss (or an object stored here only in part) asks the tier, and
//! what the tier has is adopted: its metadata is stored locally at once, and its slices are
//! read from the tier when a response needs them — checked against their SHA-256 (a mismatch
//! is counted and read as a miss, so the slice is fetched from the origin again), sent to the
//! client, and written to the local disk behind it. What this gateway stores (metadata, and
//! each slice as it is committed) is queued for the tier ([`super::upload`]) and never waits
//! for it. Removing an object removes the local copy only; a purge of the tier is explicit
//! ([`TieredStorage::purge_shared`]) and announced to the other gateways, whose follower
//! ([`TieredStorage::follow_purges`]) drops their local copies.
use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Bytes;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{
    tier::{Tier, TierObject},
    upload::{Upload, Uploads},
};
use crate::cache::{
    CacheError, FileRegion, Hit, IoFuture, Lookup, ObjectId, ObjectMeta, SliceReader, SliceSet,
    SliceWriter, Step, Storage, Usage,
};

/// Tier records remembered at most (beyond it the memory is cleared and records asked again).
const KNOWN_MAX: usize = 65_536;
/// How long an object stored here only in part is not asked about again.
const RECHECK: Duration = Duration::from_secs(2);
/// Slices read ahead from the tier while one is being sent.
const READ_AHEAD: u64 = 2;

/// What this gateway learnt of an object in the tier.
struct Known {
    obj: Option<Arc<TierObject>>,
    at: Instant,
}

type Ahead = tokio::task::JoinHandle<Option<Option<Bytes>>>;

/// A local store with the shared tier behind it.
pub struct TieredStorage {
    local: Arc<dyn Storage>,
    tier: Arc<Tier>,
    known: Mutex<HashMap<ObjectId, Known>>,
    ahead: Mutex<HashMap<(ObjectId, u64, u64), Ahead>>,
    uploads: Uploads,
}

impl TieredStorage {
    /// `local` in front of `tier`; starts the upload worker and the purge follower.
    pub fn new(local: Arc<dyn Storage>, tier: Arc<Tier>) -> Arc<TieredStorage> {
        let store = Arc::new(TieredStorage {
            uploads: Uploads::start(tier.clone()),
            local,
            tier,
            known: Mutex::new(HashMap::new()),
            ahead: Mutex::new(HashMap::new()),
        });
        tokio::spawn(follow_purges(Arc::downgrade(&store)));
        store
    }

    /// The tier.
    pub fn tier(&self) -> &Arc<Tier> {
        &self.tier
    }

    /// Queue an upload (dropped, and counted, when the queue is full).
    pub(super) fn upload(&self, u: Upload) {
        self.uploads.push(u);
    }

    fn known(&self, id: &ObjectId) -> Option<Arc<TierObject>> {
        self.known.lock().get(id).and_then(|k| k.obj.clone())
    }

    fn remember(&self, id: ObjectId, obj: Option<Arc<TierObject>>) {
        let mut known = self.known.lock();
        if known.len() >= KNOWN_MAX {
            known.clear();
        }
        known.insert(
            id,
            Known {
                obj,
                at: Instant::now(),
            },
        );
    }

    /// Forget that the tier has slice `idx` (it was missing or corrupt there).
    fn forget_slice(&self, id: &ObjectId, idx: u64) {
        let mut known = self.known.lock();
        if let Some(k) = known.get_mut(id)
            && let Some(obj) = &k.obj
        {
            let mut digests = obj.digests.clone();
            digests.remove(&idx);
            k.obj = Some(Arc::new(TierObject {
                meta: obj.meta.clone(),
                digests,
            }));
        }
    }

    /// Ask the tier for `id` now and return what it has; when nothing of the object is stored
    /// here, adopt it (its metadata stored locally, so the slices read from the tier can be kept
    /// here too). An object stored here in another version is left as it is: the tier's
    /// slices then simply do not apply to it.
    pub async fn fetch_record(&self, id: ObjectId) -> Option<Arc<TierObject>> {
        let obj = self.tier.object(&id).await?.map(Arc::new);
        self.remember(id, obj.clone());
        let obj = obj?;
        if matches!(self.local.lookup(&id).await, Ok(None))
            && let Err(e) = self.local.put_meta(id, obj.meta.clone()).await
        {
            debug!(object = %id, error = %e, "the shared tier's metadata was not stored locally");
        }
        Some(obj)
    }

    async fn tier_lookup(&self, id: ObjectId) -> Result<Option<Hit>, CacheError> {
        match self.fetch_record(id).await {
            Some(obj) => {
                self.tier.metrics.hits.inc();
                Ok(Some(hit_of(&obj, 0)))
            }
            None => {
                if self.tier.is_up() {
                    self.tier.metrics.misses.inc();
                }
                Ok(None)
            }
        }
    }

    /// Remove `id` from the tier and tell the other gateways (the local copy is the caller's).
    /// `false`: the tier could not be reached.
    pub async fn purge_shared(&self, id: ObjectId) -> bool {
        self.known.lock().remove(&id);
        self.tier.purge(&id).await.is_some()
    }

    /// Slice `idx` of `version` from the tier, or from the read-ahead already asking for it.
    async fn tier_slice(&self, id: ObjectId, version: u64, idx: u64) -> Option<Option<Bytes>> {
        let pending = self.ahead.lock().remove(&(id, version, idx));
        match pending {
            Some(h) => h.await.ok().flatten(),
            None => self.tier.slice(&id, version, idx).await,
        }
    }

    /// Start reading the slices after `idx` that only the tier has.
    fn read_ahead(&self, id: ObjectId, obj: &TierObject, idx: u64) {
        let version = obj.meta.version;
        let mut ahead = self.ahead.lock();
        // Handles of slices nobody came for (a client that went away) must not pile up.
        ahead.retain(|_, h| !h.is_finished());
        if ahead.len() >= 64 {
            return;
        }
        for next in idx + 1..=idx + READ_AHEAD {
            if !obj.digests.contains_key(&next)
                || self.local.has_slice(&id, version, next)
                || ahead.contains_key(&(id, version, next))
            {
                continue;
            }
            let tier = self.tier.clone();
            ahead.insert(
                (id, version, next),
                tokio::spawn(async move { tier.slice(&id, version, next).await }),
            );
        }
    }

    async fn open_from_tier(
        self: Arc<Self>,
        id: ObjectId,
        version: u64,
        idx: u64,
        obj: Arc<TierObject>,
    ) -> Result<Option<Arc<dyn SliceReader>>, CacheError> {
        self.read_ahead(id, &obj, idx);
        match self.tier_slice(id, version, idx).await {
            Some(Some(data)) => {
                let want = obj.meta.slice_len(idx);
                let digest: [u8; 32] = Sha256::digest(&data).into();
                if Some(&digest) == obj.digests.get(&idx)
                    && want.is_none_or(|w| w == data.len() as u64)
                {
                    self.keep_locally(id, version, idx, data.clone());
                    return Ok(Some(Arc::new(InMemorySlice(data))));
                }
                self.tier.metrics.digest_mismatches.inc();
                warn!(object = %id, key = %obj.meta.key, slice = idx, len = data.len(),
                    "a slice in the shared tier does not match its SHA-256; fetching it again");
            }
            Some(None) => {
                debug!(object = %id, slice = idx, "the shared tier no longer has this slice");
            }
            None => {}
        }
        self.forget_slice(&id, idx);
        self.local.open_slice(id, version, idx).await
    }

    /// Write a slice read from the tier to the local disk, behind the client.
    fn keep_locally(&self, id: ObjectId, version: u64, idx: u64, data: Bytes) {
        let local = self.local.clone();
        tokio::spawn(async move {
            let len = data.len() as u64;
            let write = async {
                let mut w = local.create_slice(id, version, idx).await?;
                w.append(data).await?;
                w.commit(len).await
            };
            if let Err(e) = write.await {
                debug!(object = %id, slice = idx, error = %e,
                    "a slice from the shared tier was not stored locally");
            }
        });
    }
}

/// A hit for a tier record (the slices the tier has).
fn hit_of(obj: &TierObject, hits: u64) -> Hit {
    let mut hit = Hit {
        meta: obj.meta.clone(),
        present: SliceSet::default(),
        hits,
    };
    merge(&mut hit, obj);
    hit
}

/// A slice held in memory (read from the tier).
struct InMemorySlice(Bytes);

impl SliceReader for InMemorySlice {
    fn read(&self, offset: u64, len: usize) -> IoFuture<'static, Bytes> {
        let total = self.0.len();
        let from = (offset as usize).min(total);
        let to = from.saturating_add(len).min(total);
        let data = self.0.slice(from..to);
        Box::pin(async move { Ok(data) })
    }
}

impl Storage for Arc<TieredStorage> {
    fn lookup(&self, id: &ObjectId) -> Lookup<'_> {
        let local = match self.local.lookup(id) {
            Step::Ready(r) => r,
            pending => return pending,
        };
        let id = *id;
        match local {
            Ok(Some(mut hit)) => {
                if hit.complete() || !self.tier.is_up() {
                    return Step::Ready(Ok(Some(hit)));
                }
                // Stored here only in part: the tier may have the rest.
                let recent = self.known.lock().get(&id).map(|k| (k.obj.clone(), k.at));
                let obj = match recent {
                    Some((obj, at)) if at.elapsed() < RECHECK => obj,
                    _ => {
                        return Step::Pending(Box::pin(async move {
                            if let Some(obj) = self.fetch_record(id).await
                                && obj.meta.version == hit.meta.version
                            {
                                merge(&mut hit, &obj);
                            }
                            Ok(Some(hit))
                        }));
                    }
                };
                if let Some(obj) = obj
                    && obj.meta.version == hit.meta.version
                {
                    merge(&mut hit, &obj);
                }
                Step::Ready(Ok(Some(hit)))
            }
            Ok(None) if self.tier.is_up() => {
                Step::Pending(Box::pin(async move { self.tier_lookup(id).await }))
            }
            other => Step::Ready(other),
        }
    }

    fn has_slice(&self, id: &ObjectId, version: u64, idx: u64) -> bool {
        // A slice only the tier has counts only while the tier can be read: a reader told
        // "present" by a down tier would end its response with the slice missing, instead of
        // fetching it from the origin.
        self.local.has_slice(id, version, idx)
            || (self.tier.is_up()
                && self
                    .known(id)
                    .is_some_and(|o| o.meta.version == version && o.digests.contains_key(&idx)))
    }

    fn put_meta(&self, id: ObjectId, meta: Arc<ObjectMeta>) -> IoFuture<'static, ()> {
        let local = self.local.put_meta(id, meta.clone());
        let this = self.clone();
        Box::pin(async move {
            local.await?;
            if this.known(&id).is_some_and(|o| *o.meta == *meta) {
                return Ok(());
            }
            if meta.len.is_none_or(|l| l <= this.tier.max_object_bytes) {
                this.upload(Upload::Meta { id, meta });
            }
            Ok(())
        })
    }

    fn open_slice(
        &self,
        id: ObjectId,
        version: u64,
        idx: u64,
    ) -> IoFuture<'static, Option<Arc<dyn SliceReader>>> {
        if !self.local.has_slice(&id, version, idx)
            && let Some(obj) = self.known(&id)
            && obj.meta.version == version
            && obj.digests.contains_key(&idx)
            && self.tier.is_up()
        {
            return Box::pin(self.clone().open_from_tier(id, version, idx, obj));
        }
        self.local.open_slice(id, version, idx)
    }

    fn slice_file(
        &self,
        id: ObjectId,
        version: u64,
        idx: u64,
    ) -> IoFuture<'static, Option<FileRegion>> {
        self.local.slice_file(id, version, idx)
    }

    fn create_slice(
        &self,
        id: ObjectId,
        version: u64,
        idx: u64,
    ) -> IoFuture<'static, Box<dyn SliceWriter>> {
        let local = self.local.create_slice(id, version, idx);
        let this = self.clone();
        Box::pin(async move {
            let inner = local.await?;
            let w: Box<dyn SliceWriter> = Box::new(TierWriter {
                inner,
                parts: Vec::new(),
                store: this,
                id,
                version,
                idx,
            });
            Ok(w)
        })
    }

    fn remove(&self, id: ObjectId) -> IoFuture<'static, ()> {
        self.known.lock().remove(&id);
        self.local.remove(id)
    }

    fn usage(&self) -> Usage {
        self.local.usage()
    }

    fn list(&self) -> Vec<(ObjectId, Hit)> {
        self.local.list()
    }

    fn record_hit(&self, id: &ObjectId, version: u64) {
        self.local.record_hit(id, version);
    }
}

fn merge(hit: &mut Hit, obj: &TierObject) {
    for idx in obj.digests.keys() {
        hit.present.insert(*idx);
    }
}

/// Writes a slice locally and, once committed there, queues it for the tier.
struct TierWriter {
    inner: Box<dyn SliceWriter>,
    parts: Vec<Bytes>,
    store: Arc<TieredStorage>,
    id: ObjectId,
    version: u64,
    idx: u64,
}

impl SliceWriter for TierWriter {
    fn append(&mut self, data: Bytes) -> IoFuture<'_, ()> {
        self.parts.push(data.clone());
        self.inner.append(data)
    }

    fn written(&self) -> u64 {
        self.inner.written()
    }

    fn commit(self: Box<Self>, expected: u64) -> IoFuture<'static, ()> {
        let TierWriter {
            inner,
            parts,
            store,
            id,
            version,
            idx,
        } = *self;
        let commit = inner.commit(expected);
        Box::pin(async move {
            commit.await?;
            let data = if parts.len() == 1 {
                parts.into_iter().next().unwrap_or_default()
            } else {
                let mut all = Vec::with_capacity(expected as usize);
                for p in &parts {
                    all.extend_from_slice(p);
                }
                Bytes::from(all)
            };
            store.upload(Upload::Slice {
                id,
                version,
                idx,
                data,
            });
            Ok(())
        })
    }
}

/// Follow the other gateways' purges until the store is dropped: each drops the local copy.
async fn follow_purges(store: std::sync::Weak<TieredStorage>) {
    let mut last: Option<String> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Some(s) = store.upgrade() else { return };
        if !s.tier.is_up() {
            continue;
        }
        let Some(after) = last.clone() else {
            last = s.tier.purges_head().await;
            continue;
        };
        let Some((next, ids)) = s.tier.purges_after(&after).await else {
            continue;
        };
        last = Some(next);
        for id in ids {
            let had = matches!(s.local.lookup(&id).await, Ok(Some(_)));
            s.known.lock().remove(&id);
            if had {
                if let Err(e) = s.local.remove(id).await {
                    warn!(object = %id, error = %e, "a purge from another gateway failed here");
                    continue;
                }
                s.tier.metrics.purges_applied.inc();
                info!(object = %id, "purged by another gateway (shared tier)");
            }
        }
    }
}
