//! The rest of an origin body that a fill stopped storing, handed to the reader that needs it.
//!
//! A fill that cannot store any more — the disk is full, a write failed, a body without
//! `Content-Length` grew past `max_object_bytes` — must not cut its clients short: they are
//! owed the origin's bytes whether or not the cache keeps them. Its readers follow the fill
//! through the store (committed slices, the growing temporary file); relaying the rest through
//! the fill's progress channel would lose every chunk a slow reader has not taken yet. So the
//! fill leaves the unread body here, keyed by object and version, with the offset of its next
//! byte, and keeps what it stored readable meanwhile: a reader behind that offset catches up
//! from the store, and the first reader at or past it takes the body and relays it itself, at
//! its own client's pace (backpressure all the way to the origin). Then the fill removes the
//! object (nothing partial stays, and its space is freed) and ends; readers still behind fetch
//! what they lack, as for any missing slice. A body nobody takes within [`UNCLAIMED`] is
//! dropped, closing its origin connection.
use std::{
    collections::HashMap,
    sync::{
        LazyLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::{Buf as _, Bytes};
use futures::{StreamExt as _, stream::BoxStream};
use parking_lot::Mutex;

use super::{CacheError, ObjectId};

/// How long an unclaimed body is kept (below the default `lock_age_ms`, so the waiting fill
/// never looks stalled to new requests).
pub const UNCLAIMED: Duration = Duration::from_secs(20);

/// An origin body from a known offset on.
pub struct Handoff {
    /// Bytes read from the body but sent to no reader, and their offset.
    pending: Option<(u64, Bytes)>,
    /// Offset of the body's next byte.
    body_at: u64,
    /// The body.
    body: BoxStream<'static, Result<Bytes, CacheError>>,
    /// One past the last byte the fill was asked for (`None`: the body's end).
    end: Option<u64>,
    /// The body has ended.
    ended: bool,
}

impl Handoff {
    /// The body whose next byte is at `body_at`, after `pending`.
    pub fn new(
        pending: Option<(u64, Bytes)>,
        body_at: u64,
        body: BoxStream<'static, Result<Bytes, CacheError>>,
        end: Option<u64>,
    ) -> Handoff {
        Handoff {
            pending: pending.filter(|(_, b)| !b.is_empty()),
            body_at,
            body,
            end,
            ended: false,
        }
    }

    /// Whether the origin's body ended (rather than the fill's range): for a body of unknown
    /// length, that is the object's end.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Offset of the first byte a reader would get.
    pub fn at(&self) -> u64 {
        self.pending.as_ref().map_or(self.body_at, |(at, _)| *at)
    }

    /// The bytes at `pos` (up to `end`); `None` at the end of the body or of the fill's range.
    pub async fn next_at(
        &mut self,
        pos: u64,
        end: Option<u64>,
    ) -> Option<Result<Bytes, CacheError>> {
        let stop = match (self.end, end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        loop {
            if stop.is_some_and(|e| pos >= e) {
                return None;
            }
            let (at, mut chunk) = match self.pending.take() {
                Some(p) => p,
                None => match self.body.next().await {
                    None => {
                        self.ended = true;
                        return None;
                    }
                    Some(Ok(c)) => {
                        let at = self.body_at;
                        self.body_at += c.len() as u64;
                        (at, c)
                    }
                    Some(Err(e)) => return Some(Err(e)),
                },
            };
            let chunk_end = at + chunk.len() as u64;
            if chunk_end <= pos {
                continue;
            }
            if at > pos {
                // A gap can only come from a body that skipped bytes: not servable.
                return Some(Err(CacheError::Origin(format!(
                    "the origin body jumped from {pos} to {at}"
                ))));
            }
            chunk.advance((pos - at) as usize);
            if let Some(e) = stop
                && e - pos < chunk.len() as u64
            {
                chunk.truncate((e - pos) as usize);
            }
            if !chunk.is_empty() {
                return Some(Ok(chunk));
            }
        }
    }
}

type Key = (ObjectId, u64);

struct Waiting {
    token: u64,
    handoff: Handoff,
    taken: tokio::sync::oneshot::Sender<()>,
}

static WAITING: LazyLock<Mutex<HashMap<Key, Vec<Waiting>>>> = LazyLock::new(Default::default);
static TOKENS: AtomicU64 = AtomicU64::new(0);

/// Leave `handoff` for a reader of `id` version `version`; the returned channel resolves once
/// it is taken, or dropped after [`UNCLAIMED`].
pub fn offer(id: ObjectId, version: u64, handoff: Handoff) -> tokio::sync::oneshot::Receiver<()> {
    let key = (id, version);
    let token = TOKENS.fetch_add(1, Ordering::Relaxed);
    let (taken, rx) = tokio::sync::oneshot::channel();
    WAITING.lock().entry(key).or_default().push(Waiting {
        token,
        handoff,
        taken,
    });
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            tokio::time::sleep(UNCLAIMED).await;
            remove(&key, |w| w.token == token);
        });
    }
    rx
}

fn remove(key: &Key, pick: impl Fn(&Waiting) -> bool) -> Option<Waiting> {
    let mut map = WAITING.lock();
    let list = map.get_mut(key)?;
    let i = list.iter().position(pick)?;
    let w = list.swap_remove(i);
    if list.is_empty() {
        map.remove(key);
    }
    Some(w)
}

/// Take a body left for a reader of `id` version `version` at `pos`: one that starts at or
/// before `pos` (the reader skips what it already has).
pub fn take(id: &ObjectId, version: u64, pos: u64) -> Option<Handoff> {
    let key = (*id, version);
    let best = {
        let map = WAITING.lock();
        map.get(&key)?
            .iter()
            .filter(|w| w.handoff.at() <= pos && w.handoff.end.is_none_or(|e| pos < e))
            .max_by_key(|w| w.handoff.at())
            .map(|w| w.token)?
    };
    let w = remove(&key, |w| w.token == best)?;
    let _ = w.taken.send(());
    Some(w.handoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(chunks: Vec<&'static [u8]>) -> BoxStream<'static, Result<Bytes, CacheError>> {
        futures::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c)))).boxed()
    }

    #[tokio::test]
    async fn pending_bytes_come_first_then_the_body_up_to_the_end() {
        let mut h = Handoff::new(
            Some((10, Bytes::from_static(b"abc"))),
            13,
            body(vec![b"def", b"ghij"]),
            Some(19),
        );
        let mut got = Vec::new();
        let mut pos = 10;
        while let Some(c) = h.next_at(pos, None).await {
            let c = c.unwrap();
            pos += c.len() as u64;
            got.extend_from_slice(&c);
        }
        assert_eq!(got, b"abcdefghi");
    }

    #[tokio::test]
    async fn a_reader_further_on_skips_and_its_own_end_stops_it() {
        let mut h = Handoff::new(None, 0, body(vec![b"0123", b"4567", b"89"]), None);
        assert_eq!(h.next_at(5, Some(7)).await.unwrap().unwrap(), "56");
        assert!(h.next_at(7, Some(7)).await.is_none());
    }

    #[tokio::test]
    async fn a_reader_at_or_past_the_offset_takes_it_once_and_the_fill_hears_of_it() {
        let id = ObjectId([9; 16]);
        let taken = offer(id, 3, Handoff::new(None, 500, body(vec![b"x"]), Some(900)));
        assert!(
            take(&id, 3, 400).is_none(),
            "a reader behind must catch up first"
        );
        assert!(take(&id, 4, 500).is_none(), "another version");
        assert!(take(&id, 3, 900).is_none(), "past the fill's range");
        assert!(take(&id, 3, 650).is_some());
        assert!(take(&id, 3, 650).is_none());
        taken.await.unwrap();
    }
}
