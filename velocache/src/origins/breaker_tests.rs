use std::time::{Duration, Instant};

use super::*;

fn settings() -> BreakerSettings {
    BreakerSettings {
        enabled: true,
        failure_percent: 50,
        min_requests: 4,
        consecutive_failures: 3,
        open_for: Duration::from_secs(30),
        half_open_probes: 2,
    }
}

/// Admit one request at `now` and record `outcome` for it.
fn request(
    b: &mut Breaker,
    h: &mut Health,
    s: &BreakerSettings,
    outcome: Outcome,
    now: Instant,
) -> (Result<Pass, Refusal>, Vec<Transition>) {
    let (verdict, t) = b.admit(s, now);
    let mut ts: Vec<Transition> = t.into_iter().collect();
    if let Ok(pass) = &verdict {
        h.record(outcome, Some(Duration::from_millis(5)), now);
        ts.extend(b.on_outcome(s, h, Some(*pass), outcome, now));
    }
    (verdict, ts)
}

const REFUSED: Outcome = Outcome::Failure(Failure::Refused);

#[test]
fn consecutive_failures_open_the_breaker_and_it_refuses_until_the_cool_down_ends() {
    let s = settings();
    let t0 = Instant::now();
    let mut h = Health::new(Duration::from_secs(10), t0);
    let mut b = Breaker::default();
    let _ = request(&mut b, &mut h, &s, REFUSED, t0);
    let _ = request(&mut b, &mut h, &s, REFUSED, t0);
    assert_eq!(b.state(), State::Closed);
    let (_, ts) = request(&mut b, &mut h, &s, REFUSED, t0);
    assert_eq!(ts.len(), 1);
    assert_eq!((ts[0].from, ts[0].to), (State::Closed, State::Open));
    assert!(
        ts[0].reason.contains("3 consecutive failures"),
        "{}",
        ts[0].reason
    );
    assert!(
        ts[0].reason.contains("connection refused"),
        "{}",
        ts[0].reason
    );
    let later = t0 + Duration::from_secs(10);
    let (verdict, _) = b.admit(&s, later);
    let refusal = verdict.unwrap_err();
    assert_eq!(refusal.retry_after, Duration::from_secs(20));
    assert!(refusal.reason.contains("consecutive"));
}

#[test]
fn a_failure_ratio_over_the_minimum_opens_it_and_below_the_minimum_does_not() {
    let s = BreakerSettings {
        consecutive_failures: 100,
        ..settings()
    };
    let t0 = Instant::now();
    let mut h = Health::new(Duration::from_secs(10), t0);
    let mut b = Breaker::default();
    // 1 failure of 1, 2 of 3: ratios over 50 % but fewer than 4 requests.
    let _ = request(&mut b, &mut h, &s, REFUSED, t0);
    let _ = request(&mut b, &mut h, &s, Outcome::Success, t0);
    let _ = request(&mut b, &mut h, &s, REFUSED, t0);
    assert_eq!(b.state(), State::Closed);
    // The 4th request fails: 3 of 4.
    let (_, ts) = request(
        &mut b,
        &mut h,
        &s,
        Outcome::Failure(Failure::ServerError(503)),
        t0,
    );
    assert_eq!(b.state(), State::Open);
    assert!(
        ts[0].reason.contains("3 of 4 requests failed"),
        "{}",
        ts[0].reason
    );
    assert!(ts[0].reason.contains("answered 503"), "{}", ts[0].reason);
}

#[test]
fn half_open_lets_a_few_probes_through_and_their_successes_close_it() {
    let s = settings();
    let t0 = Instant::now();
    let mut h = Health::new(Duration::from_secs(10), t0);
    let mut b = Breaker::default();
    for _ in 0..3 {
        let _ = request(&mut b, &mut h, &s, REFUSED, t0);
    }
    let after = t0 + Duration::from_secs(31);
    // Two probes admitted, a third refused while they are in flight.
    let (p1, t) = b.admit(&s, after);
    assert_eq!(p1, Ok(Pass::Probe));
    assert_eq!(t.map(|t| t.to), Some(State::HalfOpen));
    let (p2, _) = b.admit(&s, after);
    assert_eq!(p2, Ok(Pass::Probe));
    assert!(b.admit(&s, after).0.is_err(), "only two probes at once");
    h.record(Outcome::Success, None, after);
    assert_eq!(
        b.on_outcome(&s, &mut h, Some(Pass::Probe), Outcome::Success, after),
        None
    );
    h.record(Outcome::Success, None, after);
    let closed = b
        .on_outcome(&s, &mut h, Some(Pass::Probe), Outcome::Success, after)
        .unwrap();
    assert_eq!((closed.from, closed.to), (State::HalfOpen, State::Closed));
    assert_eq!(
        h.window(after).requests,
        0,
        "a closed breaker starts a fresh window"
    );
    assert_eq!(b.admit(&s, after).0, Ok(Pass::Normal));
}

#[test]
fn a_failed_probe_opens_it_again_for_a_full_cool_down() {
    let s = settings();
    let t0 = Instant::now();
    let mut h = Health::new(Duration::from_secs(10), t0);
    let mut b = Breaker::default();
    for _ in 0..3 {
        let _ = request(&mut b, &mut h, &s, REFUSED, t0);
    }
    let after = t0 + Duration::from_secs(31);
    let (_, ts) = request(
        &mut b,
        &mut h,
        &s,
        Outcome::Failure(Failure::Timeout),
        after,
    );
    assert_eq!(ts.len(), 2, "{ts:?}");
    assert_eq!((ts[1].from, ts[1].to), (State::HalfOpen, State::Open));
    assert!(ts[1].reason.contains("a probe failed: timed out"));
    assert_eq!(b.retry_after(after), Duration::from_secs(30));
}

#[test]
fn a_probe_released_without_a_verdict_frees_its_slot() {
    let s = BreakerSettings {
        half_open_probes: 1,
        ..settings()
    };
    let t0 = Instant::now();
    let mut h = Health::new(Duration::from_secs(10), t0);
    let mut b = Breaker::default();
    for _ in 0..3 {
        let _ = request(&mut b, &mut h, &s, REFUSED, t0);
    }
    let after = t0 + Duration::from_secs(31);
    assert_eq!(b.admit(&s, after).0, Ok(Pass::Probe));
    assert!(b.admit(&s, after).0.is_err());
    b.release(Pass::Probe);
    assert_eq!(b.admit(&s, after).0, Ok(Pass::Probe));
}

#[test]
fn a_disabled_breaker_admits_everything() {
    let s = BreakerSettings {
        enabled: false,
        ..settings()
    };
    let t0 = Instant::now();
    let mut h = Health::new(Duration::from_secs(10), t0);
    let mut b = Breaker::default();
    for _ in 0..10 {
        let (v, ts) = request(&mut b, &mut h, &s, REFUSED, t0);
        assert_eq!(v, Ok(Pass::Normal));
        assert!(ts.is_empty());
    }
    assert_eq!(h.consecutive_failures, 10, "health is still recorded");
}

#[test]
fn an_active_check_success_after_the_cool_down_starts_probing() {
    let s = settings();
    let t0 = Instant::now();
    let mut h = Health::new(Duration::from_secs(10), t0);
    let mut b = Breaker::default();
    for _ in 0..3 {
        let _ = request(&mut b, &mut h, &s, REFUSED, t0);
    }
    let early = t0 + Duration::from_secs(5);
    assert_eq!(
        b.on_outcome(&s, &mut h, None, Outcome::Success, early),
        None
    );
    assert_eq!(b.state(), State::Open, "still cooling down");
    let after = t0 + Duration::from_secs(31);
    let t = b
        .on_outcome(&s, &mut h, None, Outcome::Success, after)
        .unwrap();
    assert_eq!(t.to, State::HalfOpen);
}
