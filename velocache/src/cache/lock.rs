//! Collapsed forwarding: one writer per object, everyone else reads what it writes.
//!
//! The seam is [`CacheLock`] (the shape of pingora-cache's lock): [`CacheLock::acquire`] hands
//! the first caller for an object a [`FillPermit`] — it fetches from the origin and writes the
//! store — and every later caller the [`Fill`] in progress: they wait for its response headers,
//! then read its slices as they are written (the growing file). The permit releases the lock
//! when it finishes, or when it is dropped unfinished (the fill then fails and the next caller
//! writes). Progress is published through a `watch` channel: the response's metadata, how far
//! the written bytes reach, the latest chunk (so a reader that keeps up takes it from memory
//! instead of the disk), and how the fill ended.
//!
//! Two timeouts keep one stalled origin from hanging every client: a fill that has made no
//! progress for `lock_age` no longer blocks anyone — the next caller gets a fresh permit; a
//! reader waits at most `wait` for headers ([`Fill::wait_headers`]) or for the next bytes, then
//! gives up on the fill.
//!
//! [`Fills`] is the in-process implementation. A lock shared by several gateways (a Redis tier)
//! implements the same trait: the permit is a key set if absent with the lock age as its TTL,
//! released with the fill's end; a reader gets a local [`Fill`] whose metadata and end it feeds
//! from the tier (its bytes come from the tier's slices rather than from chunks in memory), and
//! [`CacheLock::acquire`] returns a pending [`Step`] while it asks.
use std::{
    collections::HashMap,
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;
use tracing::warn;

use super::{ObjectId, ObjectMeta, Step};

/// How a fill ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FillEnd {
    /// Everything it set out to write is committed.
    Complete,
    /// The origin's response is not stored: readers go to the origin themselves.
    NotStored,
    /// It broke off (origin error, disk error, verification failure, abandoned).
    Failed(Arc<str>),
}

/// What readers of a fill can see.
#[derive(Debug, Clone, Default)]
pub struct FillState {
    /// The response's metadata, once the origin answered and it is being stored.
    pub meta: Option<Arc<ObjectMeta>>,
    /// First byte this fill writes.
    pub start: u64,
    /// Bytes from `start` up to here are written (readable through the store).
    pub written: u64,
    /// The latest chunk and its offset.
    pub chunk: Option<(u64, Bytes)>,
    /// Set when the fill is over.
    pub end: Option<FillEnd>,
}

/// A fill in progress.
pub struct Fill {
    /// The object.
    pub id: ObjectId,
    state: watch::Sender<FillState>,
    progress: Mutex<Instant>,
}

impl Fill {
    /// Watch its progress.
    pub fn subscribe(&self) -> watch::Receiver<FillState> {
        self.state.subscribe()
    }

    /// The state now.
    pub fn state(&self) -> FillState {
        self.state.borrow().clone()
    }

    /// Wait up to `limit` for the response metadata, or for the fill to end without it.
    /// `None` on timeout.
    pub async fn wait_headers(&self, limit: Duration) -> Option<FillState> {
        let mut rx = self.subscribe();
        let wait = rx.wait_for(|s| s.meta.is_some() || s.end.is_some());
        match tokio::time::timeout(limit, wait).await {
            Ok(Ok(s)) => Some(s.clone()),
            Ok(Err(_)) => Some(self.state()),
            Err(_) => None,
        }
    }

    fn idle_for(&self) -> Duration {
        self.progress.lock().elapsed()
    }
}

/// The right to fill an object (the lock's one writer permit); dropping it unfinished fails the
/// fill and frees the lock.
pub struct FillPermit {
    fill: Arc<Fill>,
    lock: Weak<dyn CacheLock>,
    finished: bool,
}

impl FillPermit {
    /// A permit on a new fill of `id`, released through `lock` when it ends: what a
    /// [`CacheLock`] hands its writer — or, for a lock shared with other gateways, what it keeps
    /// to mirror a remote writer's progress to the readers in this process.
    pub fn new(id: ObjectId, lock: Weak<dyn CacheLock>) -> FillPermit {
        FillPermit {
            fill: Arc::new(Fill {
                id,
                state: watch::channel(FillState::default()).0,
                progress: Mutex::new(Instant::now()),
            }),
            lock,
            finished: false,
        }
    }

    /// The fill readers see.
    pub fn fill(&self) -> &Arc<Fill> {
        &self.fill
    }

    /// Publish the metadata being stored and where writing starts.
    pub fn set_meta(&self, meta: Arc<ObjectMeta>, start: u64) {
        *self.fill.progress.lock() = Instant::now();
        self.fill.state.send_modify(|s| {
            s.meta = Some(meta);
            s.start = start;
            s.written = start;
        });
    }

    /// Replace the metadata (a length learnt at the end, a verification).
    pub fn update_meta(&self, meta: Arc<ObjectMeta>) {
        self.fill.state.send_modify(|s| s.meta = Some(meta));
    }

    /// Bytes up to `written` are readable; `chunk` is the latest one.
    pub fn progress(&self, written: u64, chunk: Option<(u64, Bytes)>) {
        *self.fill.progress.lock() = Instant::now();
        self.fill.state.send_modify(|s| {
            s.written = written;
            s.chunk = chunk;
        });
    }

    /// End the fill.
    pub fn finish(mut self, end: FillEnd) {
        self.end(end);
    }

    fn end(&mut self, end: FillEnd) {
        if self.finished {
            return;
        }
        self.finished = true;
        if let Some(lock) = self.lock.upgrade() {
            lock.release(&self.fill, &end);
        }
        self.fill.state.send_modify(|s| {
            s.end = Some(end);
            s.chunk = None;
        });
    }
}

impl Drop for FillPermit {
    fn drop(&mut self) {
        self.end(FillEnd::Failed("the fill was abandoned".into()));
    }
}

/// Result of [`CacheLock::acquire`].
pub enum Acquired {
    /// You fill it.
    Writer(FillPermit),
    /// Someone else is filling it.
    Reader(Arc<Fill>),
}

/// The collapsed-forwarding lock: one writer permit per object, readers following its fill.
pub trait CacheLock: Send + Sync + 'static {
    /// Become the writer of `id`, or join the fill in progress. A writer that made no progress
    /// for the lock age no longer counts: the caller gets a fresh permit.
    fn acquire(&self, id: ObjectId) -> Step<'_, Acquired>;
    /// The fill in progress for `id` that readers here can follow, if any.
    fn current(&self, id: &ObjectId) -> Option<Arc<Fill>>;
    /// A permit ended with `end`: free the lock if `fill` still holds it. Called by the permit,
    /// once, before its readers learn the end (so a reader that retries finds the lock free).
    fn release(&self, fill: &Arc<Fill>, end: &FillEnd);
    /// Fills in progress.
    fn active(&self) -> usize;
}

/// Fills in progress in this process, by object.
pub struct Fills {
    map: Mutex<HashMap<ObjectId, Arc<Fill>>>,
    lock_age: Duration,
    this: Weak<Fills>,
}

impl Fills {
    /// A lock whose fills stop blocking others after `lock_age` without progress.
    pub fn new(lock_age: Duration) -> Arc<Fills> {
        Arc::new_cyclic(|this| Fills {
            map: Mutex::new(HashMap::new()),
            lock_age,
            this: this.clone(),
        })
    }
}

impl CacheLock for Fills {
    fn acquire(&self, id: ObjectId) -> Step<'_, Acquired> {
        let mut map = self.map.lock();
        if let Some(f) = map.get(&id) {
            let idle = f.idle_for();
            if idle < self.lock_age {
                return Step::Ready(Acquired::Reader(f.clone()));
            }
            warn!(object = %id, idle_ms = idle.as_millis() as u64, "a fill made no progress for the lock age; starting another");
        }
        let permit = FillPermit::new(id, self.this.clone());
        map.insert(id, permit.fill().clone());
        Step::Ready(Acquired::Writer(permit))
    }

    fn current(&self, id: &ObjectId) -> Option<Arc<Fill>> {
        self.map.lock().get(id).cloned()
    }

    fn release(&self, fill: &Arc<Fill>, _end: &FillEnd) {
        let mut map = self.map.lock();
        if map.get(&fill.id).is_some_and(|f| Arc::ptr_eq(f, fill)) {
            map.remove(&fill.id);
        }
    }

    fn active(&self) -> usize {
        self.map.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::meta::sample;

    fn lock(lock_age: Duration) -> Arc<dyn CacheLock> {
        Fills::new(lock_age)
    }

    #[tokio::test]
    async fn one_writer_many_readers() {
        let fills = lock(Duration::from_secs(60));
        let id = ObjectId([1; 16]);
        let Acquired::Writer(permit) = fills.acquire(id).await else {
            panic!("first caller must write")
        };
        let Acquired::Reader(fill) = fills.acquire(id).await else {
            panic!("second caller must read")
        };
        let waiter = tokio::spawn({
            let fill = fill.clone();
            async move { fill.wait_headers(Duration::from_secs(10)).await }
        });
        permit.set_meta(Arc::new(sample(Some(10), 1 << 20)), 0);
        let st = waiter.await.unwrap().unwrap();
        assert!(st.meta.is_some());
        permit.progress(5, Some((0, Bytes::from_static(b"hello"))));
        assert_eq!(fill.state().written, 5);
        permit.finish(FillEnd::Complete);
        assert_eq!(fill.state().end, Some(FillEnd::Complete));
        assert!(fills.current(&id).is_none());
        assert!(matches!(fills.acquire(id).await, Acquired::Writer(_)));
    }

    #[tokio::test]
    async fn an_abandoned_fill_fails_and_frees_the_lock() {
        let fills = lock(Duration::from_secs(60));
        let id = ObjectId([2; 16]);
        let Acquired::Writer(permit) = fills.acquire(id).await else {
            panic!("first caller must write")
        };
        let Acquired::Reader(fill) = fills.acquire(id).await else {
            panic!("second caller must read")
        };
        drop(permit);
        assert!(matches!(fill.state().end, Some(FillEnd::Failed(_))));
        assert_eq!(fills.active(), 0);
    }

    #[tokio::test]
    async fn waiters_time_out_and_stale_locks_are_taken_over() {
        let fills = lock(Duration::from_millis(30));
        let id = ObjectId([3; 16]);
        let Acquired::Writer(_stalled) = fills.acquire(id).await else {
            panic!("first caller must write")
        };
        let Acquired::Reader(fill) = fills.acquire(id).await else {
            panic!("second caller must read")
        };
        assert!(fill.wait_headers(Duration::from_millis(10)).await.is_none());
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(
            matches!(fills.acquire(id).await, Acquired::Writer(_)),
            "a lock older than lock_age must not block"
        );
    }
}
