use std::{net::SocketAddr, time::Duration};

use super::*;
use crate::config::{Millis, OriginsConfig};

fn cfg() -> OriginsConfig {
    OriginsConfig {
        consecutive_failures: 2,
        open_ms: Millis(60_000),
        ..OriginsConfig::default()
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

#[test]
fn an_origin_that_fails_twice_in_a_row_is_refused_with_its_reason_and_host() {
    let o = Origins::unregistered(&cfg());
    for _ in 0..2 {
        o.admit(addr(80), "api.example")
            .unwrap()
            .finish(Outcome::Failure(Failure::Refused));
    }
    let refused = o.admit(addr(80), "api.example").err().unwrap();
    assert_eq!(refused.origin, addr(80));
    assert_eq!(refused.host.as_deref(), Some("api.example"));
    assert!(
        refused.reason.contains("connection refused"),
        "{}",
        refused.reason
    );
    assert!(refused.retry_after > Duration::from_secs(50));
    // Another origin is not affected.
    assert!(o.admit(addr(81), "api.example").is_ok());
    let report = o.report();
    let v = report
        .origins
        .iter()
        .find(|v| v.origin == "10.0.0.1:80")
        .unwrap();
    assert_eq!(v.state, "open");
    assert_eq!(v.requests, 2);
    assert_eq!(v.failures, 2);
    assert_eq!(v.rejected, 1);
    assert_eq!(v.error_ratio, 1.0);
    assert_eq!(v.hosts, ["api.example"]);
    assert_eq!(v.last_failure.as_deref(), Some("connection refused"));
    assert_eq!(v.transitions, 1);
}

#[test]
fn a_ticket_dropped_without_an_outcome_counts_nothing() {
    let o = Origins::unregistered(&cfg());
    drop(o.admit(addr(80), "h").unwrap());
    let v = &o.report().origins[0];
    assert_eq!(v.requests, 0);
    assert_eq!(v.state, "closed");
}

#[test]
#[expect(
    clippy::disallowed_methods,
    reason = "a synchronous test: the milliseconds order the origins' last use"
)]
fn the_registry_forgets_the_least_recently_used_origin_past_its_limit() {
    let o = Origins::unregistered(&OriginsConfig {
        max_origins: 2,
        ..cfg()
    });
    o.admit(addr(1), "a").unwrap().finish(Outcome::Success);
    std::thread::sleep(Duration::from_millis(2));
    o.admit(addr(2), "b").unwrap().finish(Outcome::Success);
    std::thread::sleep(Duration::from_millis(2));
    o.admit(addr(1), "a").unwrap().finish(Outcome::Success);
    std::thread::sleep(Duration::from_millis(2));
    o.admit(addr(3), "c").unwrap().finish(Outcome::Success);
    let mut seen: Vec<String> = o.report().origins.into_iter().map(|v| v.origin).collect();
    seen.sort();
    assert_eq!(seen, ["10.0.0.1:1", "10.0.0.1:3"]);
}

#[test]
fn metrics_show_each_origins_state_and_error_ratio() {
    let mut registry = prometheus_client::registry::Registry::default();
    let o = Origins::new(&cfg(), registry.sub_registry_with_prefix("origins"));
    for _ in 0..2 {
        o.admit(addr(80), "api.example")
            .unwrap()
            .finish(Outcome::Failure(Failure::Timeout));
    }
    let _ = o.admit(addr(80), "api.example");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for want in [
        r#"origins_state{origin="10.0.0.1:80",host="api.example"} 2"#,
        r#"origins_error_ratio{origin="10.0.0.1:80",host="api.example"} 1.0"#,
        r#"origins_failures_total{origin="10.0.0.1:80",host="api.example"} 2"#,
        r#"origins_breaker_transitions_total{to="open"} 1"#,
        "origins_rejected_total 1",
    ] {
        assert!(text.contains(want), "{want} missing in\n{text}");
    }
}

#[test]
fn io_errors_map_to_the_failures_they_mean() {
    use std::io::{Error, ErrorKind};
    assert_eq!(
        io_failure(&Error::from(ErrorKind::ConnectionRefused)),
        Failure::Refused
    );
    assert_eq!(
        io_failure(&Error::from(ErrorKind::ConnectionReset)),
        Failure::Reset
    );
    assert_eq!(
        io_failure(&Error::from(ErrorKind::TimedOut)),
        Failure::Timeout
    );
    assert_eq!(
        io_failure(&Error::from(ErrorKind::UnexpectedEof)),
        Failure::Closed
    );
}
