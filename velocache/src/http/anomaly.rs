//! Anomaly alerts: per origin, a learned baseline of latency and error ratio and the request
//! shapes it has been sent, and a line when the origin strays from them (`[anomaly]`).
//!
//! Finished requests enter through the `logging` hook, and only those that went to an origin
//! (the cache's hits and the gateway's own answers say nothing about it): the origin is the
//! original destination's address:port with the request's host; the sample is the time from
//! sending the request to its response head, whether it failed (no response head — refused,
//! reset, timed out — or a 5xx), its method and its path template (numeric, UUID and hex-hash
//! segments become `{n}`, `{uuid}`, `{hash}`). Each origin keeps two EWMAs per metric: a slow
//! one (the baseline) and a fast one (what it does now). Once the origin has answered
//! `warmup_requests` times, the fast one crossing the thresholds — latency past `latency_factor`
//! times the baseline and `latency_min_ms` above it; the error ratio `error_ratio_delta` above
//! it — or a method or template never seen, is an anomaly. A deviation is one anomaly until the
//! metric comes back; each leaves as a count in `velocache_http_anomalies_total{metric}` and,
//! at most once per origin and metric per `alert_interval_secs`, as one `anomaly` warning line
//! (`origin`, `host`, `metric`, `baseline`, `observed`, `suppressed`). State is bounded:
//! `max_origins` (the longest idle is forgotten) and `max_shapes_per_origin`.
use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use tracing::warn;

use super::{
    ctx::{Ctx, RequestEnd},
    phase::Phase,
};
use crate::{config::AnomalyConfig, origins::template::variable, telemetry::metrics::MetricSet};

/// Longest path template remembered (longer ones are cut: a shape, not a URL).
const MAX_TEMPLATE: usize = 256;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MetricLabel {
    metric: &'static str,
}

/// Which origin: where the request went, and the host it named.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct OriginKey {
    addr: SocketAddr,
    host: String,
}

/// One finished request, as the detector sees it.
#[derive(Debug, Clone)]
pub(super) struct Sample<'a> {
    /// Request to response head, ms; `None` when no response came.
    pub(super) latency_ms: Option<f64>,
    /// No response, or a 5xx.
    pub(super) error: bool,
    pub(super) method: &'a str,
    pub(super) path: &'a str,
}

/// What a deviation looked like.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Seen {
    /// A numeric metric: its baseline and the recent average.
    Value { baseline: f64, observed: f64 },
    /// A shape never seen: how many were known, and the new one.
    Shape { known: usize, observed: String },
}

/// One anomaly found.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Finding {
    pub(super) metric: &'static str,
    pub(super) seen: Seen,
    /// Whether it gets a log line (the rate limit allows it).
    pub(super) logged: bool,
    /// Anomalies of this origin and metric not logged since the last line.
    pub(super) suppressed: u64,
}

/// A slow and a fast exponentially weighted moving average of one metric.
#[derive(Debug, Default)]
struct Ewma {
    baseline: f64,
    recent: f64,
    /// The recent average is past the threshold (one anomaly until it comes back).
    deviating: bool,
    primed: bool,
}

impl Ewma {
    /// Take `x` in; the (baseline, recent) to compare, the baseline as it was before `x`.
    fn update(&mut self, x: f64, cfg: &AnomalyConfig) -> (f64, f64) {
        if !self.primed {
            self.primed = true;
            self.baseline = x;
            self.recent = x;
            return (x, x);
        }
        let before = self.baseline;
        self.recent += cfg.recent_alpha * (x - self.recent);
        self.baseline += cfg.baseline_alpha * (x - self.baseline);
        (before, self.recent)
    }
}

#[derive(Debug, Default)]
struct Limit {
    last: Option<Instant>,
    suppressed: u64,
}

/// What is known about one origin.
#[derive(Debug)]
struct OriginState {
    requests: u64,
    latency: Ewma,
    errors: Ewma,
    methods: HashSet<String>,
    templates: HashSet<String>,
    limits: HashMap<&'static str, Limit>,
    last_seen: Instant,
}

impl OriginState {
    fn new(now: Instant) -> OriginState {
        OriginState {
            requests: 0,
            latency: Ewma::default(),
            errors: Ewma::default(),
            methods: HashSet::new(),
            templates: HashSet::new(),
            limits: HashMap::new(),
            last_seen: now,
        }
    }

    /// Learn from `s`; the anomalies it shows.
    fn observe(&mut self, s: &Sample<'_>, now: Instant, cfg: &AnomalyConfig) -> Vec<Finding> {
        let warm = self.requests >= cfg.warmup_requests;
        self.requests += 1;
        self.last_seen = now;
        let mut found: Vec<(&'static str, Seen)> = Vec::new();
        if cfg.shapes {
            let room = self.methods.len() + self.templates.len() < cfg.max_shapes_per_origin;
            if !self.methods.contains(s.method) && room {
                if warm {
                    found.push((
                        "new_method",
                        Seen::Shape {
                            known: self.methods.len(),
                            observed: s.method.to_string(),
                        },
                    ));
                }
                self.methods.insert(s.method.to_string());
            }
            let template = path_template(s.path);
            let room = self.methods.len() + self.templates.len() < cfg.max_shapes_per_origin;
            if !self.templates.contains(&template) && room {
                if warm {
                    found.push((
                        "new_path",
                        Seen::Shape {
                            known: self.templates.len(),
                            observed: template.clone(),
                        },
                    ));
                }
                self.templates.insert(template);
            }
        }
        if let Some(ms) = s.latency_ms {
            let (baseline, recent) = self.latency.update(ms, cfg);
            let past = recent > cfg.latency_factor * baseline
                && recent - baseline >= cfg.latency_min_ms as f64;
            if let Some(seen) = edge(&mut self.latency.deviating, past, warm, baseline, recent) {
                found.push(("latency_ms", seen));
            }
        }
        let (baseline, recent) = self.errors.update(if s.error { 1.0 } else { 0.0 }, cfg);
        let past = recent - baseline > cfg.error_ratio_delta;
        if let Some(seen) = edge(&mut self.errors.deviating, past, warm, baseline, recent) {
            found.push(("error_ratio", seen));
        }
        found
            .into_iter()
            .map(|(metric, seen)| {
                let limit = self.limits.entry(metric).or_default();
                let logged = limit
                    .last
                    .is_none_or(|t| now.duration_since(t) >= cfg.alert_interval_secs.get());
                let suppressed = limit.suppressed;
                if logged {
                    limit.last = Some(now);
                    limit.suppressed = 0;
                } else {
                    limit.suppressed += 1;
                }
                Finding {
                    metric,
                    seen,
                    logged,
                    suppressed,
                }
            })
            .collect()
    }
}

/// A deviation starts (`Some`) when the metric crosses its threshold after warm-up; it ends
/// when the metric is back under it.
fn edge(deviating: &mut bool, past: bool, warm: bool, baseline: f64, recent: f64) -> Option<Seen> {
    let start = past && warm && !*deviating;
    *deviating = past && (warm || *deviating);
    start.then_some(Seen::Value {
        baseline,
        observed: recent,
    })
}

/// The shape of a path: the query dropped, and numeric, UUID and hex-hash segments (also after
/// an `algorithm:` prefix, as in `sha256:<hex>`) replaced by `{n}`, `{uuid}`, `{hash}` —
/// the same variables as ghost mode's templates (`origins::template::variable`).
pub fn path_template(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let mut out = String::with_capacity(path.len().min(MAX_TEMPLATE));
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        match seg.split_once(':') {
            Some((alg, rest)) if variable(rest).is_some() && !alg.is_empty() => {
                out.push_str(alg);
                out.push(':');
                out.push_str(variable(rest).unwrap_or(rest));
            }
            _ => out.push_str(variable(seg).unwrap_or(seg)),
        }
        if out.len() > MAX_TEMPLATE {
            let mut cut = MAX_TEMPLATE;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            break;
        }
    }
    out
}

/// Every origin's state, bounded.
struct Origins {
    map: HashMap<OriginKey, OriginState>,
}

/// The anomaly phase.
pub struct AnomalyPhase {
    cfg: AnomalyConfig,
    origins: Mutex<Origins>,
    anomalies: Family<MetricLabel, Counter>,
}

impl AnomalyPhase {
    /// Watch origins with `cfg`, counting in `registry` (`anomalies`).
    pub fn new(cfg: &AnomalyConfig, registry: &mut Registry) -> AnomalyPhase {
        let anomalies = MetricSet::new(registry).counters(
            "anomalies",
            "Origin anomalies found (metric: latency_ms, error_ratio, new_method, new_path)",
        );
        AnomalyPhase {
            cfg: cfg.clone(),
            origins: Mutex::new(Origins {
                map: HashMap::new(),
            }),
            anomalies,
        }
    }

    fn observe(&self, key: OriginKey, s: &Sample<'_>, now: Instant) -> Vec<Finding> {
        let mut origins = self.origins.lock();
        if !origins.map.contains_key(&key) && origins.map.len() >= self.cfg.max_origins {
            let idle = origins
                .map
                .iter()
                .min_by_key(|(_, st)| st.last_seen)
                .map(|(k, _)| k.clone());
            if let Some(idle) = idle {
                origins.map.remove(&idle);
            }
        }
        origins
            .map
            .entry(key)
            .or_insert_with(|| OriginState::new(now))
            .observe(s, now, &self.cfg)
    }
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

impl Phase for AnomalyPhase {
    fn name(&self) -> &str {
        "anomaly"
    }

    fn logging(&self, ctx: &Ctx, end: &RequestEnd) {
        let Some(sent) = ctx.timings.upstream_sent else {
            return;
        };
        let latency = ctx
            .timings
            .upstream_head
            .map(|h| h.saturating_duration_since(sent));
        let sample = Sample {
            latency_ms: latency.map(|d: Duration| d.as_secs_f64() * 1000.0),
            error: latency.is_none() || end.status >= 500,
            method: ctx.method.as_str(),
            path: &ctx.path,
        };
        let key = OriginKey {
            addr: ctx.conn.orig_dst.0,
            host: ctx.host.to_ascii_lowercase(),
        };
        let findings = self.observe(key.clone(), &sample, Instant::now());
        for f in findings {
            self.anomalies
                .get_or_create(&MetricLabel { metric: f.metric })
                .inc();
            if !f.logged {
                continue;
            }
            match f.seen {
                Seen::Value { baseline, observed } => {
                    let places = if f.metric == "error_ratio" { 3 } else { 1 };
                    warn!(
                        target: "velocache::http::anomaly",
                        service = ctx.conn.scheme.service_name(),
                        origin = %key.addr,
                        host = %key.host,
                        metric = f.metric,
                        baseline = round(baseline, places),
                        observed = round(observed, places),
                        suppressed = f.suppressed,
                        trace_id = %ctx.trace_id,
                        method = %ctx.method,
                        path = %ctx.path,
                        "anomaly"
                    );
                }
                Seen::Shape { known, observed } => {
                    warn!(
                        target: "velocache::http::anomaly",
                        service = ctx.conn.scheme.service_name(),
                        origin = %key.addr,
                        host = %key.host,
                        metric = f.metric,
                        baseline = known,
                        observed = %observed,
                        suppressed = f.suppressed,
                        trace_id = %ctx.trace_id,
                        method = %ctx.method,
                        path = %ctx.path,
                        "anomaly"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
