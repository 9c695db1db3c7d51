use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};

use super::*;
use crate::config::OriginsConfig;

fn dst() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 2], 80))
}

fn req(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

fn learn(store: &GhostStore, path: &str, r: &HeaderMap, body: &'static str) {
    let key = GhostKey::new(dst(), "api.lab", path, r);
    let mut head = HeaderMap::new();
    head.insert("content-type", HeaderValue::from_static("text/plain"));
    head.insert("content-length", HeaderValue::from_static("999"));
    store.learn(&key, r, 200, head, Bytes::from_static(body.as_bytes()));
}

fn key(path: &str, r: &HeaderMap) -> GhostKey {
    GhostKey::new(dst(), "api.lab", path, r)
}

#[test]
fn the_last_good_answer_is_found_again_for_the_same_request_only() {
    let s = GhostStore::new(&OriginsConfig::default());
    let none = req(&[]);
    learn(&s, "/users/1", &none, "old");
    learn(&s, "/users/1", &none, "one");
    let l = s.exact(&key("/users/1", &none), &none).unwrap();
    assert_eq!(l.body, "one");
    assert_eq!(l.status, 200);
    assert!(
        !l.headers.contains_key("content-length"),
        "framing is the answer's own"
    );
    assert!(s.exact(&key("/users/2", &none), &none).is_none());
    let other_host = GhostKey::new(dst(), "other.lab", "/users/1", &none);
    assert!(s.exact(&other_host, &none).is_none());
}

#[test]
fn credentials_key_the_answer_and_are_never_shared() {
    let s = GhostStore::new(&OriginsConfig::default());
    let alice = req(&[("authorization", "Bearer alice")]);
    let bob = req(&[("authorization", "Bearer bob")]);
    let cookie = req(&[("cookie", "session=1")]);
    let none = req(&[]);
    learn(&s, "/me", &alice, "alice's");
    assert_eq!(
        s.exact(&key("/me", &alice), &alice).unwrap().body,
        "alice's"
    );
    assert!(s.exact(&key("/me", &bob), &bob).is_none());
    assert!(s.exact(&key("/me", &none), &none).is_none());
    assert!(s.exact(&key("/me", &cookie), &cookie).is_none());
    assert!(s.nearest(&key("/me", &bob), &bob).is_none());
    learn(&s, "/orders/1", &alice, "alice's order");
    assert!(s.nearest(&key("/orders/2", &bob), &bob).is_none());
    assert!(s.nearest(&key("/orders/2", &alice), &alice).is_some());
}

#[test]
fn a_request_never_seen_gets_the_nearest_learned_one_of_its_template() {
    let s = GhostStore::new(&OriginsConfig::default());
    let none = req(&[]);
    learn(&s, "/users/1/orders/10", &none, "u1o10");
    learn(&s, "/users/2/orders/20", &none, "u2o20");
    learn(&s, "/users/2/profile", &none, "profile");
    let l = s.nearest(&key("/users/2/orders/99", &none), &none).unwrap();
    assert_eq!(l.body, "u2o20", "one piece differs, not two");
    assert_eq!(l.path, "/users/2/orders/20");
    assert!(s.nearest(&key("/users/3/settings", &none), &none).is_none());
    assert!(s.nearest(&key("/products/5", &none), &none).is_none());
}

#[test]
fn vary_keeps_an_answer_from_clients_that_asked_differently() {
    let s = GhostStore::new(&OriginsConfig::default());
    let gz = req(&[("accept-encoding", "gzip")]);
    let key_gz = key("/a", &gz);
    let mut head = HeaderMap::new();
    head.insert("vary", HeaderValue::from_static("accept-encoding"));
    head.insert("content-encoding", HeaderValue::from_static("gzip"));
    s.learn(&key_gz, &gz, 200, head, Bytes::from_static(b"zz"));
    assert!(s.exact(&key_gz, &gz).is_some());
    let plain = req(&[]);
    assert!(s.exact(&key("/a", &plain), &plain).is_none());
}

#[test]
fn the_store_is_bounded_by_bytes_entries_and_body_size() {
    let cfg = OriginsConfig {
        ghost_max_entries: 4,
        ghost_max_bytes: 64 << 10,
        ghost_max_body_bytes: 1024,
        ..OriginsConfig::default()
    };
    let s = GhostStore::new(&cfg);
    let none = req(&[]);
    let big = GhostKey::new(dst(), "api.lab", "/big", &none);
    s.learn(
        &big,
        &none,
        200,
        HeaderMap::new(),
        Bytes::from(vec![0u8; 2048]),
    );
    assert!(s.exact(&big, &none).is_none(), "over ghost_max_body_bytes");
    for i in 0..50 {
        let k = GhostKey::new(dst(), "api.lab", &format!("/p/{i}"), &none);
        s.learn(&k, &none, 200, HeaderMap::new(), Bytes::from_static(b"x"));
    }
    let (entries, bytes) = s.usage();
    assert!(entries <= 4, "{entries} entries");
    assert!(bytes <= 64 << 10, "{bytes} bytes");
}
