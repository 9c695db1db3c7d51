//! Ghost mode through the proxy: learned answers when the origin fails, the nearest learned
//! answer for a request never seen, credentials never shared, and what ghost mode leaves alone.
use bytes::Bytes;

use super::test_harness::*;
use crate::config::{Millis, OriginsConfig};

const GHOST: &str = r#"
[[rule]]
name = "api"
match_host = "origin.test"
match_path = "/api/*"
action = "cache"
ghost = true
"#;

/// An answer HTTP caching would never store.
fn uncacheable(body: &'static str) -> Route {
    Route {
        status: 200,
        headers: vec![
            ("cache-control", "no-store".into()),
            ("content-type", "application/json".into()),
        ],
        body: Bytes::from_static(body.as_bytes()),
        ..Default::default()
    }
}

async fn learned(paths: &[(&str, &'static str)], origins: OriginsConfig) -> Setup {
    let s = setup_all(GHOST, |_| {}, Vec::new(), origins).await;
    for (p, body) in paths {
        s.origin.route(p, uncacheable(body));
        assert_eq!(get(s.proxy_addr, p).await.status, 200);
    }
    settle().await;
    s
}

#[tokio::test]
async fn a_dead_origin_is_answered_with_the_last_good_response_marked_ghost() {
    let s = learned(&[("/api/users/1", "{\"id\":1}")], OriginsConfig::default()).await;
    s.origin.set_down(true);
    let r = get(s.proxy_addr, "/api/users/1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "{\"id\":1}");
    assert_eq!(r.headers["x-cache-status"], "ghost");
    assert!(r.headers.contains_key("age"));
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["content-length"], "8");
    assert!(!r.headers.contains_key("x-ghost-source"));
    let head = send(s.proxy_addr, "HEAD", "/api/users/1", &[]).await;
    assert_eq!((head.status, head.body.len()), (200, 0));
    assert_eq!(head.headers["x-cache-status"], "ghost");
}

#[tokio::test]
async fn a_request_never_seen_gets_the_nearest_learned_answer_with_its_source() {
    let s = learned(
        &[
            ("/api/users/1/orders", "orders of 1"),
            ("/api/items/0f8fad5b-d9cb-469f-a165-70867728950e", "item"),
        ],
        OriginsConfig::default(),
    )
    .await;
    s.origin.set_down(true);
    let r = get(s.proxy_addr, "/api/users/42/orders").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "orders of 1");
    assert_eq!(r.headers["x-cache-status"], "ghost-nearest");
    assert_eq!(
        r.headers["x-ghost-source"],
        "http://origin.test/api/users/1/orders"
    );
    let r = get(
        s.proxy_addr,
        "/api/items/6ba7b810-9dad-11d1-80b4-00c04fd430c8",
    )
    .await;
    assert_eq!((r.status, r.body), (200, Bytes::from_static(b"item")));
    // Another shape: nothing learned, the failure goes through.
    assert_eq!(get(s.proxy_addr, "/api/users/42/profile").await.status, 502);
}

#[tokio::test]
async fn answers_to_requests_with_credentials_are_never_shared() {
    let s = setup_all(GHOST, |_| {}, Vec::new(), OriginsConfig::default()).await;
    s.origin.route("/api/me", uncacheable("alice"));
    let alice = [("authorization", "Bearer alice")];
    assert_eq!(
        send(s.proxy_addr, "GET", "/api/me", &alice).await.status,
        200
    );
    settle().await;
    s.origin.set_down(true);
    let r = send(s.proxy_addr, "GET", "/api/me", &alice).await;
    assert_eq!((r.status, r.body), (200, Bytes::from_static(b"alice")));
    let bob = [("authorization", "Bearer bob")];
    assert_eq!(send(s.proxy_addr, "GET", "/api/me", &bob).await.status, 502);
    assert_eq!(get(s.proxy_addr, "/api/me").await.status, 502);
    let cookie = [("cookie", "sid=1")];
    assert_eq!(
        send(s.proxy_addr, "GET", "/api/me", &cookie).await.status,
        502
    );
}

#[tokio::test]
async fn a_5xx_and_an_open_breaker_are_answered_from_what_was_learned() {
    let cfg = OriginsConfig {
        consecutive_failures: 2,
        open_ms: Millis(60_000),
        ..OriginsConfig::default()
    };
    let s = learned(&[("/api/status", "all good")], cfg).await;
    s.origin.route(
        "/api/status",
        Route {
            status: 500,
            body: Bytes::from_static(b"boom"),
            ..Default::default()
        },
    );
    for _ in 0..2 {
        let r = get(s.proxy_addr, "/api/status").await;
        assert_eq!(
            (r.status, r.body.clone()),
            (200, Bytes::from_static(b"all good"))
        );
        assert_eq!(r.headers["x-cache-status"], "ghost");
    }
    assert_eq!(s.origins.report().origins[0].state, "open");
    let hits = s.origin.hits("/api/status");
    let r = get(s.proxy_addr, "/api/status").await;
    assert_eq!((r.status, r.body), (200, Bytes::from_static(b"all good")));
    assert_eq!(
        s.origin.hits("/api/status"),
        hits,
        "the breaker kept it from the origin"
    );
    // Nothing learned for this one: the fast 503.
    assert_eq!(get(s.proxy_addr, "/api/unknown").await.status, 503);
}

#[tokio::test]
async fn without_a_ghost_rule_failures_reach_the_client() {
    let s = setup_all("", |_| {}, Vec::new(), OriginsConfig::default()).await;
    s.origin.route("/api/x", uncacheable("x"));
    assert_eq!(get(s.proxy_addr, "/api/x").await.status, 200);
    settle().await;
    s.origin.set_down(true);
    assert_eq!(get(s.proxy_addr, "/api/x").await.status, 502);
}

#[tokio::test]
async fn a_usable_stale_cache_entry_is_preferred_to_the_learned_answer() {
    let s = setup_all(GHOST, |_| {}, Vec::new(), OriginsConfig::default()).await;
    s.origin.route(
        "/api/c",
        Route {
            status: 200,
            headers: vec![("cache-control", "max-age=0".into())],
            body: Bytes::from_static(b"cached"),
            etag: Some("\"c\"".into()),
            ..Default::default()
        },
    );
    get(s.proxy_addr, "/api/c").await;
    settle().await;
    s.origin.set_down(true);
    let r = get(s.proxy_addr, "/api/c").await;
    assert_eq!(r.headers["x-cache-status"], "stale");
    assert_eq!(r.body, "cached");
}

#[tokio::test]
async fn error_answers_and_other_methods_are_never_learned() {
    let s = setup_all(GHOST, |_| {}, Vec::new(), OriginsConfig::default()).await;
    s.origin.route(
        "/api/e",
        Route {
            status: 404,
            body: Bytes::from_static(b"gone"),
            ..Default::default()
        },
    );
    assert_eq!(get(s.proxy_addr, "/api/e").await.status, 404);
    settle().await;
    s.origin.set_down(true);
    assert_eq!(get(s.proxy_addr, "/api/e").await.status, 502);
    assert_eq!(send(s.proxy_addr, "POST", "/api/e", &[]).await.status, 502);
}
