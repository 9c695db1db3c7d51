//! RFC 9111 decisions against hand-built header sets.
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::*;
use crate::cache::meta::sample;

fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.append(*k, HeaderValue::from_str(v).unwrap());
    }
    m
}

fn date(secs: u64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

const OK: StatusCode = StatusCode::OK;

#[test]
fn storable_needs_get_and_respects_no_store_private_and_authorization() {
    let fresh = h(&[("cache-control", "max-age=60")]);
    assert_eq!(storable(&Method::GET, &h(&[]), OK, &fresh, None), Ok(()));
    assert_eq!(
        storable(&Method::HEAD, &h(&[]), OK, &fresh, None),
        Err(NotStorable::Method)
    );
    assert_eq!(
        storable(
            &Method::GET,
            &h(&[("cache-control", "no-store")]),
            OK,
            &fresh,
            None
        ),
        Err(NotStorable::RequestNoStore)
    );
    assert_eq!(
        storable(
            &Method::GET,
            &h(&[]),
            OK,
            &h(&[("cache-control", "no-store, max-age=9")]),
            Some(9)
        ),
        Err(NotStorable::NoStore)
    );
    assert_eq!(
        storable(
            &Method::GET,
            &h(&[]),
            OK,
            &h(&[("cache-control", "private, max-age=60")]),
            None
        ),
        Err(NotStorable::Private)
    );
    let auth = h(&[("authorization", "Bearer x")]);
    assert_eq!(
        storable(&Method::GET, &auth, OK, &fresh, None),
        Err(NotStorable::Authorization)
    );
    for ok in [
        "public, max-age=5",
        "s-maxage=5",
        "must-revalidate, max-age=5",
    ] {
        assert_eq!(
            storable(&Method::GET, &auth, OK, &h(&[("cache-control", ok)]), None),
            Ok(()),
            "{ok}"
        );
    }
}

#[test]
fn set_cookie_is_stored_only_when_public_or_ruled() {
    let get = |r: &HeaderMap, ttl| storable(&Method::GET, &h(&[]), OK, r, ttl);
    let r = h(&[("cache-control", "max-age=60"), ("set-cookie", "s=1")]);
    assert_eq!(get(&r, None), Err(NotStorable::SetCookie));
    assert_eq!(get(&r, Some(60)), Ok(()));
    let r = h(&[
        ("cache-control", "public, max-age=60"),
        ("set-cookie", "s=1"),
    ]);
    assert_eq!(get(&r, None), Ok(()));
}

#[test]
fn storable_status_codes_and_usefulness() {
    let fresh = h(&[("cache-control", "max-age=60")]);
    let get = |s: u16, r: &HeaderMap, ttl| {
        storable(
            &Method::GET,
            &h(&[]),
            StatusCode::from_u16(s).unwrap(),
            r,
            ttl,
        )
    };
    for s in [200, 203, 301, 404, 410] {
        assert_eq!(get(s, &fresh, None), Ok(()), "{s}");
    }
    // 302 only with explicit freshness or a rule's lifetime; 206 and 304 never.
    assert_eq!(get(302, &fresh, None), Ok(()));
    assert_eq!(get(302, &h(&[]), Some(60)), Ok(()));
    assert_eq!(
        get(302, &h(&[("etag", "\"a\"")]), None),
        Err(NotStorable::Status)
    );
    assert_eq!(get(206, &fresh, None), Err(NotStorable::Status));
    assert_eq!(get(304, &fresh, None), Err(NotStorable::Status));
    // Any other final status is stored when the origin gave it explicit freshness (§3)…
    let expires = h(&[("expires", "Thu, 01 Jan 2099 00:00:00 GMT")]);
    for s in [201, 202, 303, 400, 403, 418, 500, 502, 503, 599] {
        assert_eq!(get(s, &fresh, None), Ok(()), "{s} with max-age");
        assert_eq!(get(s, &expires, None), Ok(()), "{s} with Expires");
        // …but not on a validator alone, nor on a rule's lifetime.
        assert_eq!(
            get(s, &h(&[("etag", "\"a\"")]), None),
            Err(NotStorable::Status),
            "{s} with a validator only"
        );
        assert_eq!(get(s, &h(&[]), Some(60)), Err(NotStorable::Status), "{s}");
    }
    // Nothing to go on: not stored, unless a rule supplies a lifetime.
    assert_eq!(get(200, &h(&[]), None), Err(NotStorable::Unusable));
    assert_eq!(get(200, &h(&[]), Some(60)), Ok(()));
    // A validator alone is enough (it will be revalidated every time).
    assert_eq!(get(200, &h(&[("etag", "\"a\"")]), None), Ok(()));
    assert_eq!(
        get(
            200,
            &h(&[("cache-control", "max-age=5"), ("vary", "accept, *")]),
            None
        ),
        Err(NotStorable::VaryStar)
    );
}

#[test]
fn lifetime_precedence() {
    let now = 100_000_000;
    let l = |r: &HeaderMap, ttl| lifetime(OK, r, now, Heuristic::default(), ttl);
    assert_eq!(
        l(&h(&[("cache-control", "max-age=60, s-maxage=5")]), None),
        5
    );
    assert_eq!(
        l(
            &h(&[
                ("cache-control", "max-age=60"),
                ("expires", &date(now + 999))
            ]),
            None
        ),
        60
    );
    assert_eq!(
        l(
            &h(&[("date", &date(now - 10)), ("expires", &date(now + 90))]),
            None
        ),
        100
    );
    assert_eq!(
        l(&h(&[("expires", "0")]), None),
        0,
        "invalid Expires is expired"
    );
    assert_eq!(l(&h(&[("cache-control", "max-age=60")]), Some(7)), 7);
    // Heuristic: 10% of the time since Last-Modified, capped at a day.
    assert_eq!(
        l(
            &h(&[("date", &date(now)), ("last-modified", &date(now - 1000))]),
            None
        ),
        100
    );
    assert_eq!(
        l(&h(&[("last-modified", &date(now - 100 * 86_400))]), None),
        86_400
    );
    assert_eq!(l(&h(&[("etag", "\"x\"")]), None), 0);
    // Not heuristically cacheable: no heuristic.
    assert_eq!(
        lifetime(
            StatusCode::FOUND,
            &h(&[("last-modified", &date(now - 1000))]),
            now,
            Heuristic::default(),
            None
        ),
        0
    );
}

#[test]
fn age_arithmetic() {
    // Sent at 100, received at 103, origin said Date 101 and Age 5.
    let r = h(&[("date", &date(101)), ("age", "5")]);
    assert_eq!(initial_age(&r, 100, 103), 8);
    // Clock skew: a Date in the future gives no negative age.
    let r = h(&[("date", &date(500))]);
    assert_eq!(initial_age(&r, 100, 100), 0);
    // Apparent age wins when larger.
    let r = h(&[("date", &date(50))]);
    assert_eq!(initial_age(&r, 100, 100), 50);
    // A list-valued Age counts by its first member (§5.1).
    let r = h(&[("date", &date(100)), ("age", "7200, 0")]);
    assert_eq!(initial_age(&r, 100, 100), 7200);
    let r = h(&[("date", &date(100)), ("age", " 30 ,7200")]);
    assert_eq!(initial_age(&r, 100, 100), 30);
    let r = h(&[("date", &date(100)), ("age", "7200"), ("age", "0")]);
    assert_eq!(initial_age(&r, 100, 100), 7200);
    let mut m = sample(Some(1), 1 << 20);
    m.initial_age = 8;
    m.response_time = 103;
    assert_eq!(current_age(&m, 110), 15);
}

fn meta_with(cc: &str, lifetime_secs: u64, age_now: u64) -> (ObjectMeta, u64) {
    let mut m = sample(Some(10), 1 << 20);
    if !cc.is_empty() {
        m.headers
            .insert("cache-control", HeaderValue::from_str(cc).unwrap());
    }
    m.lifetime = lifetime_secs;
    m.initial_age = 0;
    m.response_time = 1_000;
    (m, 1_000 + age_now)
}

#[test]
fn fresh_stale_and_revalidate() {
    let none = h(&[]);
    let (m, now) = meta_with("max-age=60", 60, 10);
    assert_eq!(evaluate(&m, &none, now), Usable::Fresh);
    let (m, now) = meta_with("max-age=60", 60, 60);
    assert_eq!(evaluate(&m, &none, now), Usable::Revalidate);
    // Response no-cache: always revalidate, unless a rule overrides.
    let (mut m, now) = meta_with("no-cache, max-age=60", 60, 1);
    assert_eq!(evaluate(&m, &none, now), Usable::Revalidate);
    m.ttl_override = true;
    assert_eq!(evaluate(&m, &none, now), Usable::Fresh);
    // Request no-cache / max-age=0 / Pragma.
    let (m, now) = meta_with("max-age=60", 60, 1);
    assert_eq!(
        evaluate(&m, &h(&[("cache-control", "no-cache")]), now),
        Usable::Revalidate
    );
    assert_eq!(
        evaluate(&m, &h(&[("cache-control", "max-age=0")]), now),
        Usable::Revalidate
    );
    assert_eq!(
        evaluate(&m, &h(&[("pragma", "no-cache")]), now),
        Usable::Revalidate
    );
    assert_eq!(
        evaluate(&m, &h(&[("cache-control", "min-fresh=59")]), now),
        Usable::Revalidate
    );
}

#[test]
fn stale_while_revalidate_and_must_revalidate() {
    let none = h(&[]);
    let (m, now) = meta_with("max-age=10, stale-while-revalidate=30", 10, 20);
    assert_eq!(evaluate(&m, &none, now), Usable::StaleWhileRevalidate);
    let (m, now) = meta_with("max-age=10, stale-while-revalidate=30", 10, 41);
    assert_eq!(evaluate(&m, &none, now), Usable::Revalidate);
    let (m, now) = meta_with(
        "max-age=10, must-revalidate, stale-while-revalidate=30",
        10,
        20,
    );
    assert_eq!(evaluate(&m, &none, now), Usable::Revalidate);
    let (m, now) = meta_with("s-maxage=10, stale-while-revalidate=30", 10, 20);
    assert_eq!(evaluate(&m, &none, now), Usable::Revalidate);
    // The client's max-stale.
    let (m, now) = meta_with("max-age=10", 10, 15);
    assert_eq!(
        evaluate(&m, &h(&[("cache-control", "max-stale=10")]), now),
        Usable::StaleWhileRevalidate
    );
    // No freshness information at all: revalidate every time.
    let (m, now) = meta_with("", 0, 0);
    assert_eq!(evaluate(&m, &none, now), Usable::Revalidate);
}

#[test]
fn vary_selects_the_variant() {
    let resp = h(&[
        ("vary", "Accept-Encoding, accept-language"),
        ("vary", "Accept-Encoding"),
    ]);
    let req = h(&[("accept-encoding", " gzip "), ("accept-language", "en")]);
    let captured = vary_capture(&resp, &req).unwrap();
    assert_eq!(captured.len(), 2);
    let mut m = sample(Some(1), 1 << 20);
    m.vary = captured;
    assert!(vary_matches(
        &m,
        &h(&[("accept-encoding", "gzip"), ("accept-language", "en")])
    ));
    assert!(!vary_matches(
        &m,
        &h(&[("accept-encoding", "br"), ("accept-language", "en")])
    ));
    assert!(!vary_matches(&m, &h(&[("accept-encoding", "gzip")])));
    // Absent on both sides matches.
    m.vary = vary_capture(&h(&[("vary", "x-a")]), &h(&[])).unwrap();
    assert!(vary_matches(&m, &h(&[])));
    assert!(!vary_matches(&m, &h(&[("x-a", "1")])));
    assert!(vary_capture(&h(&[("vary", "*")]), &req).is_none());
}

#[test]
fn revalidation_headers_and_304_merge() {
    let mut m = sample(Some(1), 1 << 20);
    m.headers.insert(
        "last-modified",
        HeaderValue::from_static("Tue, 01 Jan 2030 00:00:00 GMT"),
    );
    let cond = conditional_headers(&m);
    assert_eq!(cond[0].0, http::header::IF_NONE_MATCH);
    assert_eq!(cond[0].1, "\"v1\"");
    assert_eq!(cond[1].0, http::header::IF_MODIFIED_SINCE);
    let nm = h(&[
        ("etag", "\"v1\""),
        ("cache-control", "max-age=99"),
        ("content-length", "0"),
        ("connection", "close"),
        ("x-new", "1"),
        ("x-new", "2"),
    ]);
    assert!(not_modified_matches(&m, &nm));
    let merged = merge_304(&m.headers, &nm);
    assert_eq!(merged["cache-control"], "max-age=99");
    assert_eq!(merged.get_all("x-new").iter().count(), 2);
    assert!(merged.get("content-length").is_none());
    assert!(merged.get("connection").is_none());
    assert_eq!(merged["content-type"], "application/octet-stream");
    assert!(!not_modified_matches(&m, &h(&[("etag", "\"v2\"")])));
}

#[test]
fn client_conditionals() {
    let mut m = sample(Some(1), 1 << 20);
    m.headers.insert(
        "last-modified",
        HeaderValue::from_str(&date(1_000)).unwrap(),
    );
    assert!(client_not_modified(
        &m,
        &h(&[("if-none-match", "\"x\", W/\"v1\"")])
    ));
    assert!(client_not_modified(&m, &h(&[("if-none-match", "*")])));
    assert!(!client_not_modified(&m, &h(&[("if-none-match", "\"x\"")])));
    // If-None-Match wins over If-Modified-Since.
    assert!(!client_not_modified(
        &m,
        &h(&[
            ("if-none-match", "\"x\""),
            ("if-modified-since", &date(2_000))
        ])
    ));
    assert!(client_not_modified(
        &m,
        &h(&[("if-modified-since", &date(2_000))])
    ));
    assert!(!client_not_modified(
        &m,
        &h(&[("if-modified-since", &date(500))])
    ));
    assert!(!client_not_modified(&m, &h(&[])));
}

#[test]
fn if_range() {
    let mut m = sample(Some(1), 1 << 20);
    m.headers.insert(
        "last-modified",
        HeaderValue::from_str(&date(1_000)).unwrap(),
    );
    assert!(if_range_allows(&m, &h(&[])));
    assert!(if_range_allows(&m, &h(&[("if-range", "\"v1\"")])));
    assert!(!if_range_allows(&m, &h(&[("if-range", "\"v2\"")])));
    assert!(!if_range_allows(&m, &h(&[("if-range", "W/\"v1\"")])));
    assert!(if_range_allows(&m, &h(&[("if-range", &date(1_000))])));
    assert!(!if_range_allows(&m, &h(&[("if-range", &date(999))])));
}

#[test]
fn unsafe_methods_invalidate_on_success() {
    assert!(invalidates(&Method::POST, StatusCode::OK));
    assert!(invalidates(&Method::DELETE, StatusCode::NO_CONTENT));
    assert!(invalidates(&Method::PUT, StatusCode::SEE_OTHER));
    assert!(!invalidates(
        &Method::POST,
        StatusCode::INTERNAL_SERVER_ERROR
    ));
    assert!(!invalidates(&Method::GET, StatusCode::OK));
    assert!(!invalidates(&Method::OPTIONS, StatusCode::OK));
    assert!(invalidates(
        &Method::from_bytes(b"PURGE").unwrap(),
        StatusCode::OK
    ));
}

#[test]
fn hop_by_hop_names() {
    for n in [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "te",
        "proxy-connection",
    ] {
        assert!(is_hop_by_hop(&HeaderName::from_static(n)), "{n}");
    }
    assert!(!is_hop_by_hop(&http::header::CONTENT_TYPE));
}

#[test]
fn stale_if_error_window() {
    let (m, now) = meta_with("max-age=10, stale-if-error=60", 10, 30);
    assert!(stale_if_error(&m, now));
    let (m, now) = meta_with("max-age=10, stale-if-error=60", 10, 80);
    assert!(!stale_if_error(&m, now));
    let (m, now) = meta_with("max-age=10, must-revalidate, stale-if-error=60", 10, 30);
    assert!(!stale_if_error(&m, now));
    let (m, now) = meta_with("max-age=10", 10, 30);
    assert!(!stale_if_error(&m, now));
}
