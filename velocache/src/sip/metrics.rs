//! The SIP service's metrics (`velocache_sip_…` once registered under the service prefix).
use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::dialog::Outcome;
use crate::{rtp::FlowStats, telemetry::metrics::MetricSet};

type Labels = Vec<(String, String)>;

/// Counters and gauges of the observer.
#[derive(Clone)]
pub struct Metrics {
    /// SIP messages parsed.
    pub messages: Counter,
    /// Messages that did not parse (forwarded untouched).
    pub malformed: Counter,
    /// Calls in progress.
    pub calls_active: Gauge,
    calls_ended: Family<Labels, Counter>,
    /// RTP/RTCP flows installed in the kernel fast path now.
    rtp_flows_active: Gauge,
    /// RTP packets of ended streams, by direction (`up`: client → far end).
    rtp_packets: Family<Labels, Counter>,
    /// RTP packets lost (RFC 3550) in ended streams, by direction.
    rtp_lost: Family<Labels, Counter>,
    /// RTP streams ended, by direction.
    rtp_streams: Family<Labels, Counter>,
}

/// Metrics nobody exports (the fuzz targets' observer).
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
            messages: m.counter("messages", "SIP messages observed"),
            malformed: m.counter(
                "malformed",
                "SIP messages that did not parse and were forwarded untouched",
            ),
            calls_active: m.gauge("calls_active", "Calls in progress"),
            calls_ended: m.counters("calls_ended", "Calls ended, by outcome"),
            rtp_flows_active: m.gauge(
                "rtp_flows_active",
                "RTP and RTCP flows relayed by the kernel fast path now",
            ),
            rtp_streams: m.counters("rtp_streams", "RTP streams ended, by direction"),
            rtp_packets: m.counters("rtp_packets", "RTP packets of ended streams, by direction"),
            rtp_lost: m.counters(
                "rtp_lost_packets",
                "RTP packets lost in ended streams (RFC 3550), by direction",
            ),
        }
    }

    /// How many flows the fast path relays now.
    pub fn set_flows(&self, n: usize) {
        self.rtp_flows_active.set(n as i64);
    }

    /// Count an ended RTP stream's packets and losses.
    pub fn stream_ended(&self, up: bool, s: &FlowStats) {
        let label = vec![(
            "direction".to_string(),
            if up { "up" } else { "down" }.to_string(),
        )];
        self.rtp_streams.get_or_create(&label).inc();
        self.rtp_packets
            .get_or_create(&label)
            .inc_by(s.counters.packets);
        self.rtp_lost.get_or_create(&label).inc_by(s.quality.lost());
    }

    /// The counter of calls that ended with `outcome`.
    pub fn ended(&self, outcome: Outcome) -> Counter {
        self.calls_ended
            .get_or_create(&vec![("outcome".to_string(), outcome.name().to_string())])
            .clone()
    }
}
