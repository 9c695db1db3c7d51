//! The filler: an origin body in, committed slices out, progress published as it goes.
//!
//! Each chunk of the body is appended to the current slice's temporary file and, as soon as
//! that write completed, published to the fill's readers (the chunk itself, and how far the
//! written bytes reach) — so every chunk goes to the clients and to the disk at once, and RAM
//! holds at most the chunk in flight whatever the object's size. A slice is committed when it
//! is full; the last one at the end of the body, once its length is known and right.
//! Content-addressed objects are hashed on the way and marked verified only if the digest
//! matches; otherwise they are removed. The filler runs in its own task, so a download goes
//! on into the cache when the client that started it goes away.
//!
//! A fill that cannot store (a write fails — the disk is full — or a body of unknown length
//! grows past `max_object_bytes`) removes the object, so that neither a partial object nor its
//! space stays behind, and leaves the rest of the body to the reader standing where it stopped
//! ([`super::handoff`]): clients get all the origin's bytes either way.
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt as _, stream::BoxStream};
use sha2::{Digest as _, Sha256};
use tracing::{debug, warn};

use super::{
    CacheError, ObjectId, ObjectMeta, SliceWriter, Storage,
    handoff::{self, Handoff},
    lock::{FillEnd, FillPermit},
};

/// One fill's job.
pub struct FillJob {
    /// The store.
    pub storage: Arc<dyn Storage>,
    /// The object.
    pub id: ObjectId,
    /// Its metadata as stored (version, slice size, length if known).
    pub meta: Arc<ObjectMeta>,
    /// First byte to write (slice-aligned).
    pub start: u64,
    /// One past the last byte to write (`None`: to the end of the body).
    pub end: Option<u64>,
    /// Offset of the body's first byte in the object (bytes before `start` are skipped: an
    /// origin that ignored our `Range` sends the object from 0).
    pub body_offset: u64,
    /// Stop storing past this size.
    pub max_object_bytes: u64,
    /// The fill's permit.
    pub permit: FillPermit,
}

/// What a finished fill wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillOutcome {
    /// Bytes written.
    pub bytes: u64,
    /// The object is now complete and verified where needed.
    pub complete: bool,
}

impl FillJob {
    /// Run to the end of `body`; the permit is finished whatever happens.
    pub async fn run<S, E>(self, body: S) -> Result<FillOutcome, CacheError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
        E: std::fmt::Display,
    {
        let FillJob {
            storage,
            id,
            meta,
            start,
            end,
            body_offset,
            max_object_bytes,
            permit,
        } = self;
        let mut w = Writer {
            storage,
            id,
            meta,
            pos: start,
            writer: None,
            hasher: None,
        };
        if w.meta.sha256.is_some() && start == 0 && end.is_none() {
            w.hasher = Some(Sha256::new());
        }
        let mut body: BoxStream<'static, Result<Bytes, CacheError>> = body
            .map(|r| r.map_err(|e| CacheError::Origin(e.to_string())))
            .boxed();
        let mut at = body_offset;
        let result = w
            .pump(&mut body, &mut at, end, max_object_bytes, &permit)
            .await;
        match result {
            Ok(outcome) => match w.finish(end, &permit).await {
                Ok(complete) => {
                    permit.finish(FillEnd::Complete);
                    Ok(FillOutcome {
                        bytes: outcome,
                        complete,
                    })
                }
                Err(e @ CacheError::Io { .. }) => {
                    // The body was all published, but the last slice or the metadata could
                    // not be stored: readers that were behind fetch what they lack.
                    remove_own(w.storage.clone(), id, w.meta.version).await;
                    permit.finish(FillEnd::NotStored);
                    Err(e)
                }
                Err(e) => {
                    permit.finish(FillEnd::Failed(e.to_string().into()));
                    Err(e)
                }
            },
            Err(Stop::Origin(e)) => {
                permit.finish(FillEnd::Failed(e.to_string().into()));
                Err(e)
            }
            Err(Stop::Store { error, unsent }) => {
                // The rest of the body goes to the first reader that reaches it; until then
                // what was stored (the partial slice too) stays readable for readers behind.
                let handoff = Handoff::new(unsent, at, body, end);
                let published = handoff.at();
                let taken = handoff::offer(id, w.meta.version, handoff);
                // Wake readers waiting for more: they look for the body now.
                permit.progress(published, None);
                let _ = tokio::time::timeout(handoff::UNCLAIMED, taken).await;
                // Nothing partial stays: the slice being written (its temporary file) and
                // what was committed go, and their space with them.
                w.writer = None;
                remove_own(w.storage.clone(), id, w.meta.version).await;
                permit.finish(FillEnd::NotStored);
                Err(error)
            }
        }
    }
}

/// Why a fill stopped before the end of its body.
enum Stop {
    /// The origin's body failed: readers see the failure.
    Origin(CacheError),
    /// The store would not take more (or may not: too large): the body goes on to a reader.
    Store {
        /// What went wrong.
        error: CacheError,
        /// The chunk read but not published (its offset and bytes).
        unsent: Option<(u64, Bytes)>,
    },
}

struct Writer {
    storage: Arc<dyn Storage>,
    id: ObjectId,
    meta: Arc<ObjectMeta>,
    pos: u64,
    writer: Option<Box<dyn SliceWriter>>,
    hasher: Option<Sha256>,
}

/// Remove object `id` if the store still holds `version` of it (never a newer version that
/// replaced it meanwhile).
async fn remove_own(storage: Arc<dyn Storage>, id: ObjectId, version: u64) {
    if let Ok(Some(hit)) = storage.lookup(&id).await
        && hit.meta.version == version
    {
        let _ = storage.remove(id).await;
    }
}

impl Writer {
    /// Write the body from `at` (the offset of its next byte) until its end or `end`.
    async fn pump(
        &mut self,
        body: &mut BoxStream<'static, Result<Bytes, CacheError>>,
        at: &mut u64,
        end: Option<u64>,
        max_object_bytes: u64,
        permit: &FillPermit,
    ) -> Result<u64, Stop> {
        let start = self.pos;
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(Stop::Origin)?;
            // Skip what precedes `start` (an origin that ignored our Range).
            if *at < self.pos {
                let skip = (self.pos - *at).min(chunk.len() as u64) as usize;
                let _ = chunk.split_to(skip);
                *at += skip as u64;
            }
            *at += chunk.len() as u64;
            if let Some(e) = end {
                let room = e.saturating_sub(self.pos);
                if room < chunk.len() as u64 {
                    chunk.truncate(room as usize);
                }
            }
            if chunk.is_empty() {
                if end.is_some_and(|e| self.pos >= e) {
                    break;
                }
                continue;
            }
            let chunk_at = self.pos;
            if self.pos + chunk.len() as u64 > max_object_bytes {
                return Err(Stop::Store {
                    error: CacheError::TooLarge {
                        limit: max_object_bytes,
                    },
                    unsent: Some((chunk_at, chunk)),
                });
            }
            if let Some(h) = &mut self.hasher {
                h.update(&chunk);
            }
            if let Err(error) = self.write(chunk.clone()).await {
                return Err(Stop::Store {
                    error,
                    unsent: Some((chunk_at, chunk)),
                });
            }
            permit.progress(self.pos, Some((chunk_at, chunk)));
            if end.is_some_and(|e| self.pos >= e) {
                break;
            }
        }
        Ok(self.pos - start)
    }

    async fn write(&mut self, mut data: Bytes) -> Result<(), CacheError> {
        let s = self.meta.slice_bytes;
        while !data.is_empty() {
            if self.writer.is_none() {
                // A slice of an object the store no longer holds (a full disk removed it, or a
                // new version replaced it) would be unlinked at its commit: relay instead.
                let held = match self.storage.lookup(&self.id).await {
                    Ok(Some(hit)) => hit.meta.version == self.meta.version,
                    _ => false,
                };
                if !held {
                    return Err(CacheError::Removed);
                }
                self.writer = Some(
                    self.storage
                        .create_slice(self.id, self.meta.version, self.pos / s)
                        .await?,
                );
            }
            let room = (s - self.pos % s) as usize;
            let part = data.split_to(room.min(data.len()));
            let n = part.len() as u64;
            if let Some(w) = self.writer.as_mut() {
                w.append(part).await?;
            }
            self.pos += n;
            if self.pos.is_multiple_of(s)
                && let Some(w) = self.writer.take()
            {
                w.commit(s).await?;
            }
        }
        Ok(())
    }

    /// Commit the last slice, learn the length, verify; true when the object is complete.
    async fn finish(&mut self, end: Option<u64>, permit: &FillPermit) -> Result<bool, CacheError> {
        let expected_end = match (end, self.meta.len) {
            (Some(e), Some(l)) => Some(e.min(l)),
            (Some(e), None) => Some(e),
            (None, l) => l,
        };
        if let Some(e) = expected_end
            && self.pos != e
        {
            return Err(CacheError::Length {
                what: "body",
                expected: e,
                got: self.pos,
            });
        }
        if let Some(w) = self.writer.take() {
            let n = w.written();
            w.commit(n).await?;
        }
        if self.meta.len.is_none() {
            // A body without Content-Length: its length is where it ended.
            let mut m = (*self.meta).clone();
            m.len = Some(self.pos);
            self.meta = Arc::new(m);
            self.storage.put_meta(self.id, self.meta.clone()).await?;
            permit.update_meta(self.meta.clone());
        }
        if let (Some(h), Some(want)) = (self.hasher.take(), self.meta.sha256) {
            let got: [u8; 32] = h.finalize().into();
            if got != want {
                warn!(key = %self.meta.key, got = %hex::encode(got), "content-addressed object does not match its digest; removed");
                let _ = self.storage.remove(self.id).await;
                return Err(CacheError::Digest {
                    key: self.meta.key.clone(),
                });
            }
            let mut m = (*self.meta).clone();
            m.verified = true;
            self.meta = Arc::new(m);
            self.storage.put_meta(self.id, self.meta.clone()).await?;
            permit.update_meta(self.meta.clone());
            debug!(key = %self.meta.key, "content-addressed object verified");
        }
        Ok(self
            .storage
            .lookup(&self.id)
            .await?
            .is_some_and(|s| s.meta.version == self.meta.version && s.complete()))
    }
}
