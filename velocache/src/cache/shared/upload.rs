//! Writing what this gateway stores to the shared tier, behind its clients.
//!
//! Metadata, committed slices and lock releases enter a queue ([`Uploads::push`]) and leave,
//! in order, through one worker task that writes them to the [`Tier`]. Order matters: a
//! record's metadata is written before its slices' digests (a digest is recorded only under
//! its version), and a fill's lock is freed only after its slices, so a gateway that waited for
//! the lock finds the object complete. The queue is bounded in bytes: a slice that does not fit
//! (or arrives while the tier is down) is dropped and counted — the tier is a cache, and no
//! client ever waits for it.
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::debug;

use super::tier::Tier;
use crate::cache::{ObjectId, ObjectMeta};

/// One write to the tier.
pub enum Upload {
    /// The object's metadata (a new version, or an update of the same one).
    Meta {
        /// The object.
        id: ObjectId,
        /// Its metadata.
        meta: Arc<ObjectMeta>,
    },
    /// A committed slice.
    Slice {
        /// The object.
        id: ObjectId,
        /// The version the slice belongs to.
        version: u64,
        /// Its index.
        idx: u64,
        /// Its bytes.
        data: Bytes,
    },
    /// This gateway's fill of the object ended: free its lock.
    Unlock {
        /// The object.
        id: ObjectId,
    },
}

/// The queue to the upload worker.
pub struct Uploads {
    tx: mpsc::UnboundedSender<Upload>,
    queued: Arc<AtomicU64>,
    tier: Arc<Tier>,
}

impl Uploads {
    /// Start the worker for `tier`.
    pub fn start(tier: Arc<Tier>) -> Uploads {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicU64::new(0));
        tokio::spawn(work(tier.clone(), rx, queued.clone()));
        Uploads { tx, queued, tier }
    }

    /// Queue `u`, unless it is a slice that does not fit or the tier is down.
    pub fn push(&self, u: Upload) {
        if let Upload::Slice { data, .. } = &u {
            let len = data.len() as u64;
            let fits = self
                .queued
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                    (q + len <= self.tier.upload_queue_bytes).then_some(q + len)
                })
                .is_ok();
            if !fits || !self.tier.is_up() {
                if fits {
                    self.queued.fetch_sub(len, Ordering::Relaxed);
                }
                self.tier.metrics.upload_drops.inc();
                return;
            }
        } else if !self.tier.is_up() {
            return;
        }
        // The worker lives as long as the queue's sender; a send error means shutdown.
        let _ = self.tx.send(u);
    }
}

async fn work(tier: Arc<Tier>, mut rx: mpsc::UnboundedReceiver<Upload>, queued: Arc<AtomicU64>) {
    while let Some(u) = rx.recv().await {
        match u {
            Upload::Meta { id, meta } => {
                if tier.is_up() {
                    let _ = tier.put_meta(&id, &meta).await;
                }
            }
            Upload::Slice {
                id,
                version,
                idx,
                data,
            } => {
                let len = data.len() as u64;
                if tier.is_up() {
                    let digest: [u8; 32] = Sha256::digest(&data).into();
                    if tier
                        .put_slice(&id, version, idx, data, digest)
                        .await
                        .is_none()
                    {
                        tier.metrics.upload_drops.inc();
                        debug!(object = %id, slice = idx, "slice not written to the shared tier");
                    }
                } else {
                    tier.metrics.upload_drops.inc();
                }
                queued.fetch_sub(len, Ordering::Relaxed);
            }
            Upload::Unlock { id } => {
                if tier.is_up() {
                    let _ = tier.unlock(&id).await;
                }
            }
        }
    }
}
