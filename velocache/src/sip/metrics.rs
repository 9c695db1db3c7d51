//! The SIP service's metrics (`velocache_sip_…` once registered under the service prefix).
use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::dialog::Outcome;

/// Counters and gauges of the observer.
#[derive(Clone, Default)]
pub struct Metrics {
    /// SIP messages parsed.
    pub messages: Counter,
    /// Messages that did not parse (forwarded untouched).
    pub malformed: Counter,
    /// Calls in progress.
    pub calls_active: Gauge,
    calls_ended: Family<Vec<(String, String)>, Counter>,
}

impl Metrics {
    /// Metrics registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        registry.register("messages", "SIP messages observed", m.messages.clone());
        registry.register(
            "malformed",
            "SIP messages that did not parse and were forwarded untouched",
            m.malformed.clone(),
        );
        registry.register("calls_active", "Calls in progress", m.calls_active.clone());
        registry.register(
            "calls_ended",
            "Calls ended, by outcome",
            m.calls_ended.clone(),
        );
        m
    }

    /// The counter of calls that ended with `outcome`.
    pub fn ended(&self, outcome: Outcome) -> Counter {
        self.calls_ended
            .get_or_create(&vec![("outcome".to_string(), outcome.name().to_string())])
            .clone()
    }
}
