//! The runtime against real components: core modules written in WAT, given the WIT's metadata
//! and turned into components by `wit-component` (`testutil`) — the same path `cargo xtask
//! plugins` takes for the Rust guests — so these tests need no wasm toolchain.
use std::time::Instant;

use super::{
    testutil::{Body, install, plugins_in},
    *,
};

fn query(name: &str, cached: bool) -> DnsQuery {
    DnsQuery {
        name: name.into(),
        qtype: 1,
        qclass: 1,
        client: "192.0.2.10:5353".into(),
        transport: "udp".into(),
        cached,
    }
}

fn plugin(p: &Plugins, name: &str) -> SharedPlugin {
    p.current()
        .all
        .iter()
        .find(|x| x.name() == name)
        .cloned()
        .unwrap()
}

#[test]
fn a_noop_plugin_passes_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "noop", &[Hook::Dns], Body::Pass, "");
    let p = plugins_in(dir.path());
    let report = p.reload().unwrap();
    assert_eq!(report.loaded, ["noop"]);
    assert!(report.refused.is_empty());
    assert!(p.dns_query(&query("a.lab", false)).is_none());
    assert!(p.dns_query(&query("a.lab", false)).is_none());
    assert_eq!(plugin(&p, "noop").counts(Hook::Dns), (2, 0));
}

#[test]
fn a_plugin_decision_reaches_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    install(
        dir.path(),
        "deny",
        &[Hook::Dns],
        Body::DenyRefused,
        "hosts = [\"*.ads.lab\"]\n",
    );
    let p = plugins_in(dir.path());
    p.reload().unwrap();
    let d = p.dns_query(&query("x.ads.lab", false)).unwrap();
    assert_eq!(d.plugin, "deny");
    assert!(matches!(d.action, DnsAction::Deny(DnsDenyCode::Refused)));
    assert!(
        p.dns_query(&query("news.lab", false)).is_none(),
        "hosts do not match"
    );
    assert!(
        p.dns_query(&query("x.ads.lab", true)).is_none(),
        "a hit reaches only plugins that see hits"
    );
    assert!(!p.dns_sees_hits("x.ads.lab"));
}

#[test]
fn a_trapping_plugin_is_disabled_and_the_call_passes() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "trap", &[Hook::Dns], Body::Trap, "");
    let p = plugins_in(dir.path());
    p.reload().unwrap();
    assert!(p.dns_query(&query("a.lab", false)).is_none());
    let t = plugin(&p, "trap");
    assert!(!t.live());
    let reason = t.reason().unwrap();
    assert!(
        reason.contains("dns") && reason.contains("unreachable"),
        "{reason}"
    );
    assert!(p.dns_query(&query("a.lab", false)).is_none());
    assert_eq!(
        t.counts(Hook::Dns),
        (1, 1),
        "a disabled plugin is not called"
    );
}

#[test]
fn a_spinning_plugin_is_stopped_by_its_time_budget() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "spin", &[Hook::Dns], Body::Spin, "");
    let p = plugins_in(dir.path());
    p.reload().unwrap();
    let start = Instant::now();
    assert!(p.dns_query(&query("a.lab", false)).is_none());
    let took = start.elapsed();
    assert!(took.as_millis() < 500, "stopped after {took:?}");
    let reason = plugin(&p, "spin").reason().unwrap();
    assert!(reason.contains("time budget"), "{reason}");
}

#[test]
fn a_plugin_growing_past_its_memory_cap_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "hog", &[Hook::Dns], Body::Hog, "");
    let p = plugins_in(dir.path());
    p.reload().unwrap();
    assert!(p.dns_query(&query("a.lab", false)).is_none());
    let reason = plugin(&p, "hog").reason().unwrap();
    assert!(reason.contains("memory limit"), "{reason}");
}

#[test]
fn calls_reuse_pooled_instances() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "noop", &[Hook::Dns, Hook::Http], Body::Pass, "");
    let p = plugins_in(dir.path());
    p.reload().unwrap();
    let noop = plugin(&p, "noop");
    for _ in 0..200 {
        assert!(p.dns_query(&query("a.lab", false)).is_none());
    }
    assert_eq!(noop.instances(), 1, "one ready instance served every call");
    let lease = noop.lease(Hook::Dns).unwrap();
    assert!(p.dns_query(&query("a.lab", false)).is_none());
    assert_eq!(
        noop.instances(),
        2,
        "a second instance while the first is held"
    );
    drop(lease);
    assert_eq!(noop.idle(), 2);
}

#[test]
fn every_hook_can_be_called() {
    let dir = tempfile::tempdir().unwrap();
    install(
        dir.path(),
        "all",
        &[Hook::Dns, Hook::Http, Hook::Sip, Hook::Tcp],
        Body::Pass,
        "ports = [1080]\n",
    );
    let p = plugins_in(dir.path());
    p.reload().unwrap();
    let req = HttpRequest {
        method: "GET".into(),
        scheme: "http".into(),
        host: "a.lab".into(),
        path: "/".into(),
        headers: vec![HttpHeader {
            name: "accept".into(),
            value: "*/*".into(),
        }],
        client: "192.0.2.10:40000".into(),
    };
    match p.http_request(&req) {
        HttpRequestOutcome::Pass { edits, asked } => {
            assert_eq!(asked, 1);
            assert!(edits.add_headers.is_empty() && edits.cache_key.is_none());
        }
        other => panic!("{other:?}"),
    }
    let edits = p.http_response(
        &req,
        &HttpResponse {
            status: 200,
            headers: Vec::new(),
        },
    );
    assert_eq!(edits.store, None);
    let msg = SipMessage {
        call_id: "c1".into(),
        method: Some("INVITE".into()),
        status: None,
        request_uri: Some("sip:bob@b.lab".into()),
        from: "<sip:alice@a.lab>".into(),
        to: "<sip:bob@b.lab>".into(),
        src: "192.0.2.10:5060".into(),
        dst: "192.0.2.20:5060".into(),
        transport: "udp".into(),
        headers: Vec::new(),
        body: String::new(),
    };
    assert_eq!(p.sip_message(&msg), SipOutcome::default());
    assert_eq!(p.tcp_ports(), [("all".to_string(), 1080)]);
    assert!(p.tcp_session(1081).is_none());
    let mut s = p.tcp_session(1080).unwrap();
    assert_eq!(s.plugin(), "all");
    let cmds = s
        .event(TcpEvent::Opened((
            "192.0.2.10:4000".into(),
            "192.0.2.20:1080".into(),
        )))
        .unwrap();
    assert!(cmds.is_empty());
    assert!(
        s.event(TcpEvent::ClientData(b"\x05\x01\x00".to_vec()))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_tcp_session_reports_a_trap_and_the_plugin_is_disabled() {
    let dir = tempfile::tempdir().unwrap();
    install(
        dir.path(),
        "trap",
        &[Hook::Tcp],
        Body::Trap,
        "ports = [1080]\n",
    );
    let p = plugins_in(dir.path());
    p.reload().unwrap();
    let mut s = p.tcp_session(1080).unwrap();
    assert!(matches!(
        s.event(TcpEvent::ClientClosed),
        Err(PluginError::Failed { .. })
    ));
    assert!(matches!(
        s.event(TcpEvent::ClientClosed),
        Err(PluginError::Disabled { .. })
    ));
    assert!(
        p.tcp_session(1080).is_none(),
        "no session from a disabled plugin"
    );
}

#[test]
fn bad_plugins_are_refused_by_name_and_the_others_load() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "good", &[Hook::Dns], Body::Pass, "");
    std::fs::create_dir(dir.path().join("broken")).unwrap();
    std::fs::write(
        dir.path().join("broken/plugin.toml"),
        "name = \"broken\"\nhooks = [\"dns\"]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("broken/broken.wasm"), b"\0asm junk").unwrap();
    std::fs::write(
        dir.path().join("typo.toml"),
        "name = \"typo\"\nhoks = [\"dns\"]\n",
    )
    .unwrap();
    // Exports DNS, claims HTTP: refused at load, not at the first request.
    install(dir.path(), "liar", &[Hook::Dns], Body::Pass, "");
    std::fs::write(
        dir.path().join("liar/plugin.toml"),
        "name = \"liar\"\nhooks = [\"http\"]\n",
    )
    .unwrap();
    let p = plugins_in(dir.path());
    let report = p.reload().unwrap();
    assert_eq!(report.loaded, ["good"]);
    let why: Vec<String> = report
        .refused
        .iter()
        .map(|r| format!("{}: {}", r.plugin, r.error))
        .collect();
    assert_eq!(why.len(), 3, "{why:?}");
    assert!(
        why.iter()
            .any(|w| w.starts_with("broken: plugin `broken`: ")
                && w.contains("broken.wasm: not a valid component")),
        "{why:?}"
    );
    assert!(
        why.iter()
            .any(|w| w.contains("typo.toml") && w.contains("hoks")),
        "{why:?}"
    );
    assert!(
        why.iter()
            .any(|w| w.starts_with("liar: ") && w.contains("http hook")),
        "{why:?}"
    );
}

#[test]
fn a_reload_swaps_the_set_and_keeps_a_good_version_over_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "a", &[Hook::Dns], Body::Pass, "");
    let p = plugins_in(dir.path());
    let mut changes = p.subscribe();
    p.reload().unwrap();
    assert!(changes.has_changed().unwrap());
    changes.borrow_and_update();
    let old = plugin(&p, "a");
    let held = old.lease(Hook::Dns).unwrap();
    std::fs::write(dir.path().join("a/a.wasm"), b"broken").unwrap();
    install(dir.path(), "b", &[Hook::Dns], Body::DenyRefused, "");
    let report = p.reload().unwrap();
    assert_eq!(report.loaded, ["a", "b"]);
    assert!(report.refused[0].kept_previous);
    assert!(
        Arc::ptr_eq(&plugin(&p, "a"), &old),
        "the running version runs on"
    );
    assert!(changes.has_changed().unwrap());
    assert!(
        p.dns_query(&query("x.lab", false)).is_some(),
        "b decides now"
    );
    drop(held);
}

#[test]
fn the_interpreter_runs_plugins_under_the_same_limits() {
    let cases = [
        ("noop", Body::Pass, None),
        ("deny", Body::DenyRefused, None),
        ("trap", Body::Trap, Some("unreachable")),
        ("spin", Body::Spin, Some("time budget")),
        ("hog", Body::Hog, Some("memory limit")),
    ];
    for (name, body, failure) in cases {
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), name, &[Hook::Dns], body, "");
        let p = plugins_in(dir.path());
        p.use_interpreter().unwrap();
        assert_eq!(p.reload().unwrap().loaded, [name], "{name}");
        let start = Instant::now();
        let decision = p.dns_query(&query("a.lab", false));
        assert!(start.elapsed().as_millis() < 500, "{name}");
        match failure {
            None => assert!(plugin(&p, name).live(), "{name}"),
            Some(why) => {
                assert!(decision.is_none(), "{name}");
                let reason = plugin(&p, name).reason().unwrap();
                assert!(reason.contains(why), "{name}: {reason}");
            }
        }
        if name == "deny" {
            assert!(matches!(
                decision.map(|d| d.action),
                Some(DnsAction::Deny(DnsDenyCode::Refused))
            ));
        }
    }
}
