//! The origins' metrics (`velocache_origins_*`): counters bumped where things happen (breaker
//! transitions by new state, refused requests), and a collector that reads every tracked
//! origin at scrape time — state, error ratio, latency, requests, failures — so the numbers
//! can never drift from what `velocache origins` shows.
use std::sync::Weak;

use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
    },
    registry::Registry,
};

use super::{Origins, State};
use crate::telemetry::metrics::MetricSet;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToLabel {
    to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// Counters bumped as things happen.
pub(super) struct Counters {
    transitions: Family<ToLabel, Counter>,
    pub(super) rejected: Counter,
    ghost_answers: Family<KindLabel, Counter>,
    pub(super) ghost_learned: Counter,
}

impl Counters {
    pub(super) fn register(registry: &mut Registry) -> Counters {
        let mut m = MetricSet::new(registry);
        Counters {
            transitions: m.counters(
                "breaker_transitions",
                "Circuit breaker state changes, by the state entered",
            ),
            rejected: m.counter(
                "rejected",
                "Requests an open breaker kept from their origin",
            ),
            ghost_answers: m.counters(
                "ghost_answers",
                "Answers from ghost mode's learned store for failed origins (ghost, ghost-nearest)",
            ),
            ghost_learned: m.counter(
                "ghost_learned",
                "Responses ghost mode learned (or relearned)",
            ),
        }
    }

    pub(super) fn ghost_answer(&self, kind: &'static str) {
        self.ghost_answers.get_or_create(&KindLabel { kind }).inc();
    }

    pub(super) fn transition(&self, to: State) {
        self.transitions
            .get_or_create(&ToLabel { to: to.as_str() })
            .inc();
    }
}

/// Every origin's state at scrape time.
#[derive(Debug)]
pub(super) struct Collector {
    origins: Weak<Origins>,
}

impl Collector {
    pub(super) fn new(origins: Weak<Origins>) -> Collector {
        Collector { origins }
    }
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(origins) = self.origins.upgrade() else {
            return Ok(());
        };
        let (entries, bytes) = origins.ghost.usage();
        let m = encoder.encode_descriptor(
            "ghost_entries",
            "Responses held by ghost mode's learned store",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::try_from(entries).unwrap_or(i64::MAX)).encode(m)?;
        let m = encoder.encode_descriptor(
            "ghost_bytes",
            "Bytes held by ghost mode's learned store",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::try_from(bytes).unwrap_or(i64::MAX)).encode(m)?;
        let report = origins.report();
        let label = |o: &crate::admin::api::OriginView| {
            [
                ("origin", o.origin.clone()),
                ("host", o.hosts.first().cloned().unwrap_or_default()),
            ]
        };
        let mut state = encoder.encode_descriptor(
            "state",
            "Circuit breaker per origin: 0 closed, 1 half-open, 2 open",
            None,
            MetricType::Gauge,
        )?;
        for o in &report.origins {
            let v = match o.state.as_str() {
                "open" => State::Open,
                "half_open" => State::HalfOpen,
                _ => State::Closed,
            };
            ConstGauge::new(v.gauge()).encode(state.encode_family(&label(o))?)?;
        }
        let mut ratio = encoder.encode_descriptor(
            "error_ratio",
            "Failed requests per request over the window, per origin",
            None,
            MetricType::Gauge,
        )?;
        for o in &report.origins {
            ConstGauge::new(o.error_ratio).encode(ratio.encode_family(&label(o))?)?;
        }
        let mut latency = encoder.encode_descriptor(
            "latency_ms",
            "Time to the response head per origin, averaged (EWMA), milliseconds",
            None,
            MetricType::Gauge,
        )?;
        for o in report.origins.iter().filter(|o| o.latency_ms.is_some()) {
            ConstGauge::new(o.latency_ms.unwrap_or(0.0))
                .encode(latency.encode_family(&label(o))?)?;
        }
        let mut requests = encoder.encode_descriptor(
            "requests",
            "Requests sent to each origin",
            None,
            MetricType::Counter,
        )?;
        for o in &report.origins {
            ConstCounter::new(o.requests).encode(requests.encode_family(&label(o))?)?;
        }
        let mut failures = encoder.encode_descriptor(
            "failures",
            "Requests to each origin that failed (refused, reset, closed, timed out, 5xx)",
            None,
            MetricType::Counter,
        )?;
        for o in &report.origins {
            ConstCounter::new(o.failures).encode(failures.encode_family(&label(o))?)?;
        }
        let mut up = encoder.encode_descriptor(
            "health_check_up",
            "Whether each checked origin's last active health check succeeded",
            None,
            MetricType::Gauge,
        )?;
        for o in &report.origins {
            if let Some(up_now) = o.health_check.as_ref().and_then(|c| c.up) {
                ConstGauge::new(i64::from(up_now)).encode(up.encode_family(&label(o))?)?;
            }
        }
        Ok(())
    }
}
