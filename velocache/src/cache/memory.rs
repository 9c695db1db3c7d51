//! An in-memory [`Storage`] for unit tests: the same semantics as the disk store (slices
//! visible only once committed with the right length, in-progress slices readable by those who
//! ask, versions, eviction), with `Vec<u8>` instead of files.
//!
//! Data enters as metadata and slice writes and leaves as `Bytes` read back from RAM; having no
//! files, it hands out no [`super::FileRegion`] (`SliceReader::file` is always `None`).
use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;
use parking_lot::Mutex;

use super::{
    CacheError, Hit, IoFuture, Lookup, ObjectId, ObjectMeta, SliceReader, SliceWriter, Step,
    Storage, Usage, index::Index,
};

type SliceKey = (ObjectId, u64, u64);

/// Slices being written, readable by those who ask.
type Partials = Arc<Mutex<HashMap<SliceKey, Arc<Mutex<Vec<u8>>>>>>;

/// Objects in RAM.
pub struct MemoryStorage {
    index: Index,
    slices: Arc<Mutex<HashMap<SliceKey, Bytes>>>,
    partial: Partials,
    this: std::sync::Weak<MemoryStorage>,
}

impl MemoryStorage {
    /// A store of at most `max_bytes`.
    pub fn new(max_bytes: u64) -> Arc<MemoryStorage> {
        Arc::new_cyclic(|this| MemoryStorage {
            index: Index::new(max_bytes),
            slices: Arc::default(),
            partial: Arc::default(),
            this: this.clone(),
        })
    }

    fn drop_files(&self, dropped: super::index::Dropped) {
        let mut s = self.slices.lock();
        for i in dropped.slices {
            s.remove(&(dropped.id, dropped.version, i));
        }
    }
}

struct MemReader(Bytes);

impl SliceReader for MemReader {
    fn read(&self, offset: u64, len: usize) -> IoFuture<'static, Bytes> {
        let start = (offset as usize).min(self.0.len());
        let end = start.saturating_add(len).min(self.0.len());
        let b = self.0.slice(start..end);
        Box::pin(async move { Ok(b) })
    }
}

struct PartialReader(Arc<Mutex<Vec<u8>>>);

impl SliceReader for PartialReader {
    fn read(&self, offset: u64, len: usize) -> IoFuture<'static, Bytes> {
        let v = self.0.lock();
        let start = (offset as usize).min(v.len());
        let end = start.saturating_add(len).min(v.len());
        let b = Bytes::copy_from_slice(&v[start..end]);
        Box::pin(async move { Ok(b) })
    }
}

struct MemWriter {
    store: Arc<MemoryStorage>,
    key: SliceKey,
    buf: Arc<Mutex<Vec<u8>>>,
    committed: bool,
}

impl SliceWriter for MemWriter {
    fn append(&mut self, data: Bytes) -> IoFuture<'_, ()> {
        self.buf.lock().extend_from_slice(&data);
        Box::pin(async { Ok(()) })
    }

    fn written(&self) -> u64 {
        self.buf.lock().len() as u64
    }

    fn commit(mut self: Box<Self>, expected: u64) -> IoFuture<'static, ()> {
        let got = self.written();
        let result = if got != expected {
            Err(CacheError::Length {
                expected,
                got,
                what: "slice",
            })
        } else {
            let (id, version, idx) = self.key;
            let data = Bytes::from(std::mem::take(&mut *self.buf.lock()));
            self.store.slices.lock().insert(self.key, data);
            self.committed = true;
            if !self.store.index.add_slice(&id, version, idx, got) {
                self.store.slices.lock().remove(&self.key);
            }
            for d in self.store.index.evict() {
                self.store.drop_files(d);
            }
            Ok(())
        };
        self.store.partial.lock().remove(&self.key);
        self.store.index.unpin(&self.key.0);
        Box::pin(async move { result })
    }
}

impl Drop for MemWriter {
    fn drop(&mut self) {
        if !self.committed {
            self.store.partial.lock().remove(&self.key);
            self.store.index.unpin(&self.key.0);
        }
    }
}

impl Storage for MemoryStorage {
    fn list(&self) -> Vec<(ObjectId, Hit)> {
        self.index.list()
    }

    fn record_hit(&self, id: &ObjectId, version: u64) {
        self.index.record_hit(id, version);
    }

    fn lookup(&self, id: &ObjectId) -> Lookup<'_> {
        Step::Ready(Ok(self.index.lookup(id)))
    }

    fn has_slice(&self, id: &ObjectId, version: u64, idx: u64) -> bool {
        self.index.has_slice(id, version, idx)
    }

    fn put_meta(&self, id: ObjectId, meta: Arc<ObjectMeta>) -> IoFuture<'static, ()> {
        if let Some(d) = self.index.set_meta(id, meta) {
            self.drop_files(d);
        }
        Box::pin(async { Ok(()) })
    }

    fn open_slice(
        &self,
        id: ObjectId,
        version: u64,
        idx: u64,
    ) -> IoFuture<'static, Option<Arc<dyn SliceReader>>> {
        let key = (id, version, idx);
        let found: Option<Arc<dyn SliceReader>> = if let Some(b) = self.slices.lock().get(&key) {
            Some(Arc::new(MemReader(b.clone())))
        } else {
            self.partial
                .lock()
                .get(&key)
                .map(|p| Arc::new(PartialReader(p.clone())) as Arc<dyn SliceReader>)
        };
        Box::pin(async move { Ok(found) })
    }

    fn create_slice(
        &self,
        id: ObjectId,
        version: u64,
        idx: u64,
    ) -> IoFuture<'static, Box<dyn SliceWriter>> {
        let store = self.this.upgrade();
        let key = (id, version, idx);
        let buf = Arc::new(Mutex::new(Vec::new()));
        self.partial.lock().insert(key, buf.clone());
        self.index.pin(&id);
        Box::pin(async move {
            let store = store.ok_or(CacheError::Closed)?;
            Ok(Box::new(MemWriter {
                store,
                key,
                buf,
                committed: false,
            }) as Box<dyn SliceWriter>)
        })
    }

    fn remove(&self, id: ObjectId) -> IoFuture<'static, ()> {
        if let Some(d) = self.index.remove(&id) {
            self.drop_files(d);
        }
        Box::pin(async { Ok(()) })
    }

    fn usage(&self) -> Usage {
        self.index.usage()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::storage_tests::{Files, exercise_store};

    #[tokio::test]
    async fn behaves_like_a_store() {
        exercise_store(MemoryStorage::new(10_000), Files::None).await;
    }
}
