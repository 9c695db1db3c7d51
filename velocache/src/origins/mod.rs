//! Origins: the health of every origin the gateway fetches from, and the circuit breaker that
//! stops sending requests to one that fails.
//!
//! An origin is an address and port (an original destination), with the host names requests to
//! it carried. The HTTP proxy's fetcher asks [`Origins::admit`] before each request: an open
//! breaker refuses at once ([`Refused`], which the proxy turns into a cached, ghost or fast
//! 503 answer); otherwise it gets a [`Ticket`] and hands it back with the request's [`Outcome`]
//! (a response head below 500 is a success; refused, reset, closed without a response, timed
//! out or 5xx are failures), which feeds the origin's [`Health`] — a sliding window, failures in
//! a row, latency — and its [`Breaker`]. Rules with `health_check = { path, interval }` add
//! active checks of the origins they name (`check`). State changes leave as one log line each
//! (`breaker state changed`) and counters; the whole picture leaves through
//! [`OriginsAdmin`] (`velocache origins`) and the `velocache_origins_*` metrics (`metrics`).
//!
//! Nothing here knows HTTP's proxy: the proxy classifies its own errors into [`Failure`]s.
//!
//! # Layout
//! - `health`: the passive signals of one origin; `breaker`: its state machine (both pure).
//! - `check`: active checks; `metrics`: the scrape-time collector.
//! - `ghost`, `template`: ghost mode's learned store and its path templates.

mod breaker;
mod check;
pub mod ghost;
mod health;
mod metrics;
pub mod template;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use parking_lot::{Mutex, RwLock};
use prometheus_client::registry::Registry;
use tracing::{info, warn};

pub use breaker::{Breaker, BreakerSettings, Pass, State, Transition};
pub use check::{io_failure, spawn_checks};
pub use health::{Failure, Health, Outcome};

use crate::{
    admin::{
        OriginsAdmin,
        api::{OriginView, OriginsReport},
    },
    config::OriginsConfig,
};

/// Host names remembered per origin.
const MAX_HOSTS: usize = 4;

/// A request the breaker refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The origin.
    pub origin: SocketAddr,
    /// A host name it serves, if one is known.
    pub host: Option<String>,
    /// Why its breaker is open.
    pub reason: String,
    /// When it will let a probe through.
    pub retry_after: Duration,
}

/// What a rule's active check saw last.
#[derive(Debug, Clone)]
pub(crate) struct CheckState {
    pub(crate) rule: String,
    pub(crate) path: String,
    pub(crate) interval: Duration,
    pub(crate) next_due: Instant,
    pub(crate) in_flight: bool,
    pub(crate) up: Option<bool>,
    pub(crate) last: Option<String>,
    pub(crate) checks: u64,
}

struct EntryState {
    hosts: Vec<String>,
    health: Health,
    breaker: Breaker,
    rejected: u64,
    transitions: u64,
    check: Option<CheckState>,
}

/// One origin.
struct Entry {
    addr: SocketAddr,
    /// Milliseconds since the registry's epoch when last used (for forgetting the oldest).
    last_used: AtomicU64,
    state: Mutex<EntryState>,
}

/// Every origin's health and breaker.
pub struct Origins {
    breaker: BreakerSettings,
    window: Duration,
    max_origins: usize,
    check_timeout: Duration,
    epoch: Instant,
    map: RwLock<HashMap<SocketAddr, Arc<Entry>>>,
    metrics: metrics::Counters,
    /// Ghost mode's learned store.
    pub ghost: ghost::GhostStore,
}

impl std::fmt::Debug for Origins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origins")
            .field("tracked", &self.map.read().len())
            .finish()
    }
}

/// A request let through, to be handed back with its outcome ([`Ticket::finish`]). Dropped
/// without one (the client went away, its own body was bad), it says nothing about the origin.
pub struct Ticket {
    origins: Arc<Origins>,
    entry: Arc<Entry>,
    pass: Pass,
    started: Instant,
    done: bool,
}

impl Ticket {
    /// The request ended with `outcome` (for a success, now is when its response head came).
    pub fn finish(mut self, outcome: Outcome) {
        self.done = true;
        let now = Instant::now();
        let latency = now.saturating_duration_since(self.started);
        self.origins
            .record(&self.entry, Some(self.pass), outcome, Some(latency), now);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done {
            self.entry.state.lock().breaker.release(self.pass);
        }
    }
}

impl Origins {
    /// The registry `[origins]` describes, its metrics registered in `registry`.
    pub fn new(cfg: &OriginsConfig, registry: &mut Registry) -> Arc<Origins> {
        let origins = Arc::new(Origins {
            breaker: BreakerSettings {
                enabled: cfg.breaker,
                failure_percent: cfg.failure_percent,
                min_requests: cfg.min_requests,
                consecutive_failures: cfg.consecutive_failures,
                open_for: cfg.open_ms.get(),
                half_open_probes: cfg.half_open_probes,
            },
            window: cfg.window_secs.get(),
            max_origins: cfg.max_origins,
            check_timeout: cfg.health_check_timeout_ms.get(),
            epoch: Instant::now(),
            map: RwLock::new(HashMap::new()),
            metrics: metrics::Counters::register(registry),
            ghost: ghost::GhostStore::new(cfg),
        });
        registry.register_collector(Box::new(metrics::Collector::new(Arc::downgrade(&origins))));
        origins
    }

    /// A registry with `cfg` and metrics nobody reads (tests, tools).
    pub fn unregistered(cfg: &OriginsConfig) -> Arc<Origins> {
        Origins::new(cfg, &mut Registry::default())
    }

    fn entry(&self, addr: SocketAddr) -> Arc<Entry> {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        if let Some(e) = self.map.read().get(&addr) {
            e.last_used.store(now_ms, Ordering::Relaxed);
            return e.clone();
        }
        let mut map = self.map.write();
        if !map.contains_key(&addr) && map.len() >= self.max_origins {
            // Forget the least recently used origin (rare: only past `max_origins`).
            let oldest = map
                .iter()
                .min_by_key(|(_, e)| e.last_used.load(Ordering::Relaxed))
                .map(|(a, _)| *a);
            if let Some(a) = oldest {
                map.remove(&a);
            }
        }
        map.entry(addr)
            .or_insert_with(|| {
                Arc::new(Entry {
                    addr,
                    last_used: AtomicU64::new(now_ms),
                    state: Mutex::new(EntryState {
                        hosts: Vec::new(),
                        health: Health::new(self.window, self.epoch),
                        breaker: Breaker::default(),
                        rejected: 0,
                        transitions: 0,
                        check: None,
                    }),
                })
            })
            .clone()
    }

    /// May a request for `host` go to `addr` now?
    pub fn admit(self: &Arc<Self>, addr: SocketAddr, host: &str) -> Result<Ticket, Refused> {
        let entry = self.entry(addr);
        let now = Instant::now();
        let (verdict, transition, first_host) = {
            let mut st = entry.state.lock();
            if !host.is_empty() && st.hosts.len() < MAX_HOSTS && !st.hosts.iter().any(|h| h == host)
            {
                st.hosts.push(host.to_string());
            }
            let (verdict, transition) = st.breaker.admit(&self.breaker, now);
            if verdict.is_err() {
                st.rejected += 1;
            }
            if transition.is_some() {
                st.transitions += 1;
            }
            (verdict, transition, st.hosts.first().cloned())
        };
        if let Some(t) = transition {
            self.log_transition(addr, first_host.as_deref(), &t);
        }
        match verdict {
            Ok(pass) => Ok(Ticket {
                origins: self.clone(),
                entry,
                pass,
                started: now,
                done: false,
            }),
            Err(r) => {
                self.metrics.rejected.inc();
                Err(Refused {
                    origin: addr,
                    host: first_host,
                    reason: r.reason,
                    retry_after: r.retry_after,
                })
            }
        }
    }

    fn record(
        &self,
        entry: &Entry,
        pass: Option<Pass>,
        outcome: Outcome,
        latency: Option<Duration>,
        now: Instant,
    ) {
        let (transition, host) = {
            let mut st = entry.state.lock();
            let st = &mut *st;
            st.health.record(outcome, latency, now);
            let t = st
                .breaker
                .on_outcome(&self.breaker, &mut st.health, pass, outcome, now);
            if t.is_some() {
                st.transitions += 1;
            }
            (t, st.hosts.first().cloned())
        };
        if let Some(t) = transition {
            self.log_transition(entry.addr, host.as_deref(), &t);
        }
    }

    fn log_transition(&self, addr: SocketAddr, host: Option<&str>, t: &Transition) {
        self.metrics.transition(t.to);
        let (from, to) = (t.from.as_str(), t.to.as_str());
        let host = host.unwrap_or("");
        if t.to == State::Open {
            warn!(service = "origins", origin = %addr, host, from, to, reason = %t.reason,
                "breaker state changed");
        } else {
            info!(service = "origins", origin = %addr, host, from, to, reason = %t.reason,
                "breaker state changed");
        }
    }

    /// The report `velocache origins` prints.
    pub fn report(&self) -> OriginsReport {
        let now = Instant::now();
        let entries: Vec<Arc<Entry>> = self.map.read().values().cloned().collect();
        let mut origins: Vec<OriginView> = entries.iter().map(|e| view(e, now)).collect();
        origins.sort_by(|a, b| {
            b.requests
                .cmp(&a.requests)
                .then_with(|| a.origin.cmp(&b.origin))
        });
        OriginsReport {
            breaker_enabled: self.breaker.enabled,
            window_secs: self.window.as_secs(),
            origins,
        }
    }

    /// Count a response learned by ghost mode.
    pub fn ghost_learned(&self) {
        self.metrics.ghost_learned.inc();
    }

    /// Count an answer from ghost mode (`ghost` or `ghost-nearest`).
    pub fn ghost_answered(&self, kind: &'static str) {
        self.metrics.ghost_answer(kind);
    }

    /// The state of `addr`'s breaker, if the origin is tracked.
    pub fn state(&self, addr: SocketAddr) -> Option<State> {
        let e = self.map.read().get(&addr).cloned()?;
        let s = e.state.lock().breaker.state();
        Some(s)
    }
}

fn view(e: &Entry, now: Instant) -> OriginView {
    let st = e.state.lock();
    let w = st.health.window(now);
    OriginView {
        origin: e.addr.to_string(),
        hosts: st.hosts.clone(),
        state: st.breaker.state().as_str().into(),
        reason: st.breaker.reason().to_string(),
        retry_after_secs: st.breaker.retry_after(now).as_secs_f64().ceil() as u64,
        requests: st.health.requests,
        failures: st.health.failures,
        rejected: st.rejected,
        window_requests: w.requests,
        window_failures: w.failures,
        error_ratio: w.error_ratio(),
        consecutive_failures: st.health.consecutive_failures,
        last_failure: st.health.last_failure.map(|(_, f)| f.describe()),
        last_failure_secs_ago: st
            .health
            .last_failure
            .map(|(t, _)| now.saturating_duration_since(t).as_secs()),
        latency_ms: st.health.latency_ewma_ms,
        latency_last_ms: st.health.latency_last_ms,
        transitions: st.transitions,
        health_check: st
            .check
            .as_ref()
            .map(|c| crate::admin::api::HealthCheckView {
                rule: c.rule.clone(),
                path: c.path.clone(),
                interval_ms: c.interval.as_millis() as u64,
                up: c.up,
                last: c.last.clone(),
                checks: c.checks,
            }),
    }
}

impl OriginsAdmin for Origins {
    fn origins(&self) -> OriginsReport {
        self.report()
    }
}

#[cfg(test)]
mod tests;
