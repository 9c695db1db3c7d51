//! The disk store: objects as files under `cache_dir`, every file operation through io_uring.
//!
//! ```text
//! cache_dir/
//!   tmp/                                  slices and metadata being written (wiped at start)
//!   objects/<id[0..2]>/<id>/meta          the object's metadata (JSON), replaced by rename
//!   objects/<id[0..2]>/<id>/<ver>.<n>     slice n of version ver (hex), complete and checked
//! ```
//!
//! A slice is written to `tmp/`, checked for its exact length, made durable (`fdatasync`, when
//! `fsync` is on) and only then renamed into the object's directory: a crash at any point
//! leaves either nothing or a complete slice. At start the index is rebuilt from the
//! directories (the files are the index's journal): metadata that does not parse, slices of
//! another version or of the wrong size, unverified content-addressed objects and objects whose
//! length was never learnt are deleted. Deleted slices are unlinked after a short delay so that
//! responses already reading them can finish.
//!
//! Data enters as metadata and slice writes from fills, and leaves as bytes read through the
//! ring or — for a committed slice whose length is final — as a [`super::FileRegion`] on the
//! slice's own file (offset 0), for a response to send with `sendfile`/`splice`. Lookups answer
//! from the in-RAM index without waiting. Callers never see the ring.
mod uring;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use parking_lot::Mutex;
use tracing::{debug, info, warn};

pub use uring::Uring;
use uring::cpath;

use super::{
    CacheError, FileRegion, Hit, IoFuture, Lookup, ObjectId, ObjectMeta, SliceReader, SliceWriter,
    Step, Storage, Usage,
    index::{Dropped, Index},
};

type SliceKey = (ObjectId, u64, u64);

/// How long deleted slices stay readable by responses already streaming them.
const PURGE_DELAY: Duration = Duration::from_secs(10);

/// Objects on disk.
pub struct DiskStorage {
    root: PathBuf,
    ring: Uring,
    index: Index,
    fsync: bool,
    partial: Mutex<HashMap<SliceKey, Arc<std::os::fd::OwnedFd>>>,
    this: Weak<DiskStorage>,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CacheError + 'a {
    move |source| CacheError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl DiskStorage {
    /// Open (or create) the store in `root`, rebuilding the index from what is there.
    pub fn open(
        root: &Path,
        max_bytes: u64,
        ring_entries: u32,
        fsync: bool,
    ) -> Result<Arc<DiskStorage>, CacheError> {
        let tmp = root.join("tmp");
        let objects = root.join("objects");
        std::fs::create_dir_all(&objects).map_err(io_err("create", &objects))?;
        // Whatever was being written when the last run ended is not servable.
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io_err("clear", &tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io_err("create", &tmp))?;
        let ring = Uring::start(ring_entries).map_err(io_err("io_uring_setup", root))?;
        let index = Index::new(max_bytes);
        let (objects_n, removed) = restore(&objects, &index);
        let usage = index.usage();
        info!(
            cache_dir = %root.display(),
            objects = objects_n,
            bytes = usage.bytes,
            removed_damaged = removed,
            "disk cache index rebuilt"
        );
        Ok(Arc::new_cyclic(|this| DiskStorage {
            root: root.to_path_buf(),
            ring,
            index,
            fsync,
            partial: Mutex::new(HashMap::new()),
            this: this.clone(),
        }))
    }

    fn object_dir(&self, id: &ObjectId) -> PathBuf {
        let hex = id.hex();
        self.root.join("objects").join(&hex[..2]).join(hex)
    }

    fn slice_path(&self, id: &ObjectId, version: u64, idx: u64) -> PathBuf {
        self.object_dir(id).join(format!("{version:016x}.{idx}"))
    }

    fn tmp_path(&self, what: &str) -> PathBuf {
        self.root
            .join("tmp")
            .join(format!("{what}.{:016x}", rand::random::<u64>()))
    }

    /// Delete what the index dropped: metadata at once (a new version may take its place),
    /// slices after [`PURGE_DELAY`].
    fn drop_files(&self, d: Dropped) {
        let ring = self.ring.clone();
        let dir = self.object_dir(&d.id);
        let slices: Vec<PathBuf> = d
            .slices
            .iter()
            .map(|&i| self.slice_path(&d.id, d.version, i))
            .collect();
        if d.whole
            && let Ok(p) = cpath(&dir.join("meta"))
        {
            ring.send(uring::Op::Unlink {
                path: p,
                dir: false,
                reply: tokio::sync::oneshot::channel().0,
            });
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        handle.spawn(async move {
            tokio::time::sleep(PURGE_DELAY).await;
            for p in slices {
                if let Ok(c) = cpath(&p) {
                    let _ = ring.unlink(c, false).await;
                }
            }
            if d.whole
                && let Ok(c) = cpath(&dir)
            {
                // Fails (harmlessly) when a new version lives there now.
                let _ = ring.unlink(c, true).await;
            }
        });
    }

    async fn ensure_dir(&self, id: &ObjectId) -> Result<PathBuf, CacheError> {
        let dir = self.object_dir(id);
        let mut chain = vec![dir.clone()];
        if let Some(parent) = dir.parent() {
            chain.insert(0, parent.to_path_buf());
        }
        if let Err(CacheError::Io { source, .. }) = self.mkdirs(&chain).await
            && source.kind() == std::io::ErrorKind::NotFound
        {
            // The cache directory was removed under us: recreate it.
            warn!(cache_dir = %self.root.display(), "cache directory vanished; recreating it");
            let mut all: Vec<PathBuf> = self.root.ancestors().map(Path::to_path_buf).collect();
            all.reverse();
            all.extend([self.root.join("tmp"), self.root.join("objects")]);
            all.extend(chain);
            self.mkdirs(&all).await?;
        }
        Ok(dir)
    }

    async fn mkdirs(&self, dirs: &[PathBuf]) -> Result<(), CacheError> {
        for d in dirs {
            let c = cpath(d).map_err(io_err("mkdir", d))?;
            self.ring.mkdir(c).await.map_err(io_err("mkdir", d))?;
        }
        Ok(())
    }

    /// Create a temporary file, recreating the directories if they vanished.
    async fn create_tmp(
        &self,
        id: &ObjectId,
        tmp: &Path,
    ) -> Result<Arc<std::os::fd::OwnedFd>, CacheError> {
        let open = || async {
            self.ring
                .open(
                    cpath(tmp).map_err(io_err("create", tmp))?,
                    libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
                    0o644,
                )
                .await
                .map_err(io_err("create", tmp))
        };
        match open().await {
            Err(CacheError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                self.ensure_dir(id).await?;
                open().await
            }
            other => other,
        }
    }

    /// Rename `from` to `to` in the object's directory. The directory can vanish between
    /// [`Self::ensure_dir`] and the rename: the delayed purge of an evicted or replaced version
    /// removes it once its last slice is gone, and a new fill of the same key may be writing
    /// there at that moment. It is then made again and the rename retried.
    async fn rename_into(&self, id: &ObjectId, from: &Path, to: &Path) -> Result<(), CacheError> {
        let (f, t) = (
            cpath(from).map_err(io_err("rename", from))?,
            cpath(to).map_err(io_err("rename", to))?,
        );
        let mut tries = 0;
        loop {
            match self.ring.rename(f.clone(), t.clone()).await {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 3 => {
                    tries += 1;
                    debug!(path = %to.display(), "object directory removed meanwhile; making it again");
                    self.ensure_dir(id).await?;
                }
                other => return other.map_err(io_err("rename", to)),
            }
        }
    }

    async fn write_meta(&self, id: ObjectId, meta: &ObjectMeta) -> Result<(), CacheError> {
        let dir = self.ensure_dir(&id).await?;
        let tmp = self.tmp_path(&format!("meta.{}", id.hex()));
        let fd = self.create_tmp(&id, &tmp).await?;
        let result = async {
            self.ring
                .write(fd.clone(), 0, Bytes::from(meta.to_json()))
                .await
                .map_err(io_err("write", &tmp))?;
            // No fdatasync here: it would delay every miss's first byte, and consistency does
            // not need it — a metadata file torn by a power cut does not parse, and the object
            // is then dropped at start like any damaged one.
            self.rename_into(&id, &tmp, &dir.join("meta")).await
        }
        .await;
        if result.is_err()
            && let Ok(c) = cpath(&tmp)
        {
            let _ = self.ring.unlink(c, false).await;
        }
        result
    }
}

/// Rebuild `index` from `objects/`; returns (objects kept, entries removed).
fn restore(objects: &Path, index: &Index) -> (u64, u64) {
    let (mut kept, mut removed) = (0, 0);
    let Ok(prefixes) = std::fs::read_dir(objects) else {
        return (0, 0);
    };
    for prefix in prefixes.flatten() {
        let Ok(dirs) = std::fs::read_dir(prefix.path()) else {
            continue;
        };
        for dir in dirs.flatten() {
            let path = dir.path();
            match restore_object(&path, index) {
                Some(()) => kept += 1,
                None => {
                    removed += 1;
                    debug!(dir = %path.display(), "removing a damaged or incomplete object");
                    let _ = std::fs::remove_dir_all(&path);
                }
            }
        }
    }
    (kept, removed)
}

fn restore_object(dir: &Path, index: &Index) -> Option<()> {
    let id = ObjectId::from_hex(dir.file_name()?.to_str()?)?;
    let meta = ObjectMeta::from_json(&std::fs::read(dir.join("meta")).ok()?)?;
    // Never learnt its length (the download was cut) or never verified: not servable.
    meta.len?;
    if meta.sha256.is_some() && !meta.verified {
        return None;
    }
    let version = meta.version;
    let meta = Arc::new(meta);
    index.set_meta(id, meta.clone());
    for f in std::fs::read_dir(dir).ok()?.flatten() {
        let name = f.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == "meta" {
            continue;
        }
        let parsed = name
            .split_once('.')
            .and_then(|(v, i)| Some((u64::from_str_radix(v, 16).ok()?, i.parse::<u64>().ok()?)));
        let size = f.metadata().ok().map(|m| m.len());
        match parsed {
            Some((v, idx)) if v == version && size == meta.slice_len(idx) => {
                index.add_slice(&id, version, idx, size.unwrap_or(0));
            }
            _ => {
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
    Some(())
}

struct DiskReader {
    ring: Uring,
    fd: Arc<std::os::fd::OwnedFd>,
    path: PathBuf,
    /// The slice's final length, when it is committed and the object's length is known: then
    /// the whole file is the slice and can be handed out as a region.
    committed_len: Option<u64>,
}

impl SliceReader for DiskReader {
    fn read(&self, offset: u64, len: usize) -> IoFuture<'static, Bytes> {
        let (ring, fd, path) = (self.ring.clone(), self.fd.clone(), self.path.clone());
        Box::pin(async move {
            ring.read(fd, offset, len)
                .await
                .map_err(|source| CacheError::Io {
                    op: "read",
                    path,
                    source,
                })
        })
    }

    fn file(&self) -> Option<FileRegion> {
        self.committed_len.map(|len| FileRegion {
            fd: self.fd.clone(),
            offset: 0,
            len,
        })
    }
}

struct DiskWriter {
    store: Arc<DiskStorage>,
    key: SliceKey,
    fd: Arc<std::os::fd::OwnedFd>,
    tmp: PathBuf,
    written: Arc<AtomicU64>,
    done: bool,
}

impl SliceWriter for DiskWriter {
    fn append(&mut self, data: Bytes) -> IoFuture<'_, ()> {
        Box::pin(async move {
            let off = self.written.load(Ordering::Acquire);
            let n = data.len() as u64;
            self.store
                .ring
                .write(self.fd.clone(), off, data)
                .await
                .map_err(io_err("write", &self.tmp))?;
            self.written.store(off + n, Ordering::Release);
            Ok(())
        })
    }

    fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    fn commit(mut self: Box<Self>, expected: u64) -> IoFuture<'static, ()> {
        Box::pin(async move {
            let got = self.written();
            if got != expected {
                return Err(CacheError::Length {
                    what: "slice",
                    expected,
                    got,
                });
            }
            let store = self.store.clone();
            let (id, version, idx) = self.key;
            if store.fsync {
                store
                    .ring
                    .sync(self.fd.clone())
                    .await
                    .map_err(io_err("fdatasync", &self.tmp))?;
            }
            let dir = store.ensure_dir(&id).await?;
            let to = dir.join(format!("{version:016x}.{idx}"));
            store.rename_into(&id, &self.tmp, &to).await?;
            self.done = true;
            if !store.index.add_slice(&id, version, idx, got) {
                // The object was replaced or removed meanwhile.
                if let Ok(c) = cpath(&to) {
                    let _ = store.ring.unlink(c, false).await;
                }
            }
            store.partial.lock().remove(&self.key);
            store.index.unpin(&id);
            for d in store.index.evict() {
                debug!(object = %d.id, "evicted");
                store.drop_files(d);
            }
            Ok(())
        })
    }
}

impl Drop for DiskWriter {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.store.partial.lock().remove(&self.key);
        self.store.index.unpin(&self.key.0);
        if let Ok(p) = cpath(&self.tmp) {
            self.store.ring.send(uring::Op::Unlink {
                path: p,
                dir: false,
                reply: tokio::sync::oneshot::channel().0,
            });
        }
    }
}

impl Storage for DiskStorage {
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
        let this = self.this.upgrade();
        Box::pin(async move {
            let this = this.ok_or(CacheError::Closed)?;
            this.write_meta(id, &meta).await?;
            if let Some(d) = this.index.set_meta(id, meta) {
                this.drop_files(d);
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
        let ring = self.ring.clone();
        let committed = self.index.has_slice(&id, version, idx);
        let committed_len = self.index.committed_len(&id, version, idx);
        let path = self.slice_path(&id, version, idx);
        let partial = self.partial.lock().get(&(id, version, idx)).cloned();
        let this = self.this.upgrade();
        Box::pin(async move {
            let being_written = |ring, path, fd| {
                Arc::new(DiskReader {
                    ring,
                    fd,
                    path,
                    committed_len: None,
                }) as Arc<dyn SliceReader>
            };
            if !committed {
                return Ok(partial.map(|fd| being_written(ring, path, fd)));
            }
            match ring
                .open(
                    cpath(&path).map_err(io_err("open", &path))?,
                    libc::O_RDONLY,
                    0,
                )
                .await
            {
                Ok(fd) => Ok(Some(Arc::new(DiskReader {
                    ring,
                    fd,
                    path,
                    committed_len,
                }) as Arc<dyn SliceReader>)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    warn!(path = %path.display(), "indexed slice missing on disk; forgetting it");
                    if let Some(this) = &this {
                        let len = this
                            .index
                            .lookup(&id)
                            .and_then(|s| s.meta.slice_len(idx))
                            .unwrap_or(0);
                        this.index.drop_slice(&id, version, idx, len);
                    }
                    Ok(partial.map(|fd| being_written(ring, path, fd)))
                }
                Err(source) => Err(CacheError::Io {
                    op: "open",
                    path,
                    source,
                }),
            }
        })
    }

    fn create_slice(
        &self,
        id: ObjectId,
        version: u64,
        idx: u64,
    ) -> IoFuture<'static, Box<dyn SliceWriter>> {
        let this = self.this.upgrade();
        let tmp = self.tmp_path(&format!("{}.{version:016x}.{idx}", id.hex()));
        Box::pin(async move {
            let store = this.ok_or(CacheError::Closed)?;
            let fd = store.create_tmp(&id, &tmp).await?;
            let key = (id, version, idx);
            store.partial.lock().insert(key, fd.clone());
            store.index.pin(&id);
            Ok(Box::new(DiskWriter {
                store,
                key,
                fd,
                tmp,
                written: Arc::new(AtomicU64::new(0)),
                done: false,
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
    use crate::cache::{
        meta::sample,
        storage_tests::{Files, exercise_store},
    };

    #[tokio::test]
    async fn behaves_like_a_store() {
        let dir = tempfile::tempdir().unwrap();
        exercise_store(
            DiskStorage::open(dir.path(), 10_000, 64, true).unwrap(),
            Files::HandedOut,
        )
        .await;
    }

    #[tokio::test]
    async fn a_rename_into_an_object_directory_removed_meanwhile_makes_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStorage::open(dir.path(), 1 << 20, 64, false).unwrap();
        let id = ObjectId([7; 16]);
        let obj = store.ensure_dir(&id).await.unwrap();
        // The delayed purge of an older version removes the (empty) directory.
        std::fs::remove_dir(&obj).unwrap();
        let tmp = dir.path().join("tmp").join("meta.x");
        std::fs::write(&tmp, b"{}").unwrap();
        store
            .rename_into(&id, &tmp, &obj.join("meta"))
            .await
            .unwrap();
        assert_eq!(std::fs::read(obj.join("meta")).unwrap(), b"{}");
    }

    #[tokio::test]
    async fn the_index_survives_a_restart_and_damage_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (ObjectId([1; 16]), ObjectId([2; 16]), ObjectId([3; 16]));
        {
            let store = DiskStorage::open(dir.path(), 1 << 20, 64, false).unwrap();
            let mut m = sample(Some(1500), 1000);
            m.version = 3;
            for id in [a, b] {
                store.put_meta(id, Arc::new(m.clone())).await.unwrap();
                let mut w = store.create_slice(id, 3, 0).await.unwrap();
                w.append(Bytes::from(vec![5u8; 1000])).await.unwrap();
                w.commit(1000).await.unwrap();
            }
            // b's second slice is cut mid-write (left in tmp/), as by a crash.
            let mut w = store.create_slice(b, 3, 1).await.unwrap();
            w.append(Bytes::from(vec![5u8; 100])).await.unwrap();
            std::mem::forget(w);
            // c never learnt its length (a chunked download that was cut).
            let mut m = sample(None, 1000);
            m.version = 4;
            store.put_meta(c, Arc::new(m)).await.unwrap();
            let mut w = store.create_slice(c, 4, 0).await.unwrap();
            w.append(Bytes::from(vec![1u8; 1000])).await.unwrap();
            w.commit(1000).await.unwrap();
        }
        // A slice file of the wrong size (torn by hand) and a damaged metadata file.
        let adir = dir.path().join("objects").join(&a.hex()[..2]).join(a.hex());
        std::fs::write(adir.join(format!("{:016x}.1", 3)), [0u8; 10]).unwrap();
        let d = ObjectId([4; 16]);
        let ddir = dir.path().join("objects").join(&d.hex()[..2]).join(d.hex());
        std::fs::create_dir_all(&ddir).unwrap();
        std::fs::write(ddir.join("meta"), b"{not json").unwrap();

        let store = DiskStorage::open(dir.path(), 1 << 20, 64, false).unwrap();
        let snap = store.lookup(&a).await.unwrap().unwrap();
        assert_eq!(snap.present.iter().collect::<Vec<_>>(), vec![0]);
        assert!(!adir.join(format!("{:016x}.1", 3)).exists());
        assert_eq!(
            store
                .lookup(&b)
                .await
                .unwrap()
                .unwrap()
                .present
                .iter()
                .collect::<Vec<_>>(),
            vec![0]
        );
        assert!(
            store.lookup(&c).await.unwrap().is_none(),
            "length-less object kept"
        );
        assert!(store.lookup(&d).await.unwrap().is_none());
        assert!(!ddir.exists());
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        assert_eq!(store.usage().bytes, 2000);
        let r = store.open_slice(a, 3, 0).await.unwrap().unwrap();
        assert_eq!(r.read(0, 2000).await.unwrap(), vec![5u8; 1000]);
    }
}
