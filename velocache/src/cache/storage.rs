//! The storage seam: what the HTTP layer may ask of a cache store, whatever backs it.
//!
//! An object is its [`ObjectMeta`] plus the slices of its body (each `slice_bytes` long, the
//! last one shorter). A slice is written through a [`SliceWriter`] and becomes visible only
//! when [`SliceWriter::commit`] has checked its length and moved it into place; until then it
//! can be read only by those who know it is being written (collapsed-forwarding readers), via
//! [`Storage::open_slice`]. Dropping a writer without committing discards what it wrote.
//!
//! Backends: [`super::MemoryStorage`] (unit tests) and [`super::DiskStorage`] (io_uring).
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::{CacheError, ObjectId, ObjectMeta};

/// A future returned by a storage operation.
pub type IoFuture<'a, T> = BoxFuture<'a, Result<T, CacheError>>;

/// Which slices of an object are stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SliceSet {
    bits: Vec<u64>,
}

impl SliceSet {
    /// Whether slice `idx` is present.
    pub fn contains(&self, idx: u64) -> bool {
        let (w, b) = ((idx / 64) as usize, idx % 64);
        self.bits.get(w).is_some_and(|x| x & (1 << b) != 0)
    }

    /// Mark slice `idx` present; false if it already was.
    pub fn insert(&mut self, idx: u64) -> bool {
        let (w, b) = ((idx / 64) as usize, idx % 64);
        if self.bits.len() <= w {
            self.bits.resize(w + 1, 0);
        }
        let had = self.bits[w] & (1 << b) != 0;
        self.bits[w] |= 1 << b;
        !had
    }

    /// Number of slices present.
    pub fn count(&self) -> u64 {
        self.bits.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Indices present, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.bits.iter().enumerate().flat_map(|(w, &x)| {
            (0..64)
                .filter(move |b| x & (1 << b) != 0)
                .map(move |b| w as u64 * 64 + b)
        })
    }

    /// Whether every slice in `first..=last` is present.
    pub fn contains_all(&self, first: u64, last: u64) -> bool {
        (first..=last).all(|i| self.contains(i))
    }
}

/// An object as found in the store.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Its metadata.
    pub meta: Arc<ObjectMeta>,
    /// Its committed slices.
    pub present: SliceSet,
    /// Requests served from this version of the object since it was stored (counted in
    /// memory: a restart starts again from 0).
    pub hits: u64,
}

impl Snapshot {
    /// Whether the whole body is stored (length known, every slice present).
    pub fn complete(&self) -> bool {
        match self.meta.slices() {
            Some(0) => true,
            Some(n) => self.present.contains_all(0, n - 1),
            None => false,
        }
    }
}

/// Store occupancy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Objects indexed.
    pub objects: u64,
    /// Bytes of committed slices.
    pub bytes: u64,
    /// The size limit.
    pub max_bytes: u64,
    /// Objects evicted since start.
    pub evictions: u64,
}

/// Reads one slice (committed, or still being written).
pub trait SliceReader: Send + Sync {
    /// Up to `len` bytes at `offset` within the slice (fewer at its current end).
    fn read(&self, offset: u64, len: usize) -> IoFuture<'static, Bytes>;
}

/// Writes one slice; visible to lookups only after `commit`.
pub trait SliceWriter: Send {
    /// Append `data`.
    fn append(&mut self, data: Bytes) -> IoFuture<'_, ()>;
    /// Bytes appended so far.
    fn written(&self) -> u64;
    /// Check the slice has `expected` bytes, make it durable and visible.
    fn commit(self: Box<Self>, expected: u64) -> IoFuture<'static, ()>;
}

/// A cache store.
pub trait Storage: Send + Sync + 'static {
    /// The object stored under `id`, if any (counts as a use for eviction).
    fn lookup(&self, id: &ObjectId) -> Option<Snapshot>;
    /// Whether slice `idx` of version `version` is committed.
    fn has_slice(&self, id: &ObjectId, version: u64, idx: u64) -> bool;
    /// Store `meta`. The same version updates it (a 304, a length learnt at the end, a
    /// verification); another version replaces the object, and the old slices go.
    fn put_meta(&self, id: ObjectId, meta: Arc<ObjectMeta>) -> IoFuture<'static, ()>;
    /// Open slice `idx` for reading: committed, or being written. `None`: neither.
    fn open_slice(
        &self,
        id: ObjectId,
        version: u64,
        idx: u64,
    ) -> IoFuture<'static, Option<Arc<dyn SliceReader>>>;
    /// Start writing slice `idx` of version `version`.
    fn create_slice(
        &self,
        id: ObjectId,
        version: u64,
        idx: u64,
    ) -> IoFuture<'static, Box<dyn SliceWriter>>;
    /// Forget the object and delete it.
    fn remove(&self, id: ObjectId) -> IoFuture<'static, ()>;
    /// Occupancy.
    fn usage(&self) -> Usage;
    /// Every object with its committed slices, for listings (not counted as uses).
    fn list(&self) -> Vec<(ObjectId, Snapshot)>;
    /// Count a request served from version `version` of the object (for listings).
    fn record_hit(&self, id: &ObjectId, version: u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_sets() {
        let mut s = SliceSet::default();
        assert!(!s.contains(0));
        assert!(s.insert(0));
        assert!(!s.insert(0));
        assert!(s.insert(130));
        assert!(s.contains(130) && !s.contains(129));
        assert_eq!(s.count(), 2);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 130]);
        assert!(!s.contains_all(0, 130));
        for i in 0..=130 {
            s.insert(i);
        }
        assert!(s.contains_all(0, 130));
    }
}
