//! The proxy against a real in-process origin (hyper on loopback), with the in-memory store.
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::test_harness::*;

#[tokio::test]
async fn miss_then_hit_small_and_large() {
    let s = setup("", |_| {}).await;
    for (path, len) in [("/small", 500usize), ("/large", 300_000)] {
        s.origin.route(path, cacheable(blob(len)));
        let a = get(s.proxy_addr, path).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.body, blob(len));
        assert_eq!(a.headers["x-cache-status"], "miss");
        settle().await;
        let b = get(s.proxy_addr, path).await;
        assert_eq!(b.body, blob(len));
        assert_eq!(b.headers["x-cache-status"], "hit");
        assert_eq!(b.headers["content-length"], len.to_string());
        assert!(b.headers.contains_key("age"));
        assert!(b.headers["via"].to_str().unwrap().contains("velocache"));
        assert_eq!(s.origin.hits(path), 1, "{path}");
    }
    // The origin saw our Via and no hop-by-hop headers.
    assert!(s.origin.last("/small").contains_key("via"));
}

#[tokio::test]
async fn no_store_private_and_authorization_are_never_stored() {
    let s = setup("", |_| {}).await;
    for (path, cc) in [("/ns", "no-store"), ("/pv", "private, max-age=60")] {
        s.origin.route(
            path,
            Route {
                status: 200,
                headers: vec![("cache-control", cc.into())],
                body: blob(100),
                ..Default::default()
            },
        );
        for _ in 0..2 {
            assert_eq!(get(s.proxy_addr, path).await.body, blob(100));
            settle().await;
        }
        assert_eq!(s.origin.hits(path), 2, "{path}");
    }
    s.origin.route("/auth", cacheable(blob(10)));
    for _ in 0..2 {
        send(
            s.proxy_addr,
            "GET",
            "/auth",
            &[("authorization", "Basic eA==")],
        )
        .await;
    }
    assert_eq!(s.origin.hits("/auth"), 2);
}

#[tokio::test]
async fn revalidation_with_304_merges_headers() {
    let s = setup("", |_| {}).await;
    s.origin.route(
        "/r",
        Route {
            status: 200,
            headers: vec![("cache-control", "max-age=0".into()), ("x-v", "1".into())],
            body: blob(2000),
            etag: Some("\"e1\"".into()),
            ..Default::default()
        },
    );
    assert_eq!(
        get(s.proxy_addr, "/r").await.headers["x-cache-status"],
        "miss"
    );
    settle().await;
    s.origin.route(
        "/r",
        Route {
            status: 200,
            headers: vec![("cache-control", "max-age=0".into()), ("x-v", "2".into())],
            body: blob(2000),
            etag: Some("\"e1\"".into()),
            ..Default::default()
        },
    );
    let b = get(s.proxy_addr, "/r").await;
    assert_eq!(b.headers["x-cache-status"], "revalidated");
    assert_eq!(b.headers["x-v"], "2", "304 headers merged");
    assert_eq!(b.body, blob(2000));
    assert_eq!(s.origin.last("/r")["if-none-match"], "\"e1\"");
    assert_eq!(s.origin.hits("/r"), 2);
}

#[tokio::test]
async fn ranges_heads_and_conditionals_from_the_cache() {
    let s = setup("", |_| {}).await;
    let mut r = cacheable(blob(200_000));
    r.etag = Some("\"b\"".into());
    s.origin.route("/b", r);
    get(s.proxy_addr, "/b").await;
    settle().await;
    let p = send(
        s.proxy_addr,
        "GET",
        "/b",
        &[("range", "bytes=100000-100099")],
    )
    .await;
    assert_eq!(p.status, 206);
    assert_eq!(p.headers["content-range"], "bytes 100000-100099/200000");
    assert_eq!(p.body, blob(200_000).slice(100_000..100_100));
    let p = send(s.proxy_addr, "GET", "/b", &[("range", "bytes=-10")]).await;
    assert_eq!(p.body, blob(200_000).slice(199_990..));
    let p = send(s.proxy_addr, "GET", "/b", &[("range", "bytes=300000-")]).await;
    assert_eq!(p.status, 416);
    assert_eq!(p.headers["content-range"], "bytes */200000");
    let h = send(s.proxy_addr, "HEAD", "/b", &[]).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.headers["content-length"], "200000");
    assert!(h.body.is_empty());
    let c = send(s.proxy_addr, "GET", "/b", &[("if-none-match", "\"b\"")]).await;
    assert_eq!(c.status, 304);
    assert_eq!(s.origin.hits("/b"), 1);
}

#[tokio::test]
async fn a_range_miss_fetches_only_the_slices_it_needs() {
    let s = setup("", |_| {}).await;
    let mut r = cacheable(blob(1_000_000));
    r.etag = Some("\"big\"".into());
    s.origin.route("/big", r);
    // Unknown object, Range far in: fetched from that slice on.
    let p = send(
        s.proxy_addr,
        "GET",
        "/big",
        &[("range", "bytes=700000-700009")],
    )
    .await;
    assert_eq!(p.status, 206);
    assert_eq!(p.body, blob(1_000_000).slice(700_000..700_010));
    let first = s.origin.last("/big");
    assert_eq!(
        first["range"],
        format!("bytes={}-", 700_000 / 65536 * 65536)
    );
    settle().await;
    // A full read fetches the missing head only, as a bounded range.
    let full = get(s.proxy_addr, "/big").await;
    assert_eq!(full.body, blob(1_000_000));
    assert_eq!(s.origin.hits("/big"), 2);
    assert_eq!(
        s.origin.last("/big")["range"],
        format!("bytes=0-{}", 700_000 / 65536 * 65536 - 1)
    );
    settle().await;
    assert_eq!(
        get(s.proxy_addr, "/big").await.headers["x-cache-status"],
        "hit"
    );
    assert_eq!(s.origin.hits("/big"), 2);
}

#[tokio::test]
async fn vary_selects_variants() {
    let s = setup("", |_| {}).await;
    let mut r = cacheable(blob(10));
    r.headers.push(("vary", "accept-language".into()));
    s.origin.route("/v", r);
    send(s.proxy_addr, "GET", "/v", &[("accept-language", "en")]).await;
    settle().await;
    let hit = send(s.proxy_addr, "GET", "/v", &[("accept-language", "en")]).await;
    assert_eq!(hit.headers["x-cache-status"], "hit");
    let other = send(s.proxy_addr, "GET", "/v", &[("accept-language", "fr")]).await;
    assert_eq!(other.headers["x-cache-status"], "miss");
    assert_eq!(s.origin.hits("/v"), 2);
}

#[tokio::test]
async fn concurrent_clients_share_one_origin_fetch() {
    let s = setup("", |_| {}).await;
    let mut r = cacheable(blob(500_000));
    r.delay_ms = 200;
    s.origin.route("/slow", r);
    let tasks: Vec<_> = (0..10)
        .map(|_| tokio::spawn(get(s.proxy_addr, "/slow")))
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().body, blob(500_000));
    }
    assert_eq!(s.origin.hits("/slow"), 1);
}

#[tokio::test]
async fn deny_rules_unsafe_methods_and_unknown_methods() {
    let s = setup(
        "[[rule]]\nname = \"no-ads\"\nmatch_path = \"/ads/*\"\naction = \"deny\"\n",
        |_| {},
    )
    .await;
    let d = get(s.proxy_addr, "/ads/x.js").await;
    assert_eq!(d.status, 403);
    assert!(d.body.len() < 100);
    assert!(std::str::from_utf8(&d.body).unwrap().contains("no-ads"));
    assert_eq!(s.origin.hits("/ads/x.js"), 0);

    s.origin.route("/doc", cacheable(blob(50)));
    get(s.proxy_addr, "/doc").await;
    settle().await;
    assert_eq!(
        get(s.proxy_addr, "/doc").await.headers["x-cache-status"],
        "hit"
    );
    // A successful POST invalidates; PUT/DELETE/OPTIONS/unknown pass through untouched.
    let mut post = cacheable(blob(1));
    post.status = 200;
    s.origin.route("/doc", post);
    assert_eq!(send(s.proxy_addr, "POST", "/doc", &[]).await.status, 200);
    s.origin.route("/doc", cacheable(blob(50)));
    assert_eq!(
        get(s.proxy_addr, "/doc").await.headers["x-cache-status"],
        "miss"
    );
    for m in ["PUT", "DELETE", "OPTIONS", "PURGE"] {
        send(s.proxy_addr, m, "/other", &[]).await;
    }
    assert_eq!(s.origin.hits("/other"), 4);
}

#[tokio::test]
async fn no_freshness_means_revalidate_unless_a_rule_says_otherwise() {
    let s = setup(
        "[[rule]]\nname = \"debs\"\nmatch_path = \"*.deb\"\naction = \"cache\"\nttl_override = \"1h\"\n",
        |_| {},
    )
    .await;
    for p in ["/a.txt", "/a.deb"] {
        s.origin.route(
            p,
            Route {
                status: 200,
                headers: vec![],
                body: blob(10),
                etag: Some("\"x\"".into()),
                ..Default::default()
            },
        );
        get(s.proxy_addr, p).await;
        settle().await;
    }
    assert_eq!(
        get(s.proxy_addr, "/a.txt").await.headers["x-cache-status"],
        "revalidated"
    );
    assert_eq!(
        get(s.proxy_addr, "/a.deb").await.headers["x-cache-status"],
        "hit"
    );
    assert_eq!(s.origin.hits("/a.txt"), 2);
    assert_eq!(s.origin.hits("/a.deb"), 1);
}

#[tokio::test]
async fn content_addressed_objects_are_verified() {
    use sha2::Digest as _;
    let s = setup(
        "[[rule]]\nname = \"blobs\"\nmatch_path = \"/v2/*/blobs/*\"\naction = \"cache\"\nttl_override = \"1d\"\ncache_key = { content_addressed = \"sha256\" }\n",
        |_| {},
    )
    .await;
    let good = blob(100_000);
    let digest = hex::encode(sha2::Sha256::digest(&good));
    let path = format!("/v2/lib/blobs/sha256:{digest}");
    s.origin.route(&path, cacheable(good.clone()));
    assert_eq!(get(s.proxy_addr, &path).await.body, good);
    settle().await;
    assert_eq!(
        get(s.proxy_addr, &path).await.headers["x-cache-status"],
        "hit"
    );
    // Same digest under another repository name: the same object.
    let other = format!("/v2/mirror/blobs/sha256:{digest}");
    assert_eq!(
        get(s.proxy_addr, &other).await.headers["x-cache-status"],
        "hit"
    );
    // A body that does not match its digest is never served from the cache.
    let bad = format!("/v2/lib/blobs/sha256:{}", "0".repeat(64));
    s.origin.route(&bad, cacheable(blob(5000)));
    // The first client's transfer is cut when verification fails at the end.
    let (addr, b) = (s.proxy_addr, bad.clone());
    let _ = tokio::spawn(async move { get(addr, &b).await }).await;
    settle().await;
    let b = bad.clone();
    let _ = tokio::spawn(async move { get(addr, &b).await }).await;
    assert_eq!(
        s.origin.hits(&bad),
        2,
        "an unverified object was served from the cache"
    );
}

#[tokio::test]
async fn chunked_bodies_of_unknown_length_are_stored_and_served() {
    let s = setup("", |_| {}).await;
    let mut r = cacheable(blob(200_000));
    r.chunked = 7;
    s.origin.route("/chunked", r);
    let a = get(s.proxy_addr, "/chunked").await;
    assert_eq!(a.body, blob(200_000));
    assert!(!a.headers.contains_key("content-length"));
    settle().await;
    let b = get(s.proxy_addr, "/chunked").await;
    assert_eq!(b.headers["x-cache-status"], "hit");
    assert_eq!(b.headers["content-length"], "200000");
    assert_eq!(b.body, blob(200_000));
    assert_eq!(s.origin.hits("/chunked"), 1);
}

#[tokio::test]
async fn upgrades_are_tunnelled() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let s = setup("", |_| {}).await;
    s.origin.route(
        "/ws",
        Route {
            status: 200,
            echo_upgrade: true,
            ..Default::default()
        },
    );
    let tcp = TcpStream::connect(s.proxy_addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    let req = Request::builder()
        .uri("/ws")
        .header("host", "origin.test")
        .header("connection", "upgrade")
        .header("upgrade", "echo")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    let mut io = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    io.write_all(b"ping through the tunnel").await.unwrap();
    let mut buf = [0u8; 23];
    io.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping through the tunnel");
}

#[test]
fn http_config_is_validated() {
    use crate::config::Config;
    assert!(Config::default().validate().is_ok());
    let bad = |f: &dyn Fn(&mut Config), key: &str| {
        let mut c = Config::default();
        f(&mut c);
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, key, "{}", e.reason);
    };
    bad(&|c| c.http.slice_bytes = 1000, "http.slice_bytes");
    bad(
        &|c| c.http.cache_max_bytes = 1 << 16,
        "http.cache_max_bytes",
    );
    bad(
        &|c| c.http.max_object_bytes = u64::MAX,
        "http.max_object_bytes",
    );
    bad(
        &|c| c.http.lock_wait_ms = crate::config::Millis(0),
        "http.lock_wait_ms",
    );
    bad(&|c| c.http.uring_entries = 100, "http.uring_entries");
    bad(&|c| c.http.via = "has space".into(), "http.via");
    bad(
        &|c| c.http.heuristic_percent = 101,
        "http.heuristic_percent",
    );
    bad(
        &|c| c.http.memory_object_max_bytes = c.http.memory_cache_bytes + 1,
        "http.memory_object_max_bytes",
    );
}

#[tokio::test]
async fn stale_if_error_answers_when_the_origin_fails() {
    let s = setup("", |_| {}).await;
    s.origin.route(
        "/sie",
        Route {
            status: 200,
            headers: vec![("cache-control", "max-age=0, stale-if-error=600".into())],
            body: blob(100),
            etag: Some("\"s\"".into()),
            ..Default::default()
        },
    );
    get(s.proxy_addr, "/sie").await;
    settle().await;
    s.origin.route(
        "/sie",
        Route {
            status: 503,
            body: Bytes::from_static(b"down"),
            ..Default::default()
        },
    );
    let r = get(s.proxy_addr, "/sie").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-cache-status"], "stale");
    assert_eq!(r.body, blob(100));
}

#[tokio::test]
async fn any_final_status_with_explicit_freshness_is_stored_and_revalidated_once_stale() {
    let s = setup("", |_| {}).await;
    for status in [403u16, 503, 201] {
        // Fresh for an hour: stored and served.
        let fresh = format!("/fresh/{status}");
        // Fresh for a minute but two minutes old on arrival: stored, then revalidated.
        let aged = format!("/aged/{status}");
        for (path, age) in [(&fresh, "0"), (&aged, "120")] {
            s.origin.route(
                path,
                Route {
                    status,
                    headers: vec![
                        (
                            "cache-control",
                            if age == "0" {
                                "max-age=3600"
                            } else {
                                "max-age=60"
                            }
                            .into(),
                        ),
                        ("age", age.into()),
                    ],
                    body: Bytes::from(format!("status {status}")),
                    ..Default::default()
                },
            );
            let first = get(s.proxy_addr, path).await;
            assert_eq!(first.status, status);
            assert_eq!(first.headers["x-cache-status"], "miss");
        }
        settle().await;
        let hit = get(s.proxy_addr, &fresh).await;
        assert_eq!(hit.status, status, "{fresh}");
        assert_eq!(hit.headers["x-cache-status"], "hit", "{fresh}: stored");
        assert_eq!(hit.body, Bytes::from(format!("status {status}")));
        assert_eq!(s.origin.hits(&fresh), 1, "{fresh}");
        // Stale: back to the origin, never served stale without permission.
        let again = get(s.proxy_addr, &aged).await;
        assert_eq!(again.status, status, "{aged}");
        assert_ne!(
            again.headers.get("x-cache-status").map(|v| v.as_bytes()),
            Some(&b"hit"[..]),
            "{aged}"
        );
        assert_eq!(s.origin.hits(&aged), 2, "{aged}: revalidated once stale");
    }
    // A final status without explicit freshness is still not stored.
    s.origin.route(
        "/teapot",
        Route {
            status: 418,
            headers: vec![("etag", "\"t\"".into())],
            body: Bytes::from_static(b"short and stout"),
            ..Default::default()
        },
    );
    get(s.proxy_addr, "/teapot").await;
    settle().await;
    let r = get(s.proxy_addr, "/teapot").await;
    assert_eq!(r.status, 418);
    assert_eq!(
        s.origin.hits("/teapot"),
        2,
        "a 418 on a validator alone is not stored"
    );
}

#[tokio::test]
async fn a_list_valued_age_counts_by_its_first_member() {
    let s = setup("", |_| {}).await;
    // Two hours old by its first Age member, fresh for one: stale on arrival, so the next
    // request goes back to the origin; the old reading (unparseable, so 0) served it as a hit.
    s.origin.route(
        "/old",
        Route {
            status: 200,
            headers: vec![
                ("cache-control", "max-age=3600".into()),
                ("age", "7200, 0".into()),
            ],
            body: blob(64),
            etag: Some("\"o\"".into()),
            ..Default::default()
        },
    );
    get(s.proxy_addr, "/old").await;
    settle().await;
    let r = get(s.proxy_addr, "/old").await;
    assert_ne!(r.headers["x-cache-status"], "hit");
    assert_eq!(s.origin.hits("/old"), 2);
    // Its first member alone is small: a hit, and the Age sent on is at least it.
    s.origin.route(
        "/young",
        Route {
            status: 200,
            headers: vec![
                ("cache-control", "max-age=3600".into()),
                ("age", "5, 7200".into()),
            ],
            body: blob(64),
            ..Default::default()
        },
    );
    get(s.proxy_addr, "/young").await;
    settle().await;
    let r = get(s.proxy_addr, "/young").await;
    assert_eq!(r.headers["x-cache-status"], "hit");
    let age: u64 = r.headers["age"].to_str().unwrap().parse().unwrap();
    assert!((5..3600).contains(&age), "age {age}");
}

#[tokio::test]
async fn a_content_type_deny_holds_for_clients_that_waited_on_the_same_download() {
    let s = setup(
        "[[rule]]\nname = \"no-exe\"\nmatch_content_type = [\"application/x-msdownload\"]\naction = \"deny\"\n",
        |_| {},
    )
    .await;
    s.origin.route(
        "/setup.exe",
        Route {
            status: 200,
            headers: vec![
                ("cache-control", "max-age=3600".into()),
                ("content-type", "application/x-msdownload".into()),
            ],
            body: blob(1000),
            // Long enough for all three requests to meet on one download.
            delay_ms: 300,
            ..Default::default()
        },
    );
    let all = futures::future::join_all((0..3).map(|_| get(s.proxy_addr, "/setup.exe"))).await;
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.status, 403, "client {i} got the denied content");
        assert_ne!(r.body, blob(1000), "client {i}");
    }
    // HEAD, which the cache forwards around itself, is judged the same way.
    assert_eq!(
        send(s.proxy_addr, "HEAD", "/setup.exe", &[]).await.status,
        403
    );
}
