//! The metrics registry's daemon-wide part: collectors that read live state on each scrape.
//!
//! Services register their own counters in the sub-registry `app` hands them
//! (`velocache_<service>_…`). This module adds what belongs to no single service, read at
//! scrape time so that it can never drift from the source:
//! - `velocache_datapath_packets_total{service,verdict}`: the kernel classifier's per-CPU
//!   counters, summed ([`DatapathCollector`]);
//! - `velocache_active_sessions{service}` and `velocache_flows_total{service}` from the
//!   [`FlowTracker`] ([`SessionsCollector`]);
//! - `velocache_process_*`: resident memory, CPU time, threads, open descriptors, start time
//!   ([`ProcessCollector`]);
//! - `velocache_rules`: rules in force ([`RulesCollector`]);
//! - `velocache_build_info{version}`.
//!
//! [`encode`] renders a registry as OpenMetrics text for `/metrics` (and for `stats`).
use std::{
    sync::{Arc, OnceLock},
    time::{SystemTime, UNIX_EPOCH},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
    },
    registry::Registry,
};
use velocache_common::{Service, Verdict};

use crate::{datapath::Counters, flow::FlowTracker, rules::Rules, telemetry::metrics::MetricSet};

/// The content type of [`encode`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Render `registry` as OpenMetrics text (ends with `# EOF`).
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, registry) {
        // Only a collector's own formatting can fail; say so in the output rather than serve
        // a truncated scrape silently.
        tracing::error!(error = %e, "encoding metrics failed");
        text.clear();
        text.push_str("# EOF\n");
    }
    text
}

/// The daemon-wide metrics: collectors over state that lives elsewhere.
pub struct DaemonMetrics;

impl DaemonMetrics {
    /// Register every daemon-wide collector in the top-level registry; `datapath` is filled
    /// once the kernel side is up.
    pub fn register(
        registry: &mut Registry,
        flows: FlowTracker,
        datapath: Arc<OnceLock<Counters>>,
        rules: Rules,
    ) -> DaemonMetrics {
        let mut m = MetricSet::new(registry);
        m.info(
            "build",
            "VeloCache build",
            vec![("version", env!("CARGO_PKG_VERSION"))],
        );
        m.collector(Box::new(SessionsCollector { flows }));
        m.collector(Box::new(DatapathCollector { counters: datapath }));
        m.collector(Box::new(ProcessCollector::new()));
        m.collector(Box::new(RulesCollector { rules }));
        DaemonMetrics
    }
}

/// Labels of `velocache_config_reloads_total`.
pub(crate) type ResultLabel = Vec<(String, String)>;

/// Counters of the control plane itself.
#[derive(Clone, Default)]
pub struct PlaneMetrics {
    pub(crate) reloads: Family<ResultLabel, Counter>,
    pub(crate) warmup_urls: Family<ResultLabel, Counter>,
}

impl PlaneMetrics {
    /// Register in the top-level registry (`velocache_config_reloads_total{result}`,
    /// `velocache_warmup_urls_total{result}`).
    pub fn register(registry: &mut Registry) -> Self {
        let mut m = MetricSet::new(registry);
        PlaneMetrics {
            reloads: m.counters(
                "config_reloads",
                "Configuration and rules reloads (SIGHUP, service reload), by result",
            ),
            warmup_urls: m.counters("warmup_urls", "Cache warm-up URLs fetched, by result"),
        }
    }
}

/// Flows in progress and flows handled, per service.
pub struct SessionsCollector {
    flows: FlowTracker,
}

impl std::fmt::Debug for SessionsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionsCollector")
            .field("active", &self.flows.active())
            .finish()
    }
}

impl Collector for SessionsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut active = encoder.encode_descriptor(
            "active_sessions",
            "Flows (connections, UDP sessions) the daemon is handling now",
            None,
            MetricType::Gauge,
        )?;
        for service in Service::ALL {
            let n = i64::try_from(self.flows.active_for(service)).unwrap_or(i64::MAX);
            ConstGauge::new(n).encode(active.encode_family(&[("service", service.name())])?)?;
        }
        let mut started = encoder.encode_descriptor(
            "flows",
            "Flows the daemon has handled since start",
            None,
            MetricType::Counter,
        )?;
        for service in Service::ALL {
            ConstCounter::new(self.flows.started_for(service))
                .encode(started.encode_family(&[("service", service.name())])?)?;
        }
        Ok(())
    }
}

/// The kernel classifier's packet counters, once the datapath is up.
pub struct DatapathCollector {
    counters: Arc<OnceLock<Counters>>,
}

impl std::fmt::Debug for DatapathCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatapathCollector")
            .field("running", &self.counters.get().is_some())
            .finish()
    }
}

impl Collector for DatapathCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(counters) = self.counters.get() else {
            return Ok(());
        };
        let snapshot = match counters.snapshot() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "reading kernel counters for metrics failed");
                return Ok(());
            }
        };
        let mut family = encoder.encode_descriptor(
            "datapath_packets",
            "Packets of configured service ports seen by the LAN classifier, by what it did \
             (steered_* = to the daemon, passed_* = fail-open, bypassed_* = bypass lists)",
            None,
            MetricType::Counter,
        )?;
        for service in Service::ALL {
            for verdict in Verdict::ALL {
                ConstCounter::new(snapshot.get(service, verdict)).encode(family.encode_family(
                    &[("service", service.name()), ("verdict", verdict.name())],
                )?)?;
            }
        }
        Ok(())
    }
}

/// Rules in force.
#[derive(Clone)]
pub struct RulesCollector {
    rules: Rules,
}

impl std::fmt::Debug for RulesCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RulesCollector")
    }
}

impl Collector for RulesCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let n = i64::try_from(self.rules.current().rules.len()).unwrap_or(i64::MAX);
        let m = encoder.encode_descriptor("rules", "Rules in force", None, MetricType::Gauge)?;
        ConstGauge::new(n).encode(m)
    }
}

/// Process gauges from `/proc/self` and `getrusage`.
#[derive(Debug)]
pub struct ProcessCollector {
    start_time: f64,
}

impl ProcessCollector {
    /// Collector for this process; start time is now.
    pub fn new() -> Self {
        let start_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        ProcessCollector { start_time }
    }
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self::new()
    }
}

/// `Name:   value kB` lines of `/proc/self/status`.
fn status_field(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let gauge = |encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: f64| {
            let m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(v).encode(m)
        };
        if let Some(kib) = status_field(&status, "VmRSS") {
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory",
                (kib * 1024) as f64,
            )?;
        }
        if let Some(n) = status_field(&status, "Threads") {
            gauge(&mut encoder, "process_threads", "OS threads", n as f64)?;
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Open file descriptors",
                dir.count() as f64,
            )?;
        }
        gauge(
            &mut encoder,
            "process_start_time_seconds",
            "Start time, seconds since the Unix epoch",
            self.start_time,
        )?;
        if let Ok(usage) = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        {
            let secs = |t: nix::sys::time::TimeVal| {
                t.tv_sec() as f64 + f64::from(i32::try_from(t.tv_usec()).unwrap_or(0)) / 1e6
            };
            let m = encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(secs(usage.user_time()) + secs(usage.system_time())).encode(m)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;
    use crate::control::exposition;

    #[test]
    fn sessions_and_process_gauges_are_exported() {
        let flows = FlowTracker::new();
        let _g = flows.scoped(Service::Sip).start();
        let mut registry = Registry::with_prefix("velocache");
        DaemonMetrics::register(
            &mut registry,
            flows,
            Arc::new(OnceLock::new()),
            Rules::empty(),
        );
        let c: Counter = Counter::default();
        c.inc();
        registry
            .sub_registry_with_prefix("dns")
            .register("hits", "hits", c);
        let text = encode(&registry);
        let samples = exposition::parse(&text).unwrap();
        let get = |name: &str, label: Option<(&str, &str)>| {
            samples
                .iter()
                .find(|s| {
                    s.sample.name == name
                        && label.is_none_or(|(k, v)| {
                            s.sample.labels.get(k).map(String::as_str) == Some(v)
                        })
                })
                .map(|s| s.sample.value)
                .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
        };
        assert_eq!(
            get("velocache_active_sessions", Some(("service", "sip"))),
            1.0
        );
        assert_eq!(
            get("velocache_active_sessions", Some(("service", "dns"))),
            0.0
        );
        assert_eq!(get("velocache_flows_total", Some(("service", "sip"))), 1.0);
        assert_eq!(get("velocache_dns_hits_total", None), 1.0);
        assert!(get("velocache_process_resident_memory_bytes", None) > 0.0);
        assert!(get("velocache_process_open_fds", None) > 0.0);
        assert_eq!(get("velocache_rules", None), 0.0);
        assert_eq!(
            get(
                "velocache_build_info",
                Some(("version", env!("CARGO_PKG_VERSION")))
            ),
            1.0
        );
        // No datapath yet: no kernel counters rather than zeros that claim a datapath.
        assert!(!text.contains("velocache_datapath_packets"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
