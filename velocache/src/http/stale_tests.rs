//! Stale answers when the origin fails, through the proxy (RFC 9111 §4.2.4, RFC 5861): what a
//! client gets for each kind of stored response when the origin is down, answers 5xx, or its
//! breaker is open — and `stale-while-revalidate`.
use std::time::Duration;

use bytes::Bytes;

use super::test_harness::*;
use crate::config::{Millis, OriginsConfig, Secs};

/// A response with a validator (so it is stored) that is stale at once unless `cc` says
/// otherwise.
fn stored(cc: &str) -> Route {
    Route {
        status: 200,
        headers: vec![("cache-control", cc.into())],
        body: blob(100),
        etag: Some("\"v1\"".into()),
        ..Default::default()
    }
}

async fn store_then_kill(cc: &str, grace: u64) -> Setup {
    let s = setup_all(
        "",
        |c| c.stale_if_error_default_secs = Secs(grace),
        Vec::new(),
        OriginsConfig::default(),
    )
    .await;
    s.origin.route("/o", stored(cc));
    assert_eq!(get(s.proxy_addr, "/o").await.status, 200);
    settle().await;
    s.origin.set_down(true);
    s
}

#[tokio::test]
async fn a_dead_origin_gets_the_stored_response_within_the_default_grace() {
    let s = store_then_kill("max-age=0", 60).await;
    let r = get(s.proxy_addr, "/o").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-cache-status"], "stale");
    assert_eq!(r.body, blob(100));
    assert!(r.headers.contains_key("age"));
}

#[tokio::test]
async fn without_stale_if_error_and_without_grace_the_error_reaches_the_client() {
    let s = store_then_kill("max-age=0", 0).await;
    assert_eq!(get(s.proxy_addr, "/o").await.status, 502);
}

#[tokio::test]
async fn stale_if_error_of_the_response_is_honoured_without_any_grace() {
    let s = store_then_kill("max-age=0, stale-if-error=600", 0).await;
    let r = get(s.proxy_addr, "/o").await;
    assert_eq!((r.status, r.body.clone()), (200, blob(100)));
}

#[tokio::test]
async fn must_revalidate_proxy_revalidate_no_cache_and_s_maxage_content_gets_the_error() {
    for cc in [
        "max-age=0, must-revalidate, stale-if-error=600",
        "max-age=0, proxy-revalidate, stale-if-error=600",
        "no-cache, stale-if-error=600",
        "s-maxage=0, stale-if-error=600",
    ] {
        let s = store_then_kill(cc, 3600).await;
        let r = get(s.proxy_addr, "/o").await;
        assert_eq!(r.status, 502, "{cc}: {:?}", r.body);
    }
}

#[tokio::test]
async fn a_5xx_from_the_origin_is_answered_from_the_stored_response_and_keeps_it() {
    let s = store_then_kill("max-age=0", 60).await;
    s.origin.set_down(false);
    s.origin.route(
        "/o",
        Route {
            status: 503,
            body: Bytes::from_static(b"down"),
            ..Default::default()
        },
    );
    for _ in 0..2 {
        let r = get(s.proxy_addr, "/o").await;
        assert_eq!((r.status, r.body.clone()), (200, blob(100)));
        assert_eq!(r.headers["x-cache-status"], "stale");
    }
}

#[tokio::test]
async fn a_5xx_for_must_revalidate_content_reaches_the_client() {
    let s = store_then_kill("max-age=0, must-revalidate", 3600).await;
    s.origin.set_down(false);
    s.origin.route(
        "/o",
        Route {
            status: 500,
            body: Bytes::from_static(b"boom"),
            ..Default::default()
        },
    );
    let r = get(s.proxy_addr, "/o").await;
    assert_eq!((r.status, r.body), (500, Bytes::from_static(b"boom")));
}

#[tokio::test]
async fn a_head_for_a_stale_object_is_answered_when_the_origin_fails() {
    let s = store_then_kill("max-age=0", 60).await;
    let r = send(s.proxy_addr, "HEAD", "/o", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-cache-status"], "stale");
    assert_eq!(r.headers["content-length"], "100");
}

#[tokio::test]
async fn a_client_asking_for_validation_gets_the_error_unless_it_accepts_stale_if_error() {
    let s = store_then_kill("max-age=0", 60).await;
    let r = send(s.proxy_addr, "GET", "/o", &[("cache-control", "no-cache")]).await;
    assert_eq!(r.status, 502);
    let r = send(
        s.proxy_addr,
        "GET",
        "/o",
        &[("cache-control", "no-cache, stale-if-error=60")],
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn an_open_breaker_answers_from_the_cache_without_asking_the_origin() {
    let cfg = OriginsConfig {
        consecutive_failures: 1,
        open_ms: Millis(60_000),
        ..OriginsConfig::default()
    };
    let s = setup_all("", |_| {}, Vec::new(), cfg).await;
    s.origin.route("/o", stored("max-age=0"));
    s.origin.route("/never", stored("max-age=0"));
    get(s.proxy_addr, "/o").await;
    settle().await;
    s.origin.set_down(true);
    // The failure that opens the breaker is itself answered stale.
    let r = get(s.proxy_addr, "/o").await;
    assert_eq!(
        (r.status, r.headers["x-cache-status"].clone()),
        (200, "stale".parse().unwrap())
    );
    assert_eq!(s.origins.report().origins[0].state, "open");
    let hits = s.origin.hits("/o");
    let r = get(s.proxy_addr, "/o").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, blob(100));
    assert_eq!(
        s.origin.hits("/o"),
        hits,
        "answered without asking the origin"
    );
    // Nothing stored: the fast 503.
    let r = get(s.proxy_addr, "/never").await;
    assert_eq!(r.status, 503);
    assert!(r.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_in_the_background() {
    let s = setup("", |_| {}).await;
    s.origin
        .route("/swr", stored("max-age=1, stale-while-revalidate=60"));
    get(s.proxy_addr, "/swr").await;
    settle().await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    s.origin.route(
        "/swr",
        Route {
            body: Bytes::from_static(b"new"),
            etag: Some("\"v2\"".into()),
            ..stored("max-age=600")
        },
    );
    let r = get(s.proxy_addr, "/swr").await;
    assert_eq!(r.headers["x-cache-status"], "stale");
    assert_eq!(r.body, blob(100), "the stored body, at once");
    settle().await;
    let r = get(s.proxy_addr, "/swr").await;
    assert_eq!(r.headers["x-cache-status"], "hit");
    assert_eq!(r.body, "new", "refreshed in the background");
    assert_eq!(s.origin.hits("/swr"), 2);
}
