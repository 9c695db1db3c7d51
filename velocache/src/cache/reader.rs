//! Reading an object's bytes for a response: committed slices from the store, the rest from
//! the fill writing them (the growing file), and fills started on demand for what is missing.
//!
//! An [`ObjectReader`] walks `[pos, end)` of one version of an object in chunks. For each
//! position it takes, in order: a committed slice; the latest chunk a fill published (when the
//! reader keeps up, no disk read at all); the part a fill has written so far (its temporary
//! file); and if no fill covers the position, asks its [`RangeFetcher`] to start one for the
//! run of missing slices — so a Range request for an object partly stored fetches only what it
//! lacks. A fill that makes no progress for `wait` ends the response with an error rather than
//! hanging it. A fill that stopped storing (disk full) leaves the rest of its origin body to the
//! reader at its position ([`super::handoff`]), which then relays it directly.
//!
//! Chunks leave as `Bytes` ([`ObjectReader::next_chunk`]), or — for a writer that can send a
//! file with `sendfile` ([`ObjectReader::next_piece`] with a limit) — committed slices leave as
//! [`FileRegion`]s instead, read by nobody in userspace; everything else (a fill in progress, a
//! store without files, a handed-over origin body) still leaves as bytes.
use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::watch;

use super::{
    CacheError, FileRegion, ObjectId, ObjectMeta, SliceReader, Storage,
    handoff::{self, Handoff},
    lock::{CacheLock, Fill, FillEnd, FillState},
};

/// Starts fills for missing slices (the HTTP layer: a `Range` request to the origin).
pub trait RangeFetcher: Send + Sync {
    /// Make sure slices `first..last` of `meta`'s version are being fetched; return the fill
    /// doing it (a new one, or one already in progress). `None`: cannot (origin unreachable…).
    /// Async because taking the fill's lock may be (a lock shared with other gateways).
    fn fetch(
        &self,
        id: ObjectId,
        meta: Arc<ObjectMeta>,
        first: u64,
        last: u64,
    ) -> BoxFuture<'_, Option<Arc<Fill>>>;
}

/// Largest chunk read from the store at once.
pub const READ_CHUNK: usize = 256 * 1024;

/// One piece of an object's bytes: read into memory, or left in a committed slice's file.
#[derive(Debug, Clone)]
pub enum Piece {
    /// Bytes read (or taken from a fill, or relayed from an origin).
    Bytes(Bytes),
    /// A part of a committed slice, to be sent from its file.
    File(FileRegion),
}

/// Reads `[pos, end)` of one object version.
pub struct ObjectReader {
    storage: Arc<dyn Storage>,
    fills: Arc<dyn CacheLock>,
    fetcher: Option<Arc<dyn RangeFetcher>>,
    id: ObjectId,
    meta: Arc<ObjectMeta>,
    pos: u64,
    end: Option<u64>,
    wait: Duration,
    open: Option<(u64, bool, Arc<dyn SliceReader>)>,
    sub: Option<(Arc<Fill>, watch::Receiver<FillState>)>,
    fetched: Vec<u64>,
    ahead: Option<(u64, tokio::task::JoinHandle<Result<Bytes, CacheError>>)>,
    /// The next committed slice being opened while this one is sent from its file.
    open_ahead: Option<(u64, Opening)>,
    /// An origin body a fill left to this reader, relayed directly.
    direct: Option<Handoff>,
    /// Slices fetched again after a fill that did not store.
    refetches: u32,
}

/// A slice being opened in a task of its own.
type Opening = tokio::task::JoinHandle<Result<Option<Arc<dyn SliceReader>>, CacheError>>;

/// How many times a reader fetches slices again after fills that did not store them.
const MAX_REFETCHES: u32 = 8;

impl ObjectReader {
    /// A reader of `[start, end)` (`end` `None`: to the object's end, which a fill may learn).
    #[expect(clippy::too_many_arguments, reason = "a constructor of plain parts")]
    pub fn new(
        storage: Arc<dyn Storage>,
        fills: Arc<dyn CacheLock>,
        fetcher: Option<Arc<dyn RangeFetcher>>,
        id: ObjectId,
        meta: Arc<ObjectMeta>,
        start: u64,
        end: Option<u64>,
        wait: Duration,
    ) -> ObjectReader {
        ObjectReader {
            storage,
            fills,
            fetcher,
            id,
            meta,
            pos: start,
            end,
            wait,
            open: None,
            sub: None,
            fetched: Vec::new(),
            ahead: None,
            open_ahead: None,
            direct: None,
            refetches: 0,
        }
    }

    fn end(&self) -> Option<u64> {
        match (self.end, self.meta.len) {
            (Some(e), Some(l)) => Some(e.min(l)),
            (e, l) => e.or(l),
        }
    }

    /// The next chunk; `None` at the end.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, CacheError>> {
        match self.next_piece(None).await? {
            Ok(Piece::Bytes(b)) => Some(Ok(b)),
            // Never without a file limit.
            Ok(Piece::File(_)) => Some(Err(CacheError::Closed)),
            Err(e) => Some(Err(e)),
        }
    }

    /// The next piece; `None` at the end. With `files` (the longest region wanted), a
    /// committed slice of a store with files comes as a [`Piece::File`] of at most that many
    /// bytes, not read; without, everything comes as bytes.
    pub async fn next_piece(&mut self, files: Option<u64>) -> Option<Result<Piece, CacheError>> {
        match self.step(files).await {
            Ok(Some(b)) => Some(Ok(b)),
            Ok(None) => None,
            Err(e) => {
                // End the stream after an error.
                self.end = Some(self.pos);
                Some(Err(e))
            }
        }
    }

    async fn step(&mut self, files: Option<u64>) -> Result<Option<Piece>, CacheError> {
        let s = self.meta.slice_bytes;
        let version = self.meta.version;
        loop {
            let end = self.end();
            if end.is_some_and(|e| self.pos >= e) {
                return Ok(None);
            }
            // 0. An origin body handed over by a fill that stopped storing.
            if let Some(h) = &mut self.direct {
                match h.next_at(self.pos, end).await {
                    Some(Ok(data)) => {
                        self.pos += data.len() as u64;
                        return Ok(Some(Piece::Bytes(data)));
                    }
                    Some(Err(e)) => return Err(e),
                    // The end of a body of unknown length is the object's.
                    None if h.ended() && end.is_none() => {
                        self.direct = None;
                        self.end = Some(self.pos);
                        return Ok(None);
                    }
                    // Its range or body ended: the rest comes the usual way.
                    None => {
                        self.direct = None;
                        continue;
                    }
                }
            }
            let idx = self.pos / s;
            let slice_end = (idx + 1) * s;
            let limit = end.map_or(slice_end, |e| e.min(slice_end));

            // 1. A committed slice.
            if self.storage.has_slice(&self.id, version, idx) {
                if !matches!(&self.open, Some((i, true, _)) if *i == idx) {
                    let opened = match self.open_ahead.take().filter(|(i, _)| *i == idx) {
                        Some((_, h)) => h.await.map_err(|_| CacheError::Closed)??,
                        None => self.storage.open_slice(self.id, version, idx).await?,
                    };
                    let Some(r) = opened else {
                        // Its file vanished (the store forgot it): fetch it like any missing one.
                        if self.storage.has_slice(&self.id, version, idx) {
                            return Err(CacheError::Missing { slice: idx });
                        }
                        continue;
                    };
                    self.open = Some((idx, true, r));
                }
                if let Some(region) = self.region(files, idx, limit) {
                    return Ok(Some(Piece::File(region)));
                }
                let want = ((limit - self.pos) as usize).min(READ_CHUNK);
                let r = self.open.as_ref().map(|(_, _, r)| r.clone());
                let ahead = self.ahead.take().filter(|(p, _)| *p == self.pos);
                let data = match (ahead, &r) {
                    (Some((_, h)), _) => h.await.map_err(|_| CacheError::Closed)??,
                    (None, Some(r)) => r.read(self.pos - idx * s, want).await?,
                    (None, None) => Bytes::new(),
                };
                // Read the next chunk of this slice while this one is being sent.
                let next = self.pos + data.len() as u64;
                if let Some(r) = r
                    && data.len() == want
                    && next < limit
                {
                    let want = ((limit - next) as usize).min(READ_CHUNK);
                    self.ahead = Some((next, tokio::spawn(r.read(next - idx * s, want))));
                }
                if data.is_empty() {
                    // At the end of a body whose length was learnt after this reader started?
                    if self.meta.len.is_none()
                        && let Ok(Some(hit)) = self.storage.lookup(&self.id).await
                        && hit.meta.version == version
                        && hit.meta.len.is_some()
                    {
                        self.meta = hit.meta;
                        continue;
                    }
                    return Err(CacheError::Missing { slice: idx });
                }
                self.pos += data.len() as u64;
                return Ok(Some(Piece::Bytes(data)));
            }

            // 2. A fill in progress.
            // The fill this reader follows, until its end has been seen; else the current one.
            let fill = match &self.sub {
                Some((f, _)) => Some(f.clone()),
                None => self.fills.current(&self.id),
            };
            if let Some(fill) = fill {
                if !self
                    .sub
                    .as_ref()
                    .is_some_and(|(f, _)| Arc::ptr_eq(f, &fill))
                {
                    let rx = fill.subscribe();
                    self.sub = Some((fill.clone(), rx));
                }
                let st = match &mut self.sub {
                    Some((_, rx)) => rx.borrow_and_update().clone(),
                    None => FillState::default(),
                };
                if let Some(m) = &st.meta
                    && m.version == version
                {
                    if self.meta.len.is_none() && m.len.is_some() {
                        self.meta = m.clone();
                        continue;
                    }
                    if let Some(data) = self.read_from_fill(&st, idx, limit).await? {
                        return Ok(Some(Piece::Bytes(data)));
                    }
                }
                match &st.end {
                    Some(FillEnd::Complete) => {
                        // Its slices are committed now (or it covered other slices).
                        if let Some(m) = &st.meta
                            && m.version == version
                        {
                            self.meta = m.clone();
                        }
                        self.sub = None;
                        if self.storage.has_slice(&self.id, version, idx)
                            || self.end().is_some_and(|e| self.pos >= e)
                        {
                            continue;
                        }
                    }
                    Some(FillEnd::Failed(why)) if covers(&st, version, self.pos) => {
                        return Err(CacheError::Origin(why.to_string()));
                    }
                    Some(end) => {
                        // A fill that did not store (the disk is full, or the origin's answer
                        // was not storable) may be fetched again, a few times: another reader
                        // may have taken its body, and this one still needs the bytes.
                        if *end == FillEnd::NotStored && self.refetches < MAX_REFETCHES {
                            self.refetches += 1;
                            self.fetched.retain(|&i| i != idx);
                        }
                        self.sub = None;
                    }
                    None => {
                        // A fill that stopped storing leaves its body to the reader that
                        // has caught up with it.
                        if let Some(h) = handoff::take(&self.id, version, self.pos) {
                            self.direct = Some(h);
                            continue;
                        }
                        // Wait for more.
                        if let Some((_, rx)) = &mut self.sub {
                            match tokio::time::timeout(self.wait, rx.changed()).await {
                                Ok(Ok(())) => continue,
                                Ok(Err(_)) => {
                                    self.sub = None;
                                    continue;
                                }
                                Err(_) => {
                                    return Err(CacheError::Stalled {
                                        waited_ms: self.wait.as_millis() as u64,
                                    });
                                }
                            }
                        }
                    }
                }
                if self.fills.current(&self.id).is_some() {
                    continue;
                }
            }

            // 3. Nobody is writing it. A fill that stopped storing may have left its body
            // for this very position; else fetch the run of missing slices.
            if let Some(h) = handoff::take(&self.id, version, self.pos) {
                self.direct = Some(h);
                continue;
            }
            if self.fetched.contains(&idx) {
                return Err(CacheError::Missing { slice: idx });
            }
            let Some(fetcher) = self.fetcher.clone() else {
                return Err(CacheError::Missing { slice: idx });
            };
            let Some(end) = self.end() else {
                return Err(CacheError::Missing { slice: idx });
            };
            let last_needed = (end - 1) / s;
            let mut last = idx + 1;
            while last <= last_needed && !self.storage.has_slice(&self.id, version, last) {
                last += 1;
            }
            self.fetched.push(idx);
            if fetcher
                .fetch(self.id, self.meta.clone(), idx, last)
                .await
                .is_none()
            {
                return Err(CacheError::Missing { slice: idx });
            }
        }
    }

    /// `[pos, limit)` of the open committed slice `idx` as a file region (at most `files`
    /// bytes), when a file is wanted and the store has one; advances past it.
    fn region(&mut self, files: Option<u64>, idx: u64, limit: u64) -> Option<FileRegion> {
        let max = files?;
        let file = match &self.open {
            Some((i, true, r)) if *i == idx => r.file()?,
            _ => return None,
        };
        let at = self.pos - idx * self.meta.slice_bytes;
        // A file shorter than the slice should be: the byte path reports it.
        let len = (limit - self.pos).min(file.len.checked_sub(at)?).min(max);
        if len == 0 {
            return None;
        }
        // A read ahead of this position is no longer wanted.
        if let Some((_, h)) = self.ahead.take() {
            h.abort();
        }
        self.pos += len;
        // Open the next slice while this one is being sent, so that the socket does not wait
        // for the disk thread between slices.
        let next = idx + 1;
        if self.pos == (idx + 1) * self.meta.slice_bytes
            && self.end().is_some_and(|e| self.pos < e)
            && self.open_ahead.is_none()
            && self.storage.has_slice(&self.id, self.meta.version, next)
        {
            let open = self.storage.open_slice(self.id, self.meta.version, next);
            self.open_ahead = Some((next, tokio::spawn(open)));
        }
        Some(FileRegion {
            fd: file.fd,
            offset: file.offset + at,
            len,
        })
    }

    /// Bytes at `pos` from a fill's published chunk or its written part.
    async fn read_from_fill(
        &mut self,
        st: &FillState,
        idx: u64,
        limit: u64,
    ) -> Result<Option<Bytes>, CacheError> {
        let s = self.meta.slice_bytes;
        if let Some((at, chunk)) = &st.chunk {
            let chunk_end = at + chunk.len() as u64;
            if *at <= self.pos && self.pos < chunk_end {
                let from = (self.pos - at) as usize;
                let to = (limit.min(chunk_end) - at) as usize;
                let data = chunk.slice(from..to);
                self.pos += data.len() as u64;
                return Ok(Some(data));
            }
        }
        if st.start <= self.pos && self.pos < st.written {
            if !matches!(&self.open, Some((i, false, _)) if *i == idx) {
                let Some(r) = self
                    .storage
                    .open_slice(self.id, self.meta.version, idx)
                    .await?
                else {
                    return Ok(None);
                };
                self.open = Some((idx, false, r));
            }
            let want = ((limit.min(st.written) - self.pos) as usize).min(READ_CHUNK);
            let r = self.open.as_ref().map(|(_, _, r)| r.clone());
            let data = match r {
                Some(r) => r.read(self.pos - idx * s, want).await?,
                None => Bytes::new(),
            };
            if data.is_empty() {
                return Ok(None);
            }
            self.pos += data.len() as u64;
            return Ok(Some(data));
        }
        Ok(None)
    }

    /// Turn into a stream of chunks.
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<Bytes, CacheError>> + Send {
        futures::stream::unfold(
            self,
            |mut r| async move { r.next_chunk().await.map(|c| (c, r)) },
        )
    }
}

fn covers(st: &FillState, version: u64, pos: u64) -> bool {
    st.meta.as_ref().is_some_and(|m| m.version == version) && st.start <= pos
}

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
