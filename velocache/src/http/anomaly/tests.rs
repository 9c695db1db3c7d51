//! The detector on its own: warm-up, deviations as edges, the rate limit, shapes, bounds.
use super::*;

fn cfg() -> AnomalyConfig {
    AnomalyConfig {
        warmup_requests: 10,
        ..AnomalyConfig::default()
    }
}

fn ok(ms: f64, path: &str) -> Sample<'_> {
    Sample {
        latency_ms: Some(ms),
        error: false,
        method: "GET",
        path,
    }
}

fn metrics(f: &[Finding]) -> Vec<&'static str> {
    f.iter().map(|f| f.metric).collect()
}

#[test]
fn path_templates_turn_ids_uuids_and_hashes_into_variables() {
    for (path, template) in [
        ("/users/42/orders/7?x=1", "/users/{n}/orders/{n}"),
        (
            "/o/3f2b8c1e-9a4d-4e7f-b6a1-0c2d3e4f5a6b/items",
            "/o/{uuid}/items",
        ),
        (
            "/v2/lib/blobs/sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "/v2/lib/blobs/sha256:{hash}",
        ),
        ("/commit/0123456789abcdef", "/commit/{hash}"),
        ("/static/decaf/facade", "/static/decaf/facade"),
        ("/", "/"),
        ("/v1.2/item", "/v1.2/item"),
    ] {
        assert_eq!(path_template(path), template, "{path}");
    }
    let long = format!("/{}", "a".repeat(1000));
    assert!(path_template(&long).len() <= MAX_TEMPLATE);
}

#[test]
fn nothing_is_an_anomaly_during_warm_up() {
    let cfg = cfg();
    let mut o = OriginState::new(Instant::now());
    let now = Instant::now();
    for i in 0..10 {
        let ms = if i % 2 == 0 { 2.0 } else { 5000.0 };
        let path = format!("/p{i}");
        let s = Sample {
            method: if i == 9 { "DELETE" } else { "GET" },
            ..ok(ms, &path)
        };
        assert!(o.observe(&s, now, &cfg).is_empty(), "request {i}");
    }
}

#[test]
fn an_origin_turning_slow_is_one_latency_anomaly_until_it_recovers() {
    let cfg = cfg();
    let t0 = Instant::now();
    let mut o = OriginState::new(t0);
    for _ in 0..20 {
        assert!(o.observe(&ok(5.0, "/a"), t0, &cfg).is_empty());
    }
    let f = o.observe(&ok(800.0, "/a"), t0, &cfg);
    assert_eq!(metrics(&f), ["latency_ms"]);
    assert!(f[0].logged);
    match &f[0].seen {
        Seen::Value { baseline, observed } => {
            assert!((*baseline - 5.0).abs() < 0.01, "{baseline}");
            assert!(*observed > 200.0, "{observed}");
        }
        other => panic!("{other:?}"),
    }
    // Still slow: the same deviation, no new finding.
    assert!(o.observe(&ok(800.0, "/a"), t0, &cfg).is_empty());
    // Back to normal, then slow again within the interval: counted, not logged.
    for _ in 0..30 {
        o.observe(&ok(5.0, "/a"), t0, &cfg);
    }
    let mut again = Vec::new();
    for _ in 0..3 {
        again.extend(o.observe(&ok(2000.0, "/a"), t0 + Duration::from_secs(1), &cfg));
    }
    assert_eq!(metrics(&again), ["latency_ms"]);
    assert!(!again[0].logged, "rate-limited");
    // After the interval, the next deviation is logged with what was suppressed.
    for _ in 0..60 {
        o.observe(&ok(5.0, "/a"), t0, &cfg);
    }
    let later = (0..3)
        .flat_map(|_| o.observe(&ok(9000.0, "/a"), t0 + Duration::from_secs(120), &cfg))
        .collect::<Vec<_>>();
    assert_eq!(metrics(&later), ["latency_ms"]);
    assert!(later[0].logged);
    assert_eq!(later[0].suppressed, 1);
}

#[test]
fn small_absolute_changes_are_not_latency_anomalies() {
    let cfg = cfg();
    let t0 = Instant::now();
    let mut o = OriginState::new(t0);
    for _ in 0..20 {
        o.observe(&ok(1.0, "/a"), t0, &cfg);
    }
    for _ in 0..10 {
        assert!(
            o.observe(&ok(40.0, "/a"), t0, &cfg).is_empty(),
            "40x, but only +39 ms"
        );
    }
}

#[test]
fn failures_after_warm_up_are_an_error_ratio_anomaly() {
    let cfg = cfg();
    let t0 = Instant::now();
    let mut o = OriginState::new(t0);
    for _ in 0..20 {
        o.observe(&ok(5.0, "/a"), t0, &cfg);
    }
    let fail = Sample {
        latency_ms: None,
        error: true,
        method: "GET",
        path: "/a",
    };
    let found: Vec<_> = (0..3).flat_map(|_| o.observe(&fail, t0, &cfg)).collect();
    assert_eq!(metrics(&found), ["error_ratio"]);
    match &found[0].seen {
        Seen::Value { baseline, observed } => {
            assert!(*baseline < 0.05, "{baseline}");
            assert!(*observed > 0.3, "{observed}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn never_seen_methods_and_path_templates_are_reported_after_warm_up() {
    let cfg = cfg();
    let t0 = Instant::now();
    let mut o = OriginState::new(t0);
    for i in 0..10 {
        o.observe(&ok(5.0, &format!("/users/{i}")), t0, &cfg);
    }
    assert!(o.observe(&ok(5.0, "/users/99999"), t0, &cfg).is_empty());
    let del = Sample {
        method: "DELETE",
        ..ok(5.0, "/users/3")
    };
    let f = o.observe(&del, t0, &cfg);
    assert_eq!(metrics(&f), ["new_method"]);
    assert_eq!(
        f[0].seen,
        Seen::Shape {
            known: 1,
            observed: "DELETE".into()
        }
    );
    let f = o.observe(&ok(5.0, "/admin/../etc/passwd"), t0, &cfg);
    assert_eq!(metrics(&f), ["new_path"]);
    assert!(f[0].logged, "another metric has its own rate limit");
    // Learned now.
    assert!(
        o.observe(&ok(5.0, "/admin/../etc/passwd"), t0, &cfg)
            .is_empty()
    );
}

#[test]
fn shapes_and_origins_are_bounded() {
    let cfg = AnomalyConfig {
        max_shapes_per_origin: 3,
        max_origins: 2,
        ..cfg()
    };
    let t0 = Instant::now();
    let mut o = OriginState::new(t0);
    for i in 0..50 {
        o.observe(&ok(5.0, &format!("/p{i}")), t0, &cfg);
    }
    assert_eq!(o.methods.len() + o.templates.len(), 3);
    assert!(
        o.observe(&ok(5.0, "/zzz"), t0, &cfg).is_empty(),
        "full: not reported"
    );

    let phase = AnomalyPhase::new(&cfg, &mut Registry::default());
    let key = |n: u8| OriginKey {
        addr: SocketAddr::from(([10, 0, 0, n], 80)),
        host: format!("h{n}"),
    };
    phase.observe(key(1), &ok(5.0, "/"), t0);
    phase.observe(key(2), &ok(5.0, "/"), t0 + Duration::from_secs(2));
    phase.observe(key(3), &ok(5.0, "/"), t0 + Duration::from_secs(3));
    let map = &phase.origins.lock().map;
    assert_eq!(map.len(), 2);
    assert!(
        !map.contains_key(&key(1)),
        "the longest idle origin is forgotten"
    );
}
