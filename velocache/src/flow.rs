//! Counting the flows in progress, for graceful shutdown and the `active_sessions` gauge.
//!
//! Every handler takes a [`FlowGuard`] when a flow starts and drops it when the flow ends;
//! shutdown waits (bounded) until the count reaches zero. The wiring hands each service a
//! [`FlowTracker::scoped`] view of the one tracker, so the same `start()` also counts the flow
//! for its service (`velocache_active_sessions{service}`, `velocache_flows_total{service}`)
//! without the handlers knowing.
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::Notify;
use velocache_common::{SERVICE_COUNT, Service};

/// Shared count of flows in progress.
#[derive(Clone, Default)]
pub struct FlowTracker {
    inner: Arc<Inner>,
    /// The service this view counts for (index into the per-service slots), if any.
    scope: Option<usize>,
}

#[derive(Default)]
struct Inner {
    active: AtomicUsize,
    per_service: [PerService; SERVICE_COUNT as usize],
    idle: Notify,
}

#[derive(Default)]
struct PerService {
    active: AtomicUsize,
    started: AtomicU64,
}

/// Held while one flow is in progress.
pub struct FlowGuard {
    inner: Arc<Inner>,
    scope: Option<usize>,
}

impl FlowTracker {
    /// A tracker with no flows.
    pub fn new() -> Self {
        Self::default()
    }

    /// A view of the same tracker whose flows also count for `service`.
    pub fn scoped(&self, service: Service) -> FlowTracker {
        FlowTracker {
            inner: self.inner.clone(),
            scope: Some(service as usize),
        }
    }

    /// Register a flow; it ends when the guard is dropped.
    pub fn start(&self) -> FlowGuard {
        self.inner.active.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = self.scope.and_then(|i| self.inner.per_service.get(i)) {
            slot.active.fetch_add(1, Ordering::Relaxed);
            slot.started.fetch_add(1, Ordering::Relaxed);
        }
        FlowGuard {
            inner: self.inner.clone(),
            scope: self.scope,
        }
    }

    /// Flows in progress.
    pub fn active(&self) -> usize {
        self.inner.active.load(Ordering::Relaxed)
    }

    /// Flows of `service` in progress (counted through a [`FlowTracker::scoped`] view).
    pub fn active_for(&self, service: Service) -> usize {
        self.inner
            .per_service
            .get(service as usize)
            .map_or(0, |s| s.active.load(Ordering::Relaxed))
    }

    /// Flows of `service` started since the daemon started.
    pub fn started_for(&self, service: Service) -> u64 {
        self.inner
            .per_service
            .get(service as usize)
            .map_or(0, |s| s.started.load(Ordering::Relaxed))
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
        if let Some(slot) = self.scope.and_then(|i| self.inner.per_service.get(i)) {
            slot.active.fetch_sub(1, Ordering::Relaxed);
        }
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

    #[test]
    fn scoped_views_count_per_service_and_in_total() {
        let t = FlowTracker::new();
        let dns = t.scoped(Service::Dns);
        let g1 = dns.start();
        let g2 = t.scoped(Service::Http).start();
        let _g3 = dns.start();
        assert_eq!(t.active(), 3);
        assert_eq!(t.active_for(Service::Dns), 2);
        assert_eq!(t.active_for(Service::Http), 1);
        drop(g1);
        drop(g2);
        assert_eq!(t.active(), 1);
        assert_eq!(t.active_for(Service::Dns), 1);
        assert_eq!(t.active_for(Service::Http), 0);
        assert_eq!(t.started_for(Service::Dns), 2);
        assert_eq!(t.started_for(Service::Sip), 0);
    }

    #[tokio::test]
    async fn wait_idle_gives_up_after_the_limit() {
        let t = FlowTracker::new();
        let _g = t.start();
        assert_eq!(t.wait_idle(Duration::from_millis(10)).await, 1);
    }
}
