//! `[anomaly]`: anomaly alerts — per origin, a learned baseline of latency and error ratio, and
//! the request shapes (methods, path templates) it has seen; see `http::anomaly`.
use serde::{Deserialize, Serialize};

use super::{Invalid, Secs};

/// `[anomaly]`
///
/// Each origin (address:port and host) gets a slow-moving average (EWMA) of its latency and
/// error ratio — the baseline — and a fast-moving one — what it does now. Once an origin has
/// answered `warmup_requests` times, the fast average straying from the baseline past the
/// thresholds below, or a request of a shape the origin has never seen, is an anomaly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalyConfig {
    /// Watch origins at all.
    pub enabled: bool,
    /// Requests an origin must have answered before anything about it is an anomaly (the
    /// baseline and its known shapes are learned until then).
    pub warmup_requests: u64,
    /// Weight of each new request in the baseline (0–1; small: a long memory).
    pub baseline_alpha: f64,
    /// Weight of each new request in the recent average compared with it (0–1, larger than
    /// `baseline_alpha`).
    pub recent_alpha: f64,
    /// Latency is anomalous when the recent average exceeds this many times the baseline…
    pub latency_factor: f64,
    /// …and exceeds it by at least this many milliseconds (ignores 1 ms becoming 4 ms).
    pub latency_min_ms: u64,
    /// The error ratio (connection failures, timeouts, 5xx) is anomalous when the recent
    /// ratio exceeds the baseline by this much (0–1).
    pub error_ratio_delta: f64,
    /// Report requests whose method or path template the origin has never been sent
    /// (numeric, UUID and hex-hash path segments count as variables).
    pub shapes: bool,
    /// Shapes remembered per origin; past it new shapes are neither learned nor reported.
    pub max_shapes_per_origin: usize,
    /// Origins watched at once; past it the one idle longest is forgotten.
    pub max_origins: usize,
    /// At most one `anomaly` line per origin and metric in this interval (the rest are
    /// counted in the metric and in the next line's `suppressed`).
    pub alert_interval_secs: Secs,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig {
            enabled: true,
            warmup_requests: 50,
            baseline_alpha: 0.02,
            recent_alpha: 0.3,
            latency_factor: 3.0,
            latency_min_ms: 100,
            error_ratio_delta: 0.3,
            shapes: true,
            max_shapes_per_origin: 1000,
            max_origins: 4096,
            alert_interval_secs: Secs(60),
        }
    }
}

impl AnomalyConfig {
    /// The `[anomaly]` checks.
    pub fn check(&self) -> Result<(), Invalid> {
        let share = |v: f64| v.is_finite() && v > 0.0 && v <= 1.0;
        if !share(self.baseline_alpha) {
            return Err(Invalid::new(
                "anomaly.baseline_alpha",
                "must be more than 0 and at most 1",
            ));
        }
        if !share(self.recent_alpha) || self.recent_alpha <= self.baseline_alpha {
            return Err(Invalid::new(
                "anomaly.recent_alpha",
                "must be at most 1 and more than anomaly.baseline_alpha",
            ));
        }
        if !self.latency_factor.is_finite() || self.latency_factor <= 1.0 {
            return Err(Invalid::new(
                "anomaly.latency_factor",
                "must be more than 1",
            ));
        }
        if !share(self.error_ratio_delta) {
            return Err(Invalid::new(
                "anomaly.error_ratio_delta",
                "must be more than 0 and at most 1",
            ));
        }
        if self.warmup_requests == 0 {
            return Err(Invalid::new(
                "anomaly.warmup_requests",
                "must be at least 1",
            ));
        }
        if self.max_origins == 0 {
            return Err(Invalid::new("anomaly.max_origins", "must be at least 1"));
        }
        self.alert_interval_secs
            .at_least_one("anomaly.alert_interval_secs")
    }
}
