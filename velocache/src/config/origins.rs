//! `[origins]`: how the gateway watches the origins it fetches from (passive health, circuit
//! breaker, active checks) and what it keeps to answer for them when they fail (ghost mode's
//! learned store). The knobs and their defaults follow Envoy's outlier detection
//! (`consecutive_5xx` 5, `base_ejection_time` 30 s, `interval` 10 s) and resilience4j's circuit
//! breaker (`failureRateThreshold` 50 %, `permittedNumberOfCallsInHalfOpenState`), scaled down
//! for a gateway that sees few requests per origin.
use serde::{Deserialize, Serialize};

use super::{Invalid, Millis, Secs};

/// `[origins]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OriginsConfig {
    /// Open a circuit breaker per origin (address:port) that fails; off: every request goes to
    /// the origin whatever its health (health is still watched and shown).
    pub breaker: bool,
    /// The sliding window over which error ratios are computed.
    pub window_secs: Secs,
    /// The breaker opens when at least this percentage of the window's requests failed…
    pub failure_percent: u8,
    /// …over at least this many requests in the window (fewer say nothing).
    pub min_requests: u32,
    /// …or after this many failures in a row, whatever the window says.
    pub consecutive_failures: u32,
    /// An open breaker refuses requests for this long, then lets probes through (half-open).
    pub open_ms: Millis,
    /// Probe requests let through while half-open; this many successes close the breaker, one
    /// failure opens it again.
    pub half_open_probes: u32,
    /// Origins tracked at once; the least recently used beyond it are forgotten.
    pub max_origins: usize,
    /// An active check (`health_check` in a rule) that gets no answer within this long failed.
    pub health_check_timeout_ms: Millis,
    /// Ghost mode's learned store: responses kept at most.
    pub ghost_max_entries: u64,
    /// Ghost mode's learned store: bytes (heads and bodies) kept at most.
    pub ghost_max_bytes: u64,
    /// Ghost mode learns only responses whose body is at most this large.
    pub ghost_max_body_bytes: u64,
}

impl Default for OriginsConfig {
    fn default() -> Self {
        OriginsConfig {
            breaker: true,
            window_secs: Secs(10),
            failure_percent: 50,
            min_requests: 20,
            consecutive_failures: 5,
            open_ms: Millis(30_000),
            half_open_probes: 3,
            max_origins: 4096,
            health_check_timeout_ms: Millis(2_000),
            ghost_max_entries: 10_000,
            ghost_max_bytes: 64 << 20,
            ghost_max_body_bytes: 1 << 20,
        }
    }
}

impl OriginsConfig {
    /// The `[origins]` checks.
    pub fn check(&self) -> Result<(), Invalid> {
        self.window_secs.at_least_one("origins.window_secs")?;
        self.open_ms.at_least_one("origins.open_ms")?;
        self.health_check_timeout_ms
            .at_least_one("origins.health_check_timeout_ms")?;
        if !(1..=100).contains(&self.failure_percent) {
            return Err(Invalid::new("origins.failure_percent", "must be 1..=100"));
        }
        for (key, v) in [
            ("origins.min_requests", self.min_requests),
            ("origins.consecutive_failures", self.consecutive_failures),
            ("origins.half_open_probes", self.half_open_probes),
        ] {
            if v == 0 {
                return Err(Invalid::new(key, "must be at least 1"));
            }
        }
        if self.max_origins == 0 {
            return Err(Invalid::new("origins.max_origins", "must be at least 1"));
        }
        if self.ghost_max_body_bytes > self.ghost_max_bytes {
            return Err(Invalid::new(
                "origins.ghost_max_body_bytes",
                "must not exceed origins.ghost_max_bytes",
            ));
        }
        Ok(())
    }
}
