//! Counting the flows in progress, for graceful shutdown and the `active_sessions` gauge.
//!
//! Every handler takes a [`FlowGuard`] when a flow starts and drops it when the flow ends;
//! shutdown waits (bounded) until the count reaches zero.
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::Notify;

/// Shared count of flows in progress.
#[derive(Clone, Default)]
pub struct FlowTracker {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    active: AtomicUsize,
    idle: Notify,
}

/// Held while one flow is in progress.
pub struct FlowGuard {
    inner: Arc<Inner>,
}

impl FlowTracker {
    /// A tracker with no flows.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a flow; it ends when the guard is dropped.
    pub fn start(&self) -> FlowGuard {
        self.inner.active.fetch_add(1, Ordering::Relaxed);
        FlowGuard {
            inner: self.inner.clone(),
        }
    }

    /// Flows in progress.
    pub fn active(&self) -> usize {
        self.inner.active.load(Ordering::Relaxed)
    }

    /// Wait until no flow is in progress or `limit` passes; returns the flows still open.
    pub async fn wait_idle(&self, limit: Duration) -> usize {
        let wait = async {
            loop {
                let notified = self.inner.idle.notified();
                if self.active() == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
        self.active()
    }
}

impl Drop for FlowGuard {
    fn drop(&mut self) {
        if self.inner.active.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_idle_returns_when_last_flow_ends() {
        let t = FlowTracker::new();
        let g1 = t.start();
        let g2 = t.start();
        assert_eq!(t.active(), 2);
        let waiter = tokio::spawn({
            let t = t.clone();
            async move { t.wait_idle(Duration::from_secs(30)).await }
        });
        drop(g1);
        tokio::task::yield_now().await;
        drop(g2);
        assert_eq!(waiter.await.unwrap(), 0);
    }

    #[tokio::test]
    async fn wait_idle_gives_up_after_the_limit() {
        let t = FlowTracker::new();
        let _g = t.start();
        assert_eq!(t.wait_idle(Duration::from_millis(10)).await, 1);
    }
}
