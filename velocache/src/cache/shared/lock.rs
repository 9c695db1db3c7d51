//! Collapsed forwarding across gateways: the fill lock, announced in the shared tier.
//!
//! [`SharedLock`] is a [`CacheLock`] over this process's [`Fills`]. A request that becomes
//! the local writer of an object also takes the object's lock in the tier (`SET NX` with the
//! lock age, refreshed while the fill makes progress, freed through the upload queue once the
//! fill's slices are written). If another gateway holds it, the local writer waits — up to
//! `lock_wait_ms`, polling the lock — and then looks at what the other gateway stored: a
//! complete, fresh object is adopted and handed to the waiting readers as a finished fill (so
//! they serve it from the tier, and the origin is asked once for both gateways); anything else
//! and this gateway fills it itself. Readers in this process follow the local writer as before,
//! whichever way it went.
use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use http::HeaderMap;
use tokio::time::Instant;
use tracing::debug;

use super::{TieredStorage, tier::Tier, upload::Upload};
use crate::cache::{
    ObjectId, Step,
    lock::{Acquired, CacheLock, Fill, FillEnd, FillPermit, Fills},
    policy::{self, Usable},
};

/// How often a waiting gateway looks at another gateway's lock.
const POLL: Duration = Duration::from_millis(20);

/// The fill lock shared with the other gateways of a tier.
pub struct SharedLock {
    local: Arc<Fills>,
    store: Weak<TieredStorage>,
    tier: Arc<Tier>,
    lock_age: Duration,
    wait: Duration,
}

impl SharedLock {
    /// A lock over `local` whose writers also lock the object in `store`'s tier; a gateway
    /// waits for another's fill up to `wait`.
    pub fn new(
        local: Arc<Fills>,
        store: &Arc<TieredStorage>,
        lock_age: Duration,
        wait: Duration,
    ) -> Arc<SharedLock> {
        Arc::new(SharedLock {
            local,
            store: Arc::downgrade(store),
            tier: store.tier().clone(),
            lock_age,
            wait,
        })
    }

    /// This gateway holds the tier's lock for `fill`: keep it while the fill lasts, then free
    /// it behind the fill's uploads.
    fn keep(&self, id: ObjectId, fill: Arc<Fill>) {
        let tier = self.tier.clone();
        let store = self.store.clone();
        let age = self.lock_age;
        tokio::spawn(async move {
            let mut rx = fill.subscribe();
            drop(fill);
            loop {
                if rx.borrow_and_update().end.is_some() {
                    break;
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { break },
                    () = tokio::time::sleep(age / 3) => {
                        let _ = tier.refresh_lock(&id, age).await;
                    }
                }
            }
            if let Some(store) = store.upgrade() {
                store.upload(Upload::Unlock { id });
            }
        });
    }

    /// Become the writer of `id` in the tier too, or wait for the gateway that is.
    async fn claim(&self, id: ObjectId, permit: FillPermit) -> Acquired {
        match self.tier.lock(&id, self.lock_age).await {
            Some(true) => {
                self.keep(id, permit.fill().clone());
                return Acquired::Writer(permit);
            }
            Some(false) => {}
            None => return Acquired::Writer(permit),
        }
        let deadline = Instant::now() + self.wait;
        loop {
            tokio::time::sleep(POLL).await;
            match self.tier.locked(&id).await {
                Some(true) if Instant::now() < deadline => continue,
                Some(_) => break,
                None => return Acquired::Writer(permit),
            }
        }
        if let Some(store) = self.store.upgrade()
            && let Some(obj) = store.fetch_record(id).await
            && obj.complete()
            && fresh(&obj.meta)
        {
            self.tier.metrics.collapsed.inc();
            debug!(object = %id, key = %obj.meta.key, "another gateway filled it; serving from the shared tier");
            permit.set_meta(obj.meta.clone(), 0);
            let fill = permit.fill().clone();
            permit.finish(FillEnd::Complete);
            return Acquired::Reader(fill);
        }
        // Not stored there (or still being filled past the wait): fetch it here.
        if self.tier.lock(&id, self.lock_age).await == Some(true) {
            self.keep(id, permit.fill().clone());
        }
        Acquired::Writer(permit)
    }
}

/// Whether another gateway's just-stored object may answer without revalidation.
fn fresh(meta: &crate::cache::ObjectMeta) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    matches!(
        policy::evaluate(meta, &HeaderMap::new(), now),
        Usable::Fresh
    )
}

impl CacheLock for SharedLock {
    fn acquire(&self, id: ObjectId) -> Step<'_, Acquired> {
        match self.local.acquire(id) {
            Step::Ready(Acquired::Writer(permit)) if self.tier.is_up() => {
                Step::Pending(Box::pin(self.claim(id, permit)))
            }
            other => other,
        }
    }

    fn current(&self, id: &ObjectId) -> Option<Arc<Fill>> {
        self.local.current(id)
    }

    fn release(&self, fill: &Arc<Fill>, end: &FillEnd) {
        self.local.release(fill, end);
    }

    fn active(&self) -> usize {
        self.local.active()
    }
}
