//! Flows in progress: counted for graceful shutdown and the `active_sessions` gauge, and each
//! ended with its one `flow` log line.
//!
//! Every handler takes a [`FlowGuard`] when a flow starts and drops it when the flow ends;
//! shutdown waits (bounded) until the count reaches zero. The wiring hands each service a
//! [`FlowTracker::scoped`] view of the one tracker, so the same call also counts the flow for
//! its service (`velocache_active_sessions{service}`, `velocache_flows_total{service}`) without
//! the handlers knowing. A guard from [`FlowTracker::open`] also writes the flow's `flow` line
//! when it drops — `service`, `client`, `orig_dst`, `transport`, bytes each way (its [`Counts`],
//! fed by the [`Metered`] wrapper or by whoever moves the bytes), `duration_ms`, and whatever the
//! handler recorded on the way (`protocol`, `sni`, `alpn`, `action`, `rule`, `error`, the
//! `plugin` that drove a claimed port, and that plugin's `tags`, one object): every intercepted
//! flow gets the same line, written in one place.
//!
//! # Layout
//! - `metered`: the byte-counting stream wrapper and the counts it feeds.

mod metered;

pub use metered::{Counts, Metered};
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::Notify;
use tracing::{Span, field::Empty, info, info_span};
use velocache_common::{SERVICE_COUNT, Service};

use crate::net::{ClientAddr, OrigDstAddr};

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
    line: Option<Line>,
}

/// What a flow's `flow` line says.
struct Line {
    service: Service,
    client: ClientAddr,
    orig_dst: OrigDstAddr,
    transport: &'static str,
    started: std::time::Instant,
    counts: Arc<Counts>,
    /// The span the line is written in (its fields — a TLS connection's `sni`, say — come
    /// with it): the one current when the flow opened, unless the handler gives another.
    context: Span,
    /// What the handler recorded on the way.
    fields: parking_lot::Mutex<Vec<(&'static str, String)>>,
    /// Fields a plugin added (names are the plugin's own), written as the `tags` object.
    tags: parking_lot::Mutex<Vec<(String, String)>>,
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

    /// Register a flow that logs its own lines (a DNS query); it ends when the guard drops.
    pub fn start(&self) -> FlowGuard {
        self.inner.active.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = self.scope.and_then(|i| self.inner.per_service.get(i)) {
            slot.active.fetch_add(1, Ordering::Relaxed);
            slot.started.fetch_add(1, Ordering::Relaxed);
        }
        FlowGuard {
            inner: self.inner.clone(),
            scope: self.scope,
            line: None,
        }
    }

    /// Register an intercepted connection or UDP session of `service`; when the guard drops,
    /// the flow's `flow` line is written.
    pub fn open(
        &self,
        service: Service,
        client: ClientAddr,
        orig_dst: OrigDstAddr,
        transport: &'static str,
    ) -> FlowGuard {
        let mut guard = self.start();
        guard.line = Some(Line {
            service,
            client,
            orig_dst,
            transport,
            started: std::time::Instant::now(),
            counts: Arc::new(Counts::default()),
            context: Span::current(),
            fields: parking_lot::Mutex::new(Vec::new()),
            tags: parking_lot::Mutex::new(Vec::new()),
        });
        guard
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

impl FlowGuard {
    /// The flow's byte counts (for a [`Metered`] client stream, or whoever moves the bytes).
    /// A guard without a line hands out counts nobody reports.
    pub fn counts(&self) -> Arc<Counts> {
        self.line
            .as_ref()
            .map_or_else(|| Arc::new(Counts::default()), |l| l.counts.clone())
    }

    /// Add what the handler learnt to the flow line: `protocol`, `sni`, `alpn`, `action`,
    /// `rule`, `reason`, `pinned`, `tls`, `path` (how a splice moved the bytes: `sockmap`,
    /// `splice`, `copy`), `plugin`, `error`. Other names are not written.
    pub fn record(&self, field: &'static str, value: &str) {
        if let Some(line) = &self.line {
            let mut fields = line.fields.lock();
            fields.retain(|(f, _)| *f != field);
            fields.push((field, value.to_string()));
        }
    }

    /// Add a field a plugin chose to the line's `tags` object (a later value for the same name
    /// replaces the earlier one). The names are the plugin's, so they live apart from the
    /// daemon's own fields and can never overwrite one.
    pub fn tag(&self, name: &str, value: &str) {
        if let Some(line) = &self.line {
            let mut tags = line.tags.lock();
            tags.retain(|(n, _)| n != name);
            tags.push((name.to_string(), value.to_string()));
        }
    }

    /// Write the line inside `span` (and so with its fields) rather than the span current
    /// when the flow opened: the TLS layer's span, which knows the SNI and the action.
    pub fn within(&mut self, span: &Span) {
        if let Some(line) = &mut self.line {
            line.context = span.clone();
        }
    }

    /// Say why the flow broke off (the line's `error`, with the cause chain).
    pub fn fail(&self, error: &(dyn std::error::Error + 'static)) {
        self.record("error", &crate::telemetry::error_chain(error));
    }

    fn write_line(line: &Line) {
        let span = info_span!(
            parent: &line.context,
            "flow",
            protocol = Empty,
            sni = Empty,
            alpn = Empty,
            action = Empty,
            rule = Empty,
            reason = Empty,
            pinned = Empty,
            tls = Empty,
            path = Empty,
            plugin = Empty,
            tags = Empty,
            error = Empty,
            datagrams_up = Empty,
            datagrams_down = Empty,
        );
        for (field, value) in line.fields.lock().iter() {
            span.record(*field, value.as_str());
        }
        let tags = line.tags.lock();
        if !tags.is_empty() {
            // One JSON object, which the JSON log layer writes as a nested object.
            let object: serde_json::Map<String, serde_json::Value> = tags
                .iter()
                .map(|(n, v)| (n.clone(), serde_json::Value::from(v.as_str())))
                .collect();
            span.record(
                "tags",
                serde_json::Value::Object(object).to_string().as_str(),
            );
        }
        drop(tags);
        if line.transport == "udp" {
            span.record(
                "datagrams_up",
                line.counts.datagrams_up.load(Ordering::Relaxed),
            );
            span.record(
                "datagrams_down",
                line.counts.datagrams_down.load(Ordering::Relaxed),
            );
        }
        let _inside = span.enter();
        info!(
            service = line.service.name(),
            client = %line.client,
            orig_dst = %line.orig_dst,
            transport = line.transport,
            bytes_up = line.counts.up.load(Ordering::Relaxed),
            bytes_down = line.counts.down.load(Ordering::Relaxed),
            duration_ms = line.started.elapsed().as_millis() as u64,
            "flow"
        );
    }
}

impl Drop for FlowGuard {
    fn drop(&mut self) {
        if let Some(line) = self.line.take() {
            Self::write_line(&line);
        }
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

    #[test]
    fn a_flow_writes_one_line_with_what_its_handler_learnt() {
        let lines = crate::telemetry::capture(|| {
            let t = FlowTracker::new().scoped(Service::Https);
            let tls = tracing::info_span!("tls", sni = "a.example", action = "passthrough");
            let mut flow = t.open(
                Service::Https,
                ClientAddr("10.0.0.2:40000".parse().unwrap()),
                OrigDstAddr("10.0.0.9:443".parse().unwrap()),
                "tcp",
            );
            flow.within(&tls);
            flow.record("alpn", "h2");
            flow.counts().add_up(10);
            flow.counts().add_down(20);
            assert_eq!(t.active_for(Service::Https), 1);
            drop(flow);
            assert_eq!(t.active(), 0);
            // A counting-only flow writes nothing.
            drop(t.start());
        });
        let flows: Vec<&serde_json::Value> =
            lines.iter().filter(|l| l["message"] == "flow").collect();
        assert_eq!(flows.len(), 1, "{lines:?}");
        let l = flows[0];
        assert_eq!(l["service"], "https");
        assert_eq!(l["client"], "10.0.0.2:40000");
        assert_eq!(l["orig_dst"], "10.0.0.9:443");
        assert_eq!(l["transport"], "tcp");
        assert_eq!(l["bytes_up"], 10);
        assert_eq!(l["bytes_down"], 20);
        assert_eq!(l["sni"], "a.example", "the span it was written within");
        assert_eq!(l["action"], "passthrough");
        assert_eq!(l["alpn"], "h2", "what the handler recorded");
        assert!(l.get("duration_ms").is_some());
    }

    #[test]
    fn a_plugins_tags_are_one_object_on_the_line() {
        let lines = crate::telemetry::capture(|| {
            let flow = FlowTracker::new().open(
                Service::Plugin,
                ClientAddr("10.0.0.2:40000".parse().unwrap()),
                OrigDstAddr("10.0.0.9:1080".parse().unwrap()),
                "tcp",
            );
            flow.record("plugin", "socks5-observer");
            flow.tag("socks_target", "10.0.0.7:80");
            flow.tag("socks_version", "4");
            flow.tag("socks_version", "5");
            // A tag named like a daemon field stays inside `tags`.
            flow.tag("bytes_up", "lots");
        });
        let l = lines.iter().find(|l| l["message"] == "flow").unwrap();
        assert_eq!(l["service"], "plugin");
        assert_eq!(l["plugin"], "socks5-observer");
        assert_eq!(l["tags"]["socks_target"], "10.0.0.7:80", "{l}");
        assert_eq!(l["tags"]["socks_version"], "5", "the later value: {l}");
        assert_eq!(l["tags"]["bytes_up"], "lots");
        assert_eq!(l["bytes_up"], 0);
    }
}
