//! One conformance test run against every [`Storage`] backend.
use std::{os::unix::fs::FileExt as _, sync::Arc};

use bytes::Bytes;

use super::{FileRegion, Hit, ObjectId, Storage, meta::sample};

async fn read_all(store: &dyn Storage, id: ObjectId, version: u64, idx: u64) -> Option<Vec<u8>> {
    let r = store.open_slice(id, version, idx).await.unwrap()?;
    let mut out = Vec::new();
    loop {
        let b = r.read(out.len() as u64, 300).await.unwrap();
        if b.is_empty() {
            return Some(out);
        }
        out.extend_from_slice(&b);
    }
}

async fn lookup(store: &dyn Storage, id: ObjectId) -> Option<Hit> {
    store.lookup(&id).await.unwrap()
}

/// The bytes of a file region, read with `pread` from a duplicate of its descriptor — the way
/// `sendfile` would see them.
fn region_bytes(region: &FileRegion) -> Vec<u8> {
    let file = std::fs::File::from(region.fd.try_clone().unwrap());
    let mut buf = vec![0u8; region.len as usize];
    file.read_exact_at(&mut buf, region.offset).unwrap();
    buf
}

/// Whether a backend hands out committed slices as file regions (the disk store must; the
/// memory store cannot).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Files {
    /// Committed slices come with a [`FileRegion`].
    HandedOut,
    /// No files: `SliceReader::file` is always `None`.
    None,
}

/// `store` must have a 10 000-byte limit.
pub async fn exercise_store(store: Arc<dyn Storage>, files: Files) {
    let id = ObjectId([9; 16]);
    let mut m = sample(Some(2500), 1000);
    m.version = 1;
    store.put_meta(id, Arc::new(m.clone())).await.unwrap();
    let hit = lookup(&*store, id).await.unwrap();
    assert_eq!(hit.meta.version, 1);
    assert_eq!(hit.present.count(), 0);
    assert!(!hit.complete());

    // A short slice is never committed; while written it is readable by those who ask, but not
    // as a file region (its length is not final).
    let mut w = store.create_slice(id, 1, 0).await.unwrap();
    w.append(Bytes::from(vec![1u8; 600])).await.unwrap();
    assert_eq!(w.written(), 600);
    assert_eq!(read_all(&*store, id, 1, 0).await.unwrap(), vec![1u8; 600]);
    let partial = store.open_slice(id, 1, 0).await.unwrap().unwrap();
    assert!(
        partial.file().is_none(),
        "a slice being written is no region"
    );
    assert!(store.slice_file(id, 1, 0).await.unwrap().is_none());
    assert!(!store.has_slice(&id, 1, 0));
    assert!(w.commit(1000).await.is_err());
    assert!(!store.has_slice(&id, 1, 0));
    assert!(read_all(&*store, id, 1, 0).await.is_none());

    // A dropped writer leaves nothing.
    let mut w = store.create_slice(id, 1, 0).await.unwrap();
    w.append(Bytes::from(vec![2u8; 1000])).await.unwrap();
    drop(w);
    assert!(read_all(&*store, id, 1, 0).await.is_none());

    // Complete slices commit.
    for (idx, len) in [(0u64, 1000usize), (1, 1000), (2, 500)] {
        let mut w = store.create_slice(id, 1, idx).await.unwrap();
        w.append(Bytes::from(vec![idx as u8; len / 2]))
            .await
            .unwrap();
        w.append(Bytes::from(vec![idx as u8; len - len / 2]))
            .await
            .unwrap();
        w.commit(len as u64).await.unwrap();
    }
    assert!(store.has_slice(&id, 1, 2));
    assert!(lookup(&*store, id).await.unwrap().complete());
    assert_eq!(read_all(&*store, id, 1, 2).await.unwrap(), vec![2u8; 500]);
    assert_eq!(store.usage().bytes, 2500);

    // Committed slices as file regions: exactly the slice's bytes, the short last one too.
    for (idx, len) in [(0u64, 1000usize), (2, 500)] {
        let region = store.slice_file(id, 1, idx).await.unwrap();
        match files {
            Files::HandedOut => {
                let region = region.unwrap_or_else(|| panic!("slice {idx} has no file region"));
                assert_eq!(region.len, len as u64);
                assert_eq!(region_bytes(&region), vec![idx as u8; len]);
            }
            Files::None => assert!(region.is_none(), "a store without files handed one out"),
        }
    }
    assert!(
        store.slice_file(id, 1, 3).await.unwrap().is_none(),
        "a slice that does not exist has no region"
    );
    // A region taken before its object is replaced still reads the bytes it was handed for.
    let held = store.slice_file(id, 1, 1).await.unwrap();

    // Updating the same version keeps the slices; a new version drops them.
    m.lifetime = 99;
    store.put_meta(id, Arc::new(m.clone())).await.unwrap();
    assert_eq!(lookup(&*store, id).await.unwrap().meta.lifetime, 99);
    assert!(store.has_slice(&id, 1, 0));
    m.version = 2;
    store.put_meta(id, Arc::new(m.clone())).await.unwrap();
    assert!(!store.has_slice(&id, 1, 0));
    assert!(!store.has_slice(&id, 2, 0));
    assert!(store.slice_file(id, 1, 0).await.unwrap().is_none());
    assert_eq!(store.usage().bytes, 0);
    if let Some(region) = &held {
        assert_eq!(region_bytes(region), vec![1u8; 1000]);
    }

    // Eviction: fill past 10 000 bytes; the least recently used objects go.
    let ids: Vec<ObjectId> = (0..6u8).map(|i| ObjectId([i; 16])).collect();
    for &oid in &ids {
        let mut m = sample(Some(3000), 1000);
        m.version = 5;
        store.put_meta(oid, Arc::new(m)).await.unwrap();
        for idx in 0..3 {
            let mut w = store.create_slice(oid, 5, idx).await.unwrap();
            w.append(Bytes::from(vec![7u8; 1000])).await.unwrap();
            w.commit(1000).await.unwrap();
        }
        // Keep the first object in use.
        lookup(&*store, ids[0]).await;
    }
    let usage = store.usage();
    assert!(usage.bytes <= 10_000, "{usage:?}");
    assert!(usage.evictions >= 2, "{usage:?}");
    assert!(
        lookup(&*store, ids[0]).await.is_some(),
        "recently used object evicted"
    );
    assert!(lookup(&*store, ids[1]).await.is_none(), "LRU object kept");

    store.remove(ids[0]).await.unwrap();
    assert!(lookup(&*store, ids[0]).await.is_none());
}
