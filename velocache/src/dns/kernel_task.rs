//! Starting kernel answers with the DNS service, and what runs beside them: the sweep, the
//! clear on a rules change, the periodic summary lines and the metrics.
//!
//! [`start`] claims the XDP `Dns` slot on `[datapath] lan_interfaces` (attached when the kernel
//! side starts, like every slot), hands the forwarder the [`KernelAnswers`] over its maps, and
//! spawns [`run`], which holds only a weak reference and ends when the daemon drops the
//! service. Every second expired entries leave the map; on a rules swap every entry leaves at
//! once; every `[daemon] stats_interval_secs` (60 s when that is 0) the names the kernel answered
//! are logged as one `query` line each with `cache = "kernel_hit"` and `count`, and a
//! `kernel counters` line when the totals changed. `/metrics` reads the per-CPU counters at
//! every scrape (`velocache_dns_answers_total{cache="kernel_hit"}` and friends), so `velocache
//! stats` shows them under the DNS service.
use std::{
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use hickory_proto::rr::RecordType;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use velocache_common::{dns::DnsCounter, xdp::XdpSlot};

use super::{
    Forwarder,
    kernel::{KernelAnswers, KernelAnswersError, KernelSettings},
};
use crate::{service::ServiceContext, telemetry::metrics::MetricSet};

/// How often expired entries leave the map.
const SWEEP: Duration = Duration::from_secs(1);

/// Claim the slot and give `forwarder` its kernel answers; errors are logged and the service
/// runs without them (every query then reaches the daemon, as before).
pub fn start(ctx: &ServiceContext, forwarder: &Forwarder, registry: &mut Registry) {
    let config = &ctx.config.dns;
    let interfaces = ctx.config.datapath.lan_interfaces.clone();
    if interfaces.is_empty() {
        tracing::warn!(
            service = "dns",
            "kernel_answers: no [datapath] lan_interfaces; every query is answered by the daemon"
        );
        return;
    }
    let settings = KernelSettings {
        min_hits: config.kernel_min_hits,
        prefetch_percent: config
            .prefetch
            .then_some(u32::from(config.prefetch_percent)),
    };
    let kernel = ctx
        .xdp
        .claim(XdpSlot::Dns, &interfaces)
        .map_err(KernelAnswersError::from)
        .and_then(|maps| {
            KernelAnswers::new(
                maps,
                &interfaces,
                settings,
                ctx.rules.clone(),
                ctx.steering.clone(),
            )
        });
    let kernel = match kernel {
        Ok(k) => Arc::new(k),
        Err(e) => {
            tracing::error!(service = "dns", error = %e, "kernel DNS answers unavailable; the daemon answers every query");
            return;
        }
    };
    kernel.set_plugins(ctx.plugins.clone());
    forwarder.set_kernel(kernel.clone());
    MetricSet::new(registry).collector(Box::new(KernelCollector {
        kernel: Arc::downgrade(&kernel),
    }));
    let every = match ctx.config.daemon.stats_interval_secs.0 {
        0 => Duration::from_secs(60),
        _ => ctx.config.daemon.stats_interval_secs.get(),
    };
    tracing::info!(service = "dns", interfaces = ?interfaces, min_hits = settings.min_hits, "kernel DNS answers on");
    tokio::spawn(run(Arc::downgrade(&kernel), every, ctx.admin.live()));
}

/// The sweep, the clear on a rules change and the summaries, while the service lives.
async fn run(kernel: Weak<KernelAnswers>, every: Duration, live: Option<crate::live::Live>) {
    let Some(mut rules) = kernel.upgrade().map(|k| k.rules().subscribe()) else {
        return;
    };
    let mut sweep = tokio::time::interval(SWEEP);
    let mut summary = tokio::time::interval(every);
    summary.tick().await;
    let mut last = (0, 0, 0);
    loop {
        tokio::select! {
            changed = rules.changed() => {
                if changed.is_err() {
                    return;
                }
                let Some(k) = kernel.upgrade() else { return };
                k.clear();
                tracing::info!(service = "dns", "rules changed: kernel DNS answers cleared");
            }
            _ = sweep.tick() => {
                let Some(k) = kernel.upgrade() else { return };
                k.sweep(Instant::now());
            }
            _ = summary.tick() => {
                let Some(k) = kernel.upgrade() else { return };
                log_summaries(&k, every, &mut last, live.as_ref());
            }
        }
    }
}

fn log_summaries(
    k: &KernelAnswers,
    every: Duration,
    last: &mut (u64, u64, u64),
    live: Option<&crate::live::Live>,
) {
    for s in k.summaries() {
        if let Some(live) = live {
            // The kernel does not say which client asked: the summary is the gateway's.
            live.publish(crate::live::Record {
                service: crate::live::kind::DNS.into(),
                host: s.qname.clone(),
                what: RecordType::from(s.qtype).to_string(),
                cache: "kernel_hit".into(),
                count: s.count,
                detail: vec![("interval_secs".into(), every.as_secs().to_string())],
                ..crate::live::Record::default()
            });
        }
        tracing::debug!(
            service = "dns",
            qname = %s.qname,
            qtype = %RecordType::from(s.qtype),
            cache = "kernel_hit",
            count = s.count,
            interval_secs = every.as_secs(),
            "query"
        );
    }
    let now = (
        k.counter(DnsCounter::Answered),
        k.counter(DnsCounter::Expired),
        k.counter(DnsCounter::Failed),
    );
    if now != *last {
        tracing::info!(
            service = "dns",
            kernel_answered = now.0,
            kernel_expired = now.1,
            kernel_failed = now.2,
            kernel_entries = k.entries(),
            "kernel counters"
        );
        *last = now;
    }
}

/// The kernel's counters at every scrape.
struct KernelCollector {
    kernel: Weak<KernelAnswers>,
}

impl std::fmt::Debug for KernelCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KernelCollector")
    }
}

impl Collector for KernelCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(k) = self.kernel.upgrade() else {
            return Ok(());
        };
        {
            let mut answers = encoder.encode_descriptor(
                "answers",
                "Answers sent without the daemon, by where they came from (kernel_hit: XDP)",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(k.counter(DnsCounter::Answered))
                .encode(answers.encode_family(&[("cache", "kernel_hit")])?)?;
        }
        let counters = [
            (
                "kernel_expired",
                "Queries the kernel found an entry for past its freshness (left to the daemon)",
                DnsCounter::Expired,
            ),
            (
                "kernel_failed",
                "Kernel answers that could not be written (frame not resizable)",
                DnsCounter::Failed,
            ),
        ];
        for (name, help, c) in counters {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(k.counter(c)).encode(metric)?;
        }
        let metric = encoder.encode_descriptor(
            "kernel_entries",
            "Answers the kernel holds",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::try_from(k.entries()).unwrap_or(i64::MAX)).encode(metric)?;
        Ok(())
    }
}
