//! The in-memory index both stores share: objects, their slices, byte accounting, LRU order and
//! eviction choices. Pure bookkeeping — it never touches a file. Metadata and committed slices
//! enter from the stores' writes; lookups (hits), slice lengths, occupancy and the objects to
//! delete leave.
use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;

use super::{Hit, ObjectId, ObjectMeta, SliceSet, Usage};

struct Entry {
    meta: Arc<ObjectMeta>,
    present: SliceSet,
    bytes: u64,
    last_use: u64,
    writers: u32,
    /// Requests served from this version since it was stored (or since start).
    hits: u64,
}

/// An object's files to delete: its version and the slices it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The object.
    pub id: ObjectId,
    /// Version whose slices go.
    pub version: u64,
    /// Those slices.
    pub slices: Vec<u64>,
    /// Whether the whole object (its metadata too) goes.
    pub whole: bool,
}

/// Objects, slices, bytes, LRU.
pub struct Index {
    inner: Mutex<Inner>,
    max_bytes: u64,
}

struct Inner {
    map: HashMap<ObjectId, Entry>,
    bytes: u64,
    tick: u64,
    evictions: u64,
}

impl Index {
    /// An empty index for a store of `max_bytes`.
    pub fn new(max_bytes: u64) -> Index {
        Index {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                bytes: 0,
                tick: 0,
                evictions: 0,
            }),
            max_bytes,
        }
    }

    /// Look up and count a use.
    pub fn lookup(&self, id: &ObjectId) -> Option<Hit> {
        let mut g = self.inner.lock();
        g.tick += 1;
        let tick = g.tick;
        let e = g.map.get_mut(id)?;
        e.last_use = tick;
        Some(Hit {
            meta: e.meta.clone(),
            present: e.present.clone(),
            hits: e.hits,
        })
    }

    /// Count a request served from version `version` (ignored if another version replaced it).
    pub fn record_hit(&self, id: &ObjectId, version: u64) {
        let mut g = self.inner.lock();
        if let Some(e) = g.map.get_mut(id)
            && e.meta.version == version
        {
            e.hits += 1;
        }
    }

    /// Every object (for listings; not counted as a use).
    pub fn list(&self) -> Vec<(ObjectId, Hit)> {
        let g = self.inner.lock();
        g.map
            .iter()
            .map(|(id, e)| {
                (
                    *id,
                    Hit {
                        meta: e.meta.clone(),
                        present: e.present.clone(),
                        hits: e.hits,
                    },
                )
            })
            .collect()
    }

    /// Whether a slice is committed.
    pub fn has_slice(&self, id: &ObjectId, version: u64, idx: u64) -> bool {
        let g = self.inner.lock();
        g.map
            .get(id)
            .is_some_and(|e| e.meta.version == version && e.present.contains(idx))
    }

    /// The length of slice `idx` of `version` if it is committed and its length is final (the
    /// object's length is known). Not counted as a use.
    pub fn committed_len(&self, id: &ObjectId, version: u64, idx: u64) -> Option<u64> {
        let g = self.inner.lock();
        let e = g.map.get(id)?;
        (e.meta.version == version && e.present.contains(idx))
            .then(|| e.meta.slice_len(idx))
            .flatten()
    }

    /// Install metadata; returns the old version's slices to delete when it replaced one.
    pub fn set_meta(&self, id: ObjectId, meta: Arc<ObjectMeta>) -> Option<Dropped> {
        let mut g = self.inner.lock();
        g.tick += 1;
        let tick = g.tick;
        if let Some(e) = g.map.get_mut(&id) {
            e.last_use = tick;
            if e.meta.version == meta.version {
                e.meta = meta;
                return None;
            }
            let old = std::mem::replace(
                e,
                Entry {
                    meta,
                    present: SliceSet::default(),
                    bytes: 0,
                    last_use: tick,
                    writers: e.writers,
                    hits: 0,
                },
            );
            g.bytes -= old.bytes;
            return Some(Dropped {
                id,
                version: old.meta.version,
                slices: old.present.iter().collect(),
                whole: false,
            });
        }
        g.map.insert(
            id,
            Entry {
                meta,
                present: SliceSet::default(),
                bytes: 0,
                last_use: tick,
                writers: 0,
                hits: 0,
            },
        );
        None
    }

    /// Record a committed slice of `len` bytes. False when the object or version is gone
    /// (the caller then deletes the file it just committed).
    pub fn add_slice(&self, id: &ObjectId, version: u64, idx: u64, len: u64) -> bool {
        let mut g = self.inner.lock();
        let Some(e) = g.map.get_mut(id) else {
            return false;
        };
        if e.meta.version != version {
            return false;
        }
        if e.present.insert(idx) {
            e.bytes += len;
            g.bytes += len;
        }
        true
    }

    /// Forget one slice (its file vanished).
    pub fn drop_slice(&self, id: &ObjectId, version: u64, idx: u64, len: u64) {
        let mut g = self.inner.lock();
        let Some(e) = g.map.get_mut(id) else { return };
        if e.meta.version != version || !e.present.contains(idx) {
            return;
        }
        let mut kept = SliceSet::default();
        for i in e.present.iter().filter(|&i| i != idx) {
            kept.insert(i);
        }
        e.present = kept;
        let n = len.min(e.bytes);
        e.bytes -= n;
        g.bytes -= n;
    }

    /// Forget an object.
    pub fn remove(&self, id: &ObjectId) -> Option<Dropped> {
        let mut g = self.inner.lock();
        let e = g.map.remove(id)?;
        g.bytes -= e.bytes;
        Some(Dropped {
            id: *id,
            version: e.meta.version,
            slices: e.present.iter().collect(),
            whole: true,
        })
    }

    /// A writer starts (objects being written are never evicted).
    pub fn pin(&self, id: &ObjectId) {
        if let Some(e) = self.inner.lock().map.get_mut(id) {
            e.writers += 1;
        }
    }

    /// A writer ends.
    pub fn unpin(&self, id: &ObjectId) {
        if let Some(e) = self.inner.lock().map.get_mut(id) {
            e.writers = e.writers.saturating_sub(1);
        }
    }

    /// When over the limit, remove least-recently-used objects (not being written) until the
    /// store is under 95 % of it, and return them for deletion.
    pub fn evict(&self) -> Vec<Dropped> {
        let mut g = self.inner.lock();
        if g.bytes <= self.max_bytes {
            return Vec::new();
        }
        let target = self.max_bytes / 100 * 95;
        let mut order: Vec<(u64, ObjectId)> = g
            .map
            .iter()
            .filter(|(_, e)| e.writers == 0)
            .map(|(id, e)| (e.last_use, *id))
            .collect();
        order.sort_unstable();
        let mut out = Vec::new();
        for (_, id) in order {
            if g.bytes <= target {
                break;
            }
            if let Some(e) = g.map.remove(&id) {
                g.bytes -= e.bytes;
                g.evictions += 1;
                out.push(Dropped {
                    id,
                    version: e.meta.version,
                    slices: e.present.iter().collect(),
                    whole: true,
                });
            }
        }
        out
    }

    /// Occupancy.
    pub fn usage(&self) -> Usage {
        let g = self.inner.lock();
        Usage {
            objects: g.map.len() as u64,
            bytes: g.bytes,
            max_bytes: self.max_bytes,
            evictions: g.evictions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::meta::sample;

    fn meta(version: u64) -> Arc<ObjectMeta> {
        let mut m = sample(Some(3000), 1000);
        m.version = version;
        Arc::new(m)
    }

    #[test]
    fn accounting_replacement_and_lru_eviction() {
        let idx = Index::new(5000);
        let (a, b, c) = (ObjectId([1; 16]), ObjectId([2; 16]), ObjectId([3; 16]));
        for id in [a, b, c] {
            assert!(idx.set_meta(id, meta(1)).is_none());
        }
        for i in 0..2 {
            assert!(idx.add_slice(&a, 1, i, 1000));
            assert!(idx.add_slice(&b, 1, i, 1000));
        }
        assert!(!idx.add_slice(&a, 2, 2, 1000), "wrong version");
        assert_eq!(idx.usage().bytes, 4000);
        assert!(idx.has_slice(&a, 1, 1) && !idx.has_slice(&a, 1, 2));
        // b is used more recently than a.
        idx.lookup(&a);
        idx.lookup(&b);
        idx.pin(&c);
        assert!(idx.add_slice(&c, 1, 0, 1000));
        assert!(idx.add_slice(&c, 1, 1, 1000));
        assert_eq!(idx.usage().bytes, 6000);
        let gone = idx.evict();
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].id, a);
        assert_eq!(gone[0].slices, vec![0, 1]);
        assert_eq!(idx.usage().bytes, 4000);
        assert_eq!(idx.usage().evictions, 1);
        // A new version replaces the slices.
        let dropped = idx.set_meta(b, meta(2)).unwrap();
        assert_eq!((dropped.version, dropped.slices.len()), (1, 2));
        assert_eq!(idx.usage().bytes, 2000);
        // Hits count per version: a new version starts again from 0.
        idx.record_hit(&b, 2);
        idx.record_hit(&b, 1);
        assert_eq!(idx.lookup(&b).unwrap().hits, 1);
        idx.record_hit(&c, 1);
        // The same version only updates the metadata (and keeps its hits).
        assert!(idx.set_meta(c, meta(1)).is_none());
        assert_eq!(
            idx.list().iter().find(|(id, _)| *id == c).unwrap().1.hits,
            1
        );
        assert!(idx.has_slice(&c, 1, 1));
        assert_eq!(idx.remove(&c).unwrap().slices, vec![0, 1]);
        assert_eq!(idx.usage().bytes, 0);
    }
}
