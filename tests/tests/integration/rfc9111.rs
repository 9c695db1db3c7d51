//! What testing the cache from outside found missing from RFC 9111 (issue 16), checked with
//! `curl` in `client` through the gateway against the scripted origin: a final status the
//! origin gives explicit freshness is stored whatever it is; a list-valued `Age` counts by its
//! first member; the origin's `103 Early Hints` reach the client ahead of the response and are
//! never stored.
use serde_json::json;
use velocache_tests::{Daemon, Lab, require_tools};

use crate::http::{Origin, curl, url};

/// The response heads curl received (1xx included), then the body, for `path`.
fn heads(lab: &Lab, path: &str) -> String {
    curl(lab, &["-D", "-", "-o", "/dev/null", &url(path)]).to_ascii_lowercase()
}

#[test]
fn early_hints_reach_curl_before_the_response_and_only_the_response_is_stored() {
    require_tools(&["curl", "python3"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    origin.file("page.html", 2000);
    origin.route(
        "/page.html",
        json!({
            "headers": {"Cache-Control": "max-age=600"},
            "hints": {"Link": "</style.css>; rel=preload; as=style"},
        }),
    );
    let _daemon = Daemon::start(&lab, "");
    let miss = heads(&lab, "/page.html");
    let hints = miss
        .find("http/1.1 103")
        .unwrap_or_else(|| panic!("no 103 reached the client: {miss}"));
    let fin = miss
        .find("http/1.1 200")
        .unwrap_or_else(|| panic!("no final response: {miss}"));
    assert!(hints < fin, "the hints come first: {miss}");
    assert!(
        miss[hints..fin].contains("link: </style.css>; rel=preload; as=style"),
        "{miss}"
    );
    assert!(miss[fin..].contains("x-cache-status: miss"), "{miss}");
    assert!(
        !miss[fin..].contains("link:"),
        "hints stay out of the final head: {miss}"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let hit = heads(&lab, "/page.html");
    assert!(hit.starts_with("http/1.1 200"), "a hit has no hints: {hit}");
    assert!(hit.contains("x-cache-status: hit"), "{hit}");
    assert!(!hit.contains("link:"), "{hit}");
    assert_eq!(origin.count("/page.html"), 1);
}

#[test]
fn a_503_with_max_age_is_served_from_the_cache_and_an_aged_response_is_not() {
    require_tools(&["curl", "python3"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    origin.file("busy", 100);
    origin.route(
        "/busy",
        json!({"status": 503, "headers": {"Cache-Control": "max-age=600"}}),
    );
    // Fresh for an hour, but two hours old by the first member of its Age.
    origin.file("aged", 100);
    origin.route(
        "/aged",
        json!({"headers": {"Cache-Control": "max-age=3600", "Age": "7200, 0"}}),
    );
    let _daemon = Daemon::start(&lab, "");
    for path in ["/busy", "/aged"] {
        let first = heads(&lab, path);
        assert!(first.contains("x-cache-status: miss"), "{path}: {first}");
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let busy = heads(&lab, "/busy");
    assert!(busy.starts_with("http/1.1 503"), "{busy}");
    assert!(
        busy.contains("x-cache-status: hit"),
        "the 503 was stored: {busy}"
    );
    assert_eq!(origin.count("/busy"), 1);
    let aged = heads(&lab, "/aged");
    assert!(
        !aged.contains("x-cache-status: hit"),
        "stale on arrival: {aged}"
    );
    assert_eq!(origin.count("/aged"), 2);
}
