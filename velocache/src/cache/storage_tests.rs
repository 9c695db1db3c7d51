//! One conformance test run against every [`Storage`] backend.
use std::sync::Arc;

use bytes::Bytes;

use super::{ObjectId, Storage, meta::sample};

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

/// `store` must have a 10 000-byte limit.
pub async fn exercise_store(store: Arc<dyn Storage>) {
    let id = ObjectId([9; 16]);
    let mut m = sample(Some(2500), 1000);
    m.version = 1;
    store.put_meta(id, Arc::new(m.clone())).await.unwrap();
    let snap = store.lookup(&id).unwrap();
    assert_eq!(snap.meta.version, 1);
    assert_eq!(snap.present.count(), 0);
    assert!(!snap.complete());

    // A short slice is never committed; while written it is readable by those who ask.
    let mut w = store.create_slice(id, 1, 0).await.unwrap();
    w.append(Bytes::from(vec![1u8; 600])).await.unwrap();
    assert_eq!(w.written(), 600);
    assert_eq!(read_all(&*store, id, 1, 0).await.unwrap(), vec![1u8; 600]);
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
    assert!(store.lookup(&id).unwrap().complete());
    assert_eq!(read_all(&*store, id, 1, 2).await.unwrap(), vec![2u8; 500]);
    assert_eq!(store.usage().bytes, 2500);

    // Updating the same version keeps the slices; a new version drops them.
    m.lifetime = 99;
    store.put_meta(id, Arc::new(m.clone())).await.unwrap();
    assert_eq!(store.lookup(&id).unwrap().meta.lifetime, 99);
    assert!(store.has_slice(&id, 1, 0));
    m.version = 2;
    store.put_meta(id, Arc::new(m.clone())).await.unwrap();
    assert!(!store.has_slice(&id, 1, 0));
    assert!(!store.has_slice(&id, 2, 0));
    assert_eq!(store.usage().bytes, 0);

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
        store.lookup(&ids[0]);
    }
    let usage = store.usage();
    assert!(usage.bytes <= 10_000, "{usage:?}");
    assert!(usage.evictions >= 2, "{usage:?}");
    assert!(
        store.lookup(&ids[0]).is_some(),
        "recently used object evicted"
    );
    assert!(store.lookup(&ids[1]).is_none(), "LRU object kept");

    store.remove(ids[0]).await.unwrap();
    assert!(store.lookup(&ids[0]).is_none());
}
