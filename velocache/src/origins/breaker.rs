//! The circuit breaker of one origin, as a pure state machine: the clock, the origin's
//! [`Health`] and each request's outcome enter; whether a request may go ([`Breaker::admit`])
//! and the state changes to log and count ([`Transition`]) leave.
//!
//! Closed → Open when the window holds at least `min_requests` requests of which
//! `failure_percent` failed, or after `consecutive_failures` failures in a row. Open refuses
//! everything for `open_ms`, then becomes HalfOpen: `half_open_probes` requests go through; as
//! many successes close it (the window starts afresh), one failure opens it again.
use std::time::{Duration, Instant};

use super::health::{Failure, Health, Outcome};

/// The breaker's tunables (`[origins]`).
#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    /// Off: every request is admitted (health is still recorded).
    pub enabled: bool,
    /// Opening ratio, percent.
    pub failure_percent: u8,
    /// Requests the window must hold before its ratio counts.
    pub min_requests: u32,
    /// Failures in a row that open it.
    pub consecutive_failures: u32,
    /// How long it stays open.
    pub open_for: Duration,
    /// Probes while half-open.
    pub half_open_probes: u32,
}

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Requests go through.
    Closed,
    /// Requests are refused.
    Open,
    /// A few probes go through.
    HalfOpen,
}

impl State {
    /// Its name in logs, metrics and `velocache origins`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }

    /// Its value in the `velocache_origins_state` gauge.
    pub fn gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::HalfOpen => 1,
            State::Open => 2,
        }
    }
}

/// How a request was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Closed (or the breaker is off).
    Normal,
    /// One of the half-open probes.
    Probe,
}

/// Why a request was refused, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why the breaker is open.
    pub reason: String,
    /// Until it lets probes through.
    pub retry_after: Duration,
}

/// A state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// From.
    pub from: State,
    /// To.
    pub to: State,
    /// Why.
    pub reason: String,
}

/// One origin's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: State,
    /// Until when it stays open.
    until: Option<Instant>,
    reason: String,
    probes_in_flight: u32,
    probe_successes: u32,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: State::Closed,
            until: None,
            reason: String::new(),
            probes_in_flight: 0,
            probe_successes: 0,
        }
    }
}

impl Breaker {
    /// Where it is.
    pub fn state(&self) -> State {
        self.state
    }

    /// Why it last opened (empty while it never did).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// How long it stays open from `now` (zero unless open).
    pub fn retry_after(&self, now: Instant) -> Duration {
        match (self.state, self.until) {
            (State::Open, Some(u)) => u.saturating_duration_since(now),
            _ => Duration::ZERO,
        }
    }

    /// May a request go to the origin now? A cool-down that has passed turns Open into
    /// HalfOpen (returned as a transition to log).
    pub fn admit(
        &mut self,
        s: &BreakerSettings,
        now: Instant,
    ) -> (Result<Pass, Refusal>, Option<Transition>) {
        if !s.enabled {
            return (Ok(Pass::Normal), None);
        }
        let mut transition = None;
        if self.state == State::Open && self.until.is_some_and(|u| now >= u) {
            transition = Some(self.half_open());
        }
        let verdict = match self.state {
            State::Closed => Ok(Pass::Normal),
            State::Open => Err(Refusal {
                reason: self.reason.clone(),
                retry_after: self.retry_after(now),
            }),
            State::HalfOpen
                if self.probes_in_flight + self.probe_successes < s.half_open_probes =>
            {
                self.probes_in_flight += 1;
                Ok(Pass::Probe)
            }
            State::HalfOpen => Err(Refusal {
                reason: format!("{}; probes in flight", self.reason),
                retry_after: Duration::from_secs(1),
            }),
        };
        (verdict, transition)
    }

    fn half_open(&mut self) -> Transition {
        self.state = State::HalfOpen;
        self.until = None;
        self.probes_in_flight = 0;
        self.probe_successes = 0;
        Transition {
            from: State::Open,
            to: State::HalfOpen,
            reason: "cool-down over; probing".into(),
        }
    }

    fn open(&mut self, s: &BreakerSettings, now: Instant, reason: String) -> Transition {
        let from = self.state;
        self.state = State::Open;
        self.until = Some(now + s.open_for);
        self.reason = reason.clone();
        self.probes_in_flight = 0;
        self.probe_successes = 0;
        Transition {
            from,
            to: State::Open,
            reason,
        }
    }

    /// A probe that ended with no verdict on the origin (the client went away, its body was
    /// bad): its slot is free again.
    pub fn release(&mut self, pass: Pass) {
        if pass == Pass::Probe && self.state == State::HalfOpen {
            self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
        }
    }

    /// `outcome` of a request let through as `pass` (`None`: an active check) has just been
    /// recorded in `health`.
    pub fn on_outcome(
        &mut self,
        s: &BreakerSettings,
        health: &mut Health,
        pass: Option<Pass>,
        outcome: Outcome,
        now: Instant,
    ) -> Option<Transition> {
        if !s.enabled {
            return None;
        }
        if pass == Some(Pass::Probe) && self.state == State::HalfOpen {
            self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
        }
        match (self.state, outcome) {
            (State::Closed, Outcome::Failure(f)) => self.should_open(s, health, f, now),
            (State::HalfOpen, Outcome::Failure(f)) => {
                Some(self.open(s, now, format!("a probe failed: {}", f.describe())))
            }
            (State::HalfOpen, Outcome::Success) => {
                self.probe_successes += 1;
                if self.probe_successes >= s.half_open_probes {
                    health.reset_window();
                    self.state = State::Closed;
                    self.probes_in_flight = 0;
                    self.probe_successes = 0;
                    return Some(Transition {
                        from: State::HalfOpen,
                        to: State::Closed,
                        reason: format!("{} probes succeeded", s.half_open_probes),
                    });
                }
                None
            }
            // An active check that succeeds once the cool-down is over lets probes through at
            // once rather than at the next request.
            (State::Open, Outcome::Success)
                if pass.is_none() && self.until.is_some_and(|u| now >= u) =>
            {
                Some(self.half_open())
            }
            _ => None,
        }
    }

    fn should_open(
        &mut self,
        s: &BreakerSettings,
        health: &Health,
        f: Failure,
        now: Instant,
    ) -> Option<Transition> {
        if health.consecutive_failures >= s.consecutive_failures {
            return Some(self.open(
                s,
                now,
                format!(
                    "{} consecutive failures (last: {})",
                    health.consecutive_failures,
                    f.describe()
                ),
            ));
        }
        let w = health.window(now);
        if w.requests >= s.min_requests
            && u64::from(w.failures) * 100 >= u64::from(s.failure_percent) * u64::from(w.requests)
        {
            return Some(self.open(
                s,
                now,
                format!(
                    "{} of {} requests failed in the window (last: {})",
                    w.failures,
                    w.requests,
                    f.describe()
                ),
            ));
        }
        None
    }
}

#[cfg(test)]
#[path = "breaker_tests.rs"]
mod tests;
