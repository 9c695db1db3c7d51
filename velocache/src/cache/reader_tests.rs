//! Readers over stored, growing, partial, stalled and failed objects (in-memory store).
use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use bytes::Bytes;
use futures::StreamExt as _;

use super::*;
use crate::cache::{
    MemoryStorage, SliceWriter,
    fill::FillJob,
    lock::{Acquired, CacheLock, Fills},
    meta::sample,
};

const S: u64 = 1000;

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn meta(len: Option<u64>) -> Arc<ObjectMeta> {
    Arc::new(sample(len, S))
}

async fn read(mut r: ObjectReader) -> Result<Vec<u8>, CacheError> {
    let mut out = Vec::new();
    while let Some(c) = r.next_chunk().await {
        out.extend_from_slice(&c?);
    }
    Ok(out)
}

fn chunks(data: &[u8], size: usize) -> Vec<Result<Bytes, std::io::Error>> {
    data.chunks(size)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect()
}

async fn store_all(
    storage: &Arc<dyn Storage>,
    fills: &Arc<dyn CacheLock>,
    id: ObjectId,
    m: &Arc<ObjectMeta>,
    data: &[u8],
) {
    storage.put_meta(id, m.clone()).await.unwrap();
    let Acquired::Writer(permit) = fills.acquire(id).await else {
        panic!()
    };
    permit.set_meta(m.clone(), 0);
    FillJob {
        storage: storage.clone(),
        id,
        meta: m.clone(),
        start: 0,
        end: None,
        body_offset: 0,
        max_object_bytes: u64::MAX,
        permit,
    }
    .run(futures::stream::iter(chunks(data, 333)))
    .await
    .unwrap();
}

#[tokio::test]
async fn reads_a_stored_object_whole_and_in_part() {
    let storage: Arc<dyn Storage> = MemoryStorage::new(1 << 20);
    let fills: Arc<dyn CacheLock> = Fills::new(Duration::from_secs(5));
    let id = ObjectId([1; 16]);
    let data = body(3500);
    let m = meta(Some(3500));
    store_all(&storage, &fills, id, &m, &data).await;
    assert!(storage.lookup(&id).await.unwrap().unwrap().complete());
    let r = ObjectReader::new(
        storage.clone(),
        fills.clone(),
        None,
        id,
        m.clone(),
        0,
        None,
        Duration::from_secs(1),
    );
    assert_eq!(read(r).await.unwrap(), data);
    let r = ObjectReader::new(
        storage.clone(),
        fills.clone(),
        None,
        id,
        m.clone(),
        999,
        Some(2001),
        Duration::from_secs(1),
    );
    assert_eq!(read(r).await.unwrap(), &data[999..2001]);
}

#[tokio::test]
async fn readers_follow_a_growing_object_of_unknown_length() {
    let storage: Arc<dyn Storage> = MemoryStorage::new(1 << 20);
    let fills: Arc<dyn CacheLock> = Fills::new(Duration::from_secs(5));
    let id = ObjectId([2; 16]);
    let data = body(4321);
    let m = meta(None);
    storage.put_meta(id, m.clone()).await.unwrap();
    let Acquired::Writer(permit) = fills.acquire(id).await else {
        panic!()
    };
    permit.set_meta(m.clone(), 0);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let job = FillJob {
        storage: storage.clone(),
        id,
        meta: m.clone(),
        start: 0,
        end: None,
        body_offset: 0,
        max_object_bytes: u64::MAX,
        permit,
    };
    let filler = tokio::spawn(job.run(tokio_stream_from(rx)));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let r = ObjectReader::new(
                storage.clone(),
                fills.clone(),
                None,
                id,
                m.clone(),
                0,
                None,
                Duration::from_secs(5),
            );
            tokio::spawn(read(r))
        })
        .collect();
    for c in data.chunks(700) {
        tx.send(Ok(Bytes::copy_from_slice(c))).await.unwrap();
        tokio::task::yield_now().await;
    }
    drop(tx);
    let outcome = filler.await.unwrap().unwrap();
    assert!(outcome.complete);
    for r in readers {
        assert_eq!(r.await.unwrap().unwrap(), data);
    }
    assert_eq!(
        storage.lookup(&id).await.unwrap().unwrap().meta.len,
        Some(4321)
    );
    // A reader arriving after the fill reads from the store.
    let r = ObjectReader::new(
        storage.clone(),
        fills.clone(),
        None,
        id,
        m,
        0,
        None,
        Duration::from_secs(1),
    );
    assert_eq!(read(r).await.unwrap(), data);
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

/// Serves missing slices from a buffer, as the origin would, counting what it was asked for.
struct Origin {
    storage: Arc<dyn Storage>,
    fills: Arc<dyn CacheLock>,
    data: Vec<u8>,
    asked: Arc<std::sync::Mutex<Vec<(u64, u64)>>>,
}

impl RangeFetcher for Origin {
    fn fetch(
        &self,
        id: ObjectId,
        meta: Arc<ObjectMeta>,
        first: u64,
        last: u64,
    ) -> futures::future::BoxFuture<'_, Option<Arc<Fill>>> {
        Box::pin(self.fetch_now(id, meta, first, last))
    }
}

impl Origin {
    async fn fetch_now(
        &self,
        id: ObjectId,
        meta: Arc<ObjectMeta>,
        first: u64,
        last: u64,
    ) -> Option<Arc<Fill>> {
        self.asked.lock().unwrap().push((first, last));
        let Acquired::Writer(permit) = self.fills.acquire(id).await else {
            return self.fills.current(&id);
        };
        let start = first * S;
        let end = (last * S).min(self.data.len() as u64);
        permit.set_meta(meta.clone(), start);
        let fill = permit.fill().clone();
        let part = self.data[start as usize..end as usize].to_vec();
        let job = FillJob {
            storage: self.storage.clone(),
            id,
            meta,
            start,
            end: Some(end),
            body_offset: start,
            max_object_bytes: u64::MAX,
            permit,
        };
        tokio::spawn(job.run(futures::stream::iter(chunks(&part, 400))));
        Some(fill)
    }
}

#[tokio::test]
async fn a_range_over_a_partly_stored_object_fetches_only_the_missing_slices() {
    let storage: Arc<dyn Storage> = MemoryStorage::new(1 << 20);
    let fills: Arc<dyn CacheLock> = Fills::new(Duration::from_secs(5));
    let id = ObjectId([3; 16]);
    let data = body(5500);
    let m = meta(Some(5500));
    storage.put_meta(id, m.clone()).await.unwrap();
    // Slices 1 and 3 are stored already.
    for idx in [1u64, 3] {
        let mut w = storage.create_slice(id, m.version, idx).await.unwrap();
        w.append(Bytes::copy_from_slice(
            &data[(idx * S) as usize..((idx + 1) * S) as usize],
        ))
        .await
        .unwrap();
        w.commit(S).await.unwrap();
    }
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let origin = Arc::new(Origin {
        storage: storage.clone(),
        fills: fills.clone(),
        data: data.clone(),
        asked: asked.clone(),
    });
    let r = ObjectReader::new(
        storage.clone(),
        fills.clone(),
        Some(origin.clone()),
        id,
        m.clone(),
        1500,
        Some(5200),
        Duration::from_secs(5),
    );
    assert_eq!(read(r).await.unwrap(), &data[1500..5200]);
    assert_eq!(*asked.lock().unwrap(), vec![(2, 3), (4, 6)]);
    // Everything from slice 1 on is stored now; slice 0 is fetched for a full read.
    let r = ObjectReader::new(
        storage.clone(),
        fills.clone(),
        Some(origin),
        id,
        m,
        0,
        None,
        Duration::from_secs(5),
    );
    assert_eq!(read(r).await.unwrap(), data);
    assert_eq!(asked.lock().unwrap().len(), 3);
    assert!(storage.lookup(&id).await.unwrap().unwrap().complete());
}

#[tokio::test]
async fn a_stalled_fill_ends_the_response_instead_of_hanging_it() {
    let storage: Arc<dyn Storage> = MemoryStorage::new(1 << 20);
    let fills: Arc<dyn CacheLock> = Fills::new(Duration::from_secs(60));
    let id = ObjectId([4; 16]);
    let m = meta(Some(3000));
    storage.put_meta(id, m.clone()).await.unwrap();
    let Acquired::Writer(permit) = fills.acquire(id).await else {
        panic!()
    };
    permit.set_meta(m.clone(), 0);
    let r = ObjectReader::new(
        storage,
        fills,
        None,
        id,
        m,
        0,
        None,
        Duration::from_millis(50),
    );
    let err = read(r).await.unwrap_err();
    assert!(matches!(err, CacheError::Stalled { .. }), "{err}");
    drop(permit);
}

#[tokio::test]
async fn a_failed_fill_fails_its_readers_and_leaves_no_slice() {
    let storage: Arc<dyn Storage> = MemoryStorage::new(1 << 20);
    let fills: Arc<dyn CacheLock> = Fills::new(Duration::from_secs(60));
    let id = ObjectId([5; 16]);
    let m = meta(Some(3000));
    storage.put_meta(id, m.clone()).await.unwrap();
    let Acquired::Writer(permit) = fills.acquire(id).await else {
        panic!()
    };
    permit.set_meta(m.clone(), 0);
    let reader = ObjectReader::new(
        storage.clone(),
        fills.clone(),
        None,
        id,
        m.clone(),
        0,
        None,
        Duration::from_secs(5),
    );
    let job = FillJob {
        storage: storage.clone(),
        id,
        meta: m,
        start: 0,
        end: None,
        body_offset: 0,
        max_object_bytes: u64::MAX,
        permit,
    };
    let stream = futures::stream::iter(vec![
        Ok(Bytes::from(vec![1u8; 1500])),
        Err(std::io::Error::other("origin reset")),
    ]);
    let count = Arc::new(AtomicUsize::new(0));
    let c2 = count.clone();
    let read_task = tokio::spawn(async move {
        let mut s = Box::pin(reader.into_stream());
        let mut err = None;
        while let Some(c) = s.next().await {
            match c {
                Ok(b) => {
                    c2.fetch_add(b.len(), Ordering::Relaxed);
                }
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        err
    });
    assert!(job.run(stream).await.is_err());
    assert!(
        read_task.await.unwrap().is_some(),
        "the reader must see the failure"
    );
    // Slice 0 was full and committed; slice 1 was cut and is not servable.
    assert!(storage.has_slice(&id, 7, 0));
    assert!(!storage.has_slice(&id, 7, 1));
    assert!(count.load(Ordering::Relaxed) <= 1500);
}

/// A store whose disk fills up after `budget` bytes: appends past it fail with ENOSPC.
struct FullDisk {
    inner: Arc<dyn Storage>,
    budget: Arc<std::sync::atomic::AtomicU64>,
}

struct FullWriter {
    inner: Box<dyn SliceWriter>,
    budget: Arc<std::sync::atomic::AtomicU64>,
}

impl SliceWriter for FullWriter {
    fn append(&mut self, data: Bytes) -> crate::cache::IoFuture<'_, ()> {
        let n = data.len() as u64;
        let left = self.budget.load(Ordering::Relaxed);
        if n > left {
            return Box::pin(async {
                Err(CacheError::Io {
                    op: "write",
                    path: "tmp/slice".into(),
                    source: std::io::Error::from_raw_os_error(libc::ENOSPC),
                })
            });
        }
        self.budget.store(left - n, Ordering::Relaxed);
        self.inner.append(data)
    }
    fn written(&self) -> u64 {
        self.inner.written()
    }
    fn commit(self: Box<Self>, expected: u64) -> crate::cache::IoFuture<'static, ()> {
        self.inner.commit(expected)
    }
}

impl Storage for FullDisk {
    fn lookup(&self, id: &ObjectId) -> crate::cache::storage::Lookup<'_> {
        self.inner.lookup(id)
    }
    fn has_slice(&self, id: &ObjectId, version: u64, idx: u64) -> bool {
        self.inner.has_slice(id, version, idx)
    }
    fn put_meta(&self, id: ObjectId, meta: Arc<ObjectMeta>) -> crate::cache::IoFuture<'static, ()> {
        self.inner.put_meta(id, meta)
    }
    fn open_slice(
        &self,
        id: ObjectId,
        version: u64,
        idx: u64,
    ) -> crate::cache::IoFuture<'static, Option<Arc<dyn SliceReader>>> {
        self.inner.open_slice(id, version, idx)
    }
    fn create_slice(
        &self,
        id: ObjectId,
        version: u64,
        idx: u64,
    ) -> crate::cache::IoFuture<'static, Box<dyn crate::cache::SliceWriter>> {
        let (fut, budget) = (
            self.inner.create_slice(id, version, idx),
            self.budget.clone(),
        );
        Box::pin(async move {
            let inner = fut.await?;
            Ok(Box::new(FullWriter { inner, budget }) as Box<dyn SliceWriter>)
        })
    }
    fn remove(&self, id: ObjectId) -> crate::cache::IoFuture<'static, ()> {
        self.inner.remove(id)
    }
    fn usage(&self) -> crate::cache::Usage {
        self.inner.usage()
    }
    fn list(&self) -> Vec<(ObjectId, crate::cache::Hit)> {
        self.inner.list()
    }
    fn record_hit(&self, id: &ObjectId, version: u64) {
        self.inner.record_hit(id, version)
    }
}

/// Feed `data` to a fill in 700-byte chunks, each only once the reader has taken everything
/// before it (a reader that keeps up); return what the reader got and the fill's result.
async fn fill_with_a_reader_keeping_up(
    storage: Arc<dyn Storage>,
    id: ObjectId,
    m: Arc<ObjectMeta>,
    data: &[u8],
    max_object_bytes: u64,
) -> (
    Result<Vec<u8>, CacheError>,
    Result<crate::cache::fill::FillOutcome, CacheError>,
) {
    let fills = Fills::new(Duration::from_secs(5));
    storage.put_meta(id, m.clone()).await.unwrap();
    let Acquired::Writer(permit) = fills.acquire(id).await else {
        panic!()
    };
    permit.set_meta(m.clone(), 0);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let job = FillJob {
        storage: storage.clone(),
        id,
        meta: m.clone(),
        start: 0,
        end: None,
        body_offset: 0,
        max_object_bytes,
        permit,
    };
    let filler = tokio::spawn(job.run(tokio_stream_from(rx)));
    let got = Arc::new(AtomicUsize::new(0));
    let mut r = ObjectReader::new(storage, fills, None, id, m, 0, None, Duration::from_secs(5));
    let seen = got.clone();
    let reader = tokio::spawn(async move {
        let mut out = Vec::new();
        while let Some(c) = r.next_chunk().await {
            out.extend_from_slice(&c?);
            seen.store(out.len(), Ordering::Release);
        }
        Ok(out)
    });
    let mut sent = 0;
    for c in data.chunks(700) {
        tx.send(Ok(Bytes::copy_from_slice(c))).await.unwrap();
        // Until the fill stops storing, the reader takes each chunk before the next is sent.
        for _ in 0..200 {
            if got.load(Ordering::Acquire) >= sent || filler.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        sent += c.len();
    }
    drop(tx);
    (reader.await.unwrap(), filler.await.unwrap())
}

#[tokio::test]
async fn a_full_disk_stops_storing_but_the_reader_gets_every_byte() {
    let full: Arc<dyn Storage> = Arc::new(FullDisk {
        inner: MemoryStorage::new(1 << 20),
        budget: Arc::new(std::sync::atomic::AtomicU64::new(2500)),
    });
    let id = ObjectId([40; 16]);
    let data = body(6000);
    let (got, filled) =
        fill_with_a_reader_keeping_up(full.clone(), id, meta(Some(6000)), &data, u64::MAX).await;
    assert!(matches!(filled, Err(CacheError::Io { .. })), "{filled:?}");
    assert_eq!(got.unwrap(), data, "the client was cut short");
    assert!(
        full.lookup(&id).await.unwrap().is_none(),
        "a partial object was kept"
    );
}

#[tokio::test]
async fn a_body_of_unknown_length_past_the_limit_is_relayed_whole_and_not_kept() {
    let storage: Arc<dyn Storage> = MemoryStorage::new(1 << 20);
    let id = ObjectId([41; 16]);
    let data = body(5000);
    let (got, filled) =
        fill_with_a_reader_keeping_up(storage.clone(), id, meta(None), &data, 2500).await;
    assert!(
        matches!(filled, Err(CacheError::TooLarge { .. })),
        "{filled:?}"
    );
    assert_eq!(got.unwrap(), data, "the client was cut short");
    assert!(storage.lookup(&id).await.unwrap().is_none());
}

#[tokio::test]
async fn a_reader_far_behind_a_fill_that_ran_out_of_space_catches_up_then_takes_the_body() {
    let full: Arc<dyn Storage> = Arc::new(FullDisk {
        inner: MemoryStorage::new(1 << 20),
        budget: Arc::new(std::sync::atomic::AtomicU64::new(2500)),
    });
    let fills = Fills::new(Duration::from_secs(60));
    let id = ObjectId([42; 16]);
    let data = body(7000);
    let m = meta(Some(7000));
    full.put_meta(id, m.clone()).await.unwrap();
    let Acquired::Writer(permit) = fills.acquire(id).await else {
        panic!()
    };
    permit.set_meta(m.clone(), 0);
    let job = FillJob {
        storage: full.clone(),
        id,
        meta: m.clone(),
        start: 0,
        end: None,
        body_offset: 0,
        max_object_bytes: u64::MAX,
        permit,
    };
    // The whole body is there at once: the fill runs into the full disk before any reader.
    let filler = tokio::spawn(job.run(futures::stream::iter(chunks(&data, 700))));
    while fills.current(&id).is_some_and(|f| f.state().written < 2100) {
        tokio::task::yield_now().await;
    }
    let r = ObjectReader::new(
        full.clone(),
        fills.clone(),
        None,
        id,
        m,
        0,
        None,
        Duration::from_secs(5),
    );
    assert_eq!(
        read(r).await.unwrap(),
        data,
        "the late reader was cut short"
    );
    assert!(matches!(filler.await.unwrap(), Err(CacheError::Io { .. })));
    assert!(
        full.lookup(&id).await.unwrap().is_none(),
        "a partial object was kept"
    );
}
