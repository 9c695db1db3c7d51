//! Passive health of one origin: outcomes of the requests sent to it enter ([`Health::record`]),
//! counted in a sliding window of one-second buckets and in running totals; the error ratio,
//! the failures in a row and the latency the breaker decides with and `velocache origins` shows
//! leave. Pure: the caller passes the clock.
use std::time::{Duration, Instant};

/// Why a request to an origin counts as failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection was refused (nothing listens).
    Refused,
    /// The connection was reset.
    Reset,
    /// The origin closed the connection without a complete response head.
    Closed,
    /// No connection, or no response head, in time.
    Timeout,
    /// The origin answered with this 5xx status.
    ServerError(u16),
    /// Any other transport error (unreachable, TLS, a malformed response).
    Other,
}

impl Failure {
    /// How logs, the 503 page and `velocache origins` name it.
    pub fn describe(self) -> String {
        match self {
            Failure::Refused => "connection refused".into(),
            Failure::Reset => "connection reset".into(),
            Failure::Closed => "closed without a response".into(),
            Failure::Timeout => "timed out".into(),
            Failure::ServerError(s) => format!("answered {s}"),
            Failure::Other => "transport error".into(),
        }
    }
}

/// What became of one request (or one active check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response head below 500.
    Success,
    /// See [`Failure`].
    Failure(Failure),
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which second (since the registry's epoch) it counts.
    second: u64,
    requests: u32,
    failures: u32,
}

/// Requests and failures in the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowCounts {
    /// Requests that ended in the window.
    pub requests: u32,
    /// Of which failed.
    pub failures: u32,
}

impl WindowCounts {
    /// Failures per request, 0 with no requests.
    pub fn error_ratio(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            f64::from(self.failures) / f64::from(self.requests)
        }
    }
}

/// One origin's passive health.
#[derive(Debug, Clone)]
pub struct Health {
    epoch: Instant,
    buckets: Vec<Bucket>,
    /// Failures in a row (a success resets it).
    pub consecutive_failures: u32,
    /// Requests since start.
    pub requests: u64,
    /// Failures since start.
    pub failures: u64,
    /// The last failure and when.
    pub last_failure: Option<(Instant, Failure)>,
    /// Exponentially weighted time to the response head, milliseconds (successes only).
    pub latency_ewma_ms: Option<f64>,
    /// The last success's time to the response head.
    pub latency_last_ms: Option<f64>,
}

/// Weight of the newest latency sample in the average.
const EWMA_ALPHA: f64 = 0.2;

impl Health {
    /// No requests yet; a window of `window` (whole seconds, at least one bucket).
    pub fn new(window: Duration, epoch: Instant) -> Health {
        let n = window.as_secs().max(1) as usize;
        Health {
            epoch,
            buckets: vec![Bucket::default(); n],
            consecutive_failures: 0,
            requests: 0,
            failures: 0,
            last_failure: None,
            latency_ewma_ms: None,
            latency_last_ms: None,
        }
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    /// Count `outcome`, which took `latency` (to the response head) and ended at `now`.
    pub fn record(&mut self, outcome: Outcome, latency: Option<Duration>, now: Instant) {
        let sec = self.second(now);
        let n = self.buckets.len() as u64;
        let b = &mut self.buckets[(sec % n) as usize];
        if b.second != sec {
            *b = Bucket {
                second: sec,
                ..Bucket::default()
            };
        }
        b.requests = b.requests.saturating_add(1);
        self.requests += 1;
        match outcome {
            Outcome::Success => {
                self.consecutive_failures = 0;
                if let Some(l) = latency {
                    let ms = l.as_secs_f64() * 1000.0;
                    self.latency_last_ms = Some(ms);
                    self.latency_ewma_ms = Some(match self.latency_ewma_ms {
                        Some(avg) => avg + EWMA_ALPHA * (ms - avg),
                        None => ms,
                    });
                }
            }
            Outcome::Failure(f) => {
                b.failures = b.failures.saturating_add(1);
                self.failures += 1;
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.last_failure = Some((now, f));
            }
        }
    }

    /// Requests and failures over the window ending at `now`.
    pub fn window(&self, now: Instant) -> WindowCounts {
        let sec = self.second(now);
        let n = self.buckets.len() as u64;
        self.buckets
            .iter()
            .filter(|b| b.second + n > sec && b.second <= sec && b.requests > 0)
            .fold(WindowCounts::default(), |acc, b| WindowCounts {
                requests: acc.requests.saturating_add(b.requests),
                failures: acc.failures.saturating_add(b.failures),
            })
    }

    /// Forget the window and the failures in a row (a breaker that closes starts afresh).
    pub fn reset_window(&mut self) {
        self.buckets.iter_mut().for_each(|b| *b = Bucket::default());
        self.consecutive_failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_forgets_what_is_older_than_it() {
        let t0 = Instant::now();
        let mut h = Health::new(Duration::from_secs(3), t0);
        h.record(Outcome::Failure(Failure::Refused), None, t0);
        h.record(Outcome::Success, Some(Duration::from_millis(10)), t0);
        assert_eq!(
            h.window(t0),
            WindowCounts {
                requests: 2,
                failures: 1
            }
        );
        assert_eq!(h.window(t0).error_ratio(), 0.5);
        let later = t0 + Duration::from_secs(2);
        h.record(Outcome::Success, Some(Duration::from_millis(20)), later);
        assert_eq!(h.window(later).requests, 3);
        let much_later = t0 + Duration::from_secs(4);
        assert_eq!(
            h.window(much_later),
            WindowCounts {
                requests: 1,
                failures: 0
            },
            "only the request of second 2 is inside a 3 s window ending at second 4"
        );
        assert_eq!(h.requests, 3);
        assert_eq!(h.failures, 1);
    }

    #[test]
    fn a_success_ends_a_run_of_failures_and_feeds_the_latency_average() {
        let t0 = Instant::now();
        let mut h = Health::new(Duration::from_secs(10), t0);
        for _ in 0..3 {
            h.record(Outcome::Failure(Failure::Timeout), None, t0);
        }
        assert_eq!(h.consecutive_failures, 3);
        assert_eq!(h.last_failure.map(|(_, f)| f), Some(Failure::Timeout));
        h.record(Outcome::Success, Some(Duration::from_millis(100)), t0);
        assert_eq!(h.consecutive_failures, 0);
        assert_eq!(h.latency_ewma_ms, Some(100.0));
        h.record(Outcome::Success, Some(Duration::from_millis(200)), t0);
        let avg = h.latency_ewma_ms.unwrap();
        assert!((avg - 120.0).abs() < 1e-9, "{avg}");
        assert_eq!(h.latency_last_ms, Some(200.0));
    }
}
