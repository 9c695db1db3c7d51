//! Metrics per plugin and hook: `velocache_plugin_calls_total{plugin,hook}`,
//! `velocache_plugin_errors_total{plugin,hook,reason}` and the
//! `velocache_plugin_call_seconds{plugin,hook}` histogram.
//!
//! The families are registered once per daemon ([`PluginMetrics::register`]); each loaded
//! plugin takes its per-hook handles when it loads ([`PluginMetrics::hook`]), so a call only
//! touches atomics — no label set is built or hashed on the hot path. The same counters answer
//! `velocache plugins ls`.
use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

use super::manifest::Hook;
use crate::telemetry::metrics::MetricSet;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    plugin: String,
    hook: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    plugin: String,
    hook: &'static str,
    reason: &'static str,
}

/// 1 µs to ~33 ms, doubling: a no-op call is a few µs, a call at its budget some ms.
fn call_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1e-6, 2.0, 16,
    ))
}

/// The plugin metric families.
#[derive(Clone)]
pub struct PluginMetrics {
    calls: Family<HookLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    seconds: Family<HookLabels, Histogram, fn() -> Histogram>,
}

impl PluginMetrics {
    /// Register the families in `registry` (the daemon's `plugin` sub-registry).
    pub fn register(registry: &mut Registry) -> PluginMetrics {
        let mut set = MetricSet::new(registry);
        PluginMetrics {
            calls: set.counters("calls", "Plugin hook calls, by plugin and hook"),
            errors: set.counters(
                "errors",
                "Plugin hook calls that failed (trap, time, memory, error), by plugin and hook",
            ),
            seconds: set.histograms(
                "call_seconds",
                "Time of one plugin hook call, by plugin and hook",
                call_buckets,
            ),
        }
    }

    /// The handles of `plugin`'s `hook`.
    pub fn hook(&self, plugin: &str, hook: Hook) -> HookMetrics {
        let labels = HookLabels {
            plugin: plugin.to_string(),
            hook: hook.name(),
        };
        HookMetrics {
            calls: self.calls.get_or_create(&labels).clone(),
            seconds: self.seconds.get_or_create(&labels).clone(),
            errors: self.errors.clone(),
            plugin: plugin.to_string(),
            hook: hook.name(),
            failed: Counter::default(),
        }
    }
}

/// One plugin hook's metrics.
#[derive(Clone)]
pub struct HookMetrics {
    calls: Counter,
    seconds: Histogram,
    errors: Family<ErrorLabels, Counter>,
    plugin: String,
    hook: &'static str,
    /// Every failure, whatever its reason (for `plugins ls`).
    failed: Counter,
}

impl HookMetrics {
    /// A call took `took`.
    pub fn call(&self, took: Duration) {
        self.calls.inc();
        self.seconds.observe(took.as_secs_f64());
    }

    /// A call failed for `reason`.
    pub fn error(&self, reason: &'static str) {
        self.failed.inc();
        self.errors
            .get_or_create(&ErrorLabels {
                plugin: self.plugin.clone(),
                hook: self.hook,
                reason,
            })
            .inc();
    }

    /// Calls so far (this plugin's life; the metric counts across reloads).
    pub fn calls(&self) -> u64 {
        self.calls.get()
    }

    /// Failures so far.
    pub fn errors(&self) -> u64 {
        self.failed.get()
    }
}
