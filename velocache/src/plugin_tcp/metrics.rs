//! The plugin service's metrics (`velocache_plugin_…` once registered under the service
//! prefix): streams on claimed ports, by plugin and by how they ended. What each plugin call
//! costs is the runtime's (per plugin and hook).
use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use super::driver::End;
use crate::telemetry::metrics::MetricSet;

type Labels = Vec<(String, String)>;

/// Counters of the plugin service.
#[derive(Clone)]
pub struct Metrics {
    streams: Family<Labels, Counter>,
}

/// Metrics nobody exports (tests).
impl Default for Metrics {
    fn default() -> Self {
        Self::register(&mut Registry::default())
    }
}

impl Metrics {
    /// Metrics registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let mut m = MetricSet::new(registry);
        Metrics {
            streams: m.counters(
                "streams",
                "Streams on plugin-claimed ports, by plugin and end: closed (by the plugin or \
                 both sides), spliced (handed to the kernel at the plugin's word), fallback (the \
                 plugin failed; the stream went on without it), no_plugin (nobody claims the port \
                 any more), error",
            ),
        }
    }

    /// One stream of `plugin` ended as `end` says.
    pub fn ended(&self, plugin: &str, end: End) {
        self.streams
            .get_or_create(&vec![
                ("plugin".to_string(), plugin.to_string()),
                ("end".to_string(), end.name().to_string()),
            ])
            .inc();
    }

    /// Streams of `plugin` that ended as `end` says (tests, `stats`).
    pub fn count(&self, plugin: &str, end: End) -> u64 {
        self.streams
            .get_or_create(&vec![
                ("plugin".to_string(), plugin.to_string()),
                ("end".to_string(), end.name().to_string()),
            ])
            .get()
    }
}
