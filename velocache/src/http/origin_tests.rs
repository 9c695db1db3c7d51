//! The proxy in front of an origin that fails: the breaker (`crate::origins`) through the
//! fetcher, answered as a client sees it.
use std::time::Duration;

use bytes::Bytes;

use super::test_harness::*;
use crate::config::{Millis, OriginsConfig};

fn breaker(consecutive: u32, open_ms: u64) -> OriginsConfig {
    OriginsConfig {
        consecutive_failures: consecutive,
        open_ms: Millis(open_ms),
        half_open_probes: 1,
        ..OriginsConfig::default()
    }
}

fn plain(body: &'static str) -> Route {
    Route {
        status: 200,
        headers: vec![("cache-control", "no-store".into())],
        body: Bytes::from_static(body.as_bytes()),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_dead_origin_opens_the_breaker_and_then_gets_a_fast_503_that_names_it() {
    let s = setup_all("", |_| {}, Vec::new(), breaker(2, 60_000)).await;
    s.origin.route("/x", plain("x"));
    s.origin.set_down(true);
    for _ in 0..2 {
        let r = get(s.proxy_addr, "/x").await;
        assert_eq!(r.status, 502, "the origin's own failure");
    }
    let hits = s.origin.hits("/x");
    let r = get(s.proxy_addr, "/x").await;
    assert_eq!(r.status, 503);
    let body = String::from_utf8_lossy(&r.body).to_string();
    assert!(body.contains("127.0.0.1:"), "names the origin: {body}");
    assert!(body.contains("origin.test"), "and its host: {body}");
    assert!(body.contains("2 consecutive failures"), "says why: {body}");
    assert!(body.contains("closed without a response"), "{body}");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(s.origin.hits("/x"), hits, "the open breaker sent nothing");
    let report = s.origins.report();
    assert_eq!(report.origins[0].state, "open");
    assert_eq!(report.origins[0].rejected, 1);
}

#[tokio::test]
async fn server_errors_count_as_failures_and_open_the_breaker() {
    let s = setup_all("", |_| {}, Vec::new(), breaker(3, 60_000)).await;
    s.origin.route(
        "/e",
        Route {
            status: 500,
            body: Bytes::from_static(b"boom"),
            ..Default::default()
        },
    );
    for _ in 0..3 {
        let r = get(s.proxy_addr, "/e").await;
        assert_eq!(r.status, 500, "the origin's 500 is relayed while closed");
    }
    let r = get(s.proxy_addr, "/e").await;
    assert_eq!(r.status, 503);
    assert!(String::from_utf8_lossy(&r.body).contains("answered 500"));
}

#[tokio::test]
async fn the_breaker_half_opens_after_its_cool_down_and_a_successful_probe_closes_it() {
    let s = setup_all("", |_| {}, Vec::new(), breaker(1, 300)).await;
    s.origin.route("/x", plain("back"));
    s.origin.set_down(true);
    assert_eq!(get(s.proxy_addr, "/x").await.status, 502);
    assert_eq!(get(s.proxy_addr, "/x").await.status, 503);
    s.origin.set_down(false);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = get(s.proxy_addr, "/x").await;
    assert_eq!(r.status, 200, "the probe went through");
    assert_eq!(r.body, "back");
    assert_eq!(s.origins.report().origins[0].state, "closed");
    assert_eq!(
        s.origins.report().origins[0].transitions,
        3,
        "open, half-open, closed"
    );
}

#[tokio::test]
async fn with_the_breaker_off_every_request_goes_to_the_origin() {
    let cfg = OriginsConfig {
        breaker: false,
        ..breaker(1, 60_000)
    };
    let s = setup_all("", |_| {}, Vec::new(), cfg).await;
    s.origin.route("/x", plain("x"));
    s.origin.set_down(true);
    for _ in 0..4 {
        assert_eq!(get(s.proxy_addr, "/x").await.status, 502);
    }
    let v = &s.origins.report().origins[0];
    assert_eq!((v.state.as_str(), v.failures), ("closed", 4));
}
