//! The storage seam: what the HTTP layer may ask of a cache store, whatever backs it.
//!
//! An object is its [`ObjectMeta`] plus the slices of its body (each `slice_bytes` long, the
//! last one shorter). Data enters through [`Storage::put_meta`] and a [`SliceWriter`] per slice;
//! a slice becomes visible only when [`SliceWriter::commit`] has checked its length and moved it
//! into place; until then it can be read only by those who know it is being written
//! (collapsed-forwarding readers), via [`Storage::open_slice`]. Dropping a writer without
//! committing discards what it wrote.
//!
//! Data leaves in two shapes: [`Storage::lookup`] answers with a [`Hit`] (the metadata and
//! which slices are committed), and each slice is read through a [`SliceReader`] — as bytes, or,
//! for a committed slice of a file-backed store, as a [`FileRegion`] (an open file, an offset
//! and a length) that a response can hand to `sendfile`/`splice` without copying it through
//! userspace. The memory store has no files and says so (`SliceReader::file` is `None`).
//!
//! Lookups and lock acquisitions return a [`Step`]: the local stores know the answer at once (an
//! in-RAM index) and await nothing — no future is boxed on the hit path — while a remote tier
//! (a shared cache on Redis) can return a pending one.
//!
//! Backends: [`super::MemoryStorage`] (unit tests) and [`super::DiskStorage`] (io_uring).
use std::{future::IntoFuture, os::fd::OwnedFd, sync::Arc};

use bytes::Bytes;
use futures::future::{BoxFuture, Either};

use super::{CacheError, ObjectId, ObjectMeta};

/// A future returned by a storage operation.
pub type IoFuture<'a, T> = BoxFuture<'a, Result<T, CacheError>>;

/// A value known now, or a future of it. Awaiting [`Step::Ready`] allocates nothing, which is
/// what lets a seam be async without costing the paths that never wait (an in-RAM lookup, a
/// phase that decides from the request head).
pub enum Step<'a, T> {
    /// Known now.
    Ready(T),
    /// Known when this future resolves.
    Pending(BoxFuture<'a, T>),
}

impl<'a, T: 'a> IntoFuture for Step<'a, T> {
    type Output = T;
    type IntoFuture = Either<std::future::Ready<T>, BoxFuture<'a, T>>;

    fn into_future(self) -> Self::IntoFuture {
        match self {
            Step::Ready(v) => Either::Left(std::future::ready(v)),
            Step::Pending(f) => Either::Right(f),
        }
    }
}

/// What [`Storage::lookup`] returns.
pub type Lookup<'a> = Step<'a, Result<Option<Hit>, CacheError>>;

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

/// An object as found in the store: a handle on one version of it. Its slices are read with
/// [`Storage::open_slice`] (bytes, or a [`FileRegion`]) under `meta.version`; `present` says
/// which were committed when it was looked up (a fill may be adding more).
#[derive(Debug, Clone)]
pub struct Hit {
    /// Its metadata.
    pub meta: Arc<ObjectMeta>,
    /// Its committed slices.
    pub present: SliceSet,
    /// Requests served from this version of the object since it was stored (counted in
    /// memory: a restart starts again from 0).
    pub hits: u64,
}

impl Hit {
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

/// A committed slice as a region of an open file: what `sendfile`/`splice` need. The file stays
/// readable while the region is held, even if the object is purged meanwhile (the descriptor
/// keeps the unlinked file alive).
#[derive(Debug, Clone)]
pub struct FileRegion {
    /// The open file.
    pub fd: Arc<OwnedFd>,
    /// Where the slice starts in it.
    pub offset: u64,
    /// The slice's length.
    pub len: u64,
}

/// Reads one slice (committed, or still being written).
pub trait SliceReader: Send + Sync {
    /// Up to `len` bytes at `offset` within the slice (fewer at its current end).
    fn read(&self, offset: u64, len: usize) -> IoFuture<'static, Bytes>;

    /// The slice as a file region, to be sent without a copy through userspace. `None` when the
    /// store keeps no files (the memory store), the slice is still being written (its length is
    /// not final), or its length is not known yet (an object whose length the fill is still
    /// learning): the caller then reads bytes with [`SliceReader::read`].
    fn file(&self) -> Option<FileRegion> {
        None
    }
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
    /// The object stored under `id`, if any (counts as a use for eviction). A local store
    /// answers [`Step::Ready`]; a remote tier may have to ask.
    fn lookup(&self, id: &ObjectId) -> Lookup<'_>;
    /// Whether slice `idx` of version `version` is committed. Asked for every chunk a response
    /// reads, so it answers from what the store knows without waiting.
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
    /// Committed slice `idx` of `version` as a file region (see [`SliceReader::file`]): `None`
    /// when it is not committed or the store cannot hand out files.
    fn slice_file(
        &self,
        id: ObjectId,
        version: u64,
        idx: u64,
    ) -> IoFuture<'static, Option<FileRegion>> {
        let open = self.open_slice(id, version, idx);
        Box::pin(async move { Ok(open.await?.and_then(|r| r.file())) })
    }
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
    fn list(&self) -> Vec<(ObjectId, Hit)>;
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
