//! Plugins on SIP and on claimed TCP ports, through the gateway with real clients: sipp calls
//! screened by `sip-screener`, curl through a real SOCKS5 server (danted) observed by
//! `socks5-observer`, and a plugin that traps on a port it claims.
//!
//! The plugins are the ones `cargo xtask plugins` builds (`target/plugins/NAME/`), copied into a
//! directory of each test's own with the manifest the test needs.
use std::time::Duration;

use serde_json::Value;
use velocache_tests::{
    Background, Daemon, Lab, Ns, addr,
    plugins::{built, install},
    require_tools,
    servers::wait_tcp,
    sipp,
};

const WAIT: Duration = Duration::from_secs(30);

/// A plugin directory holding `plugins`: (built plugin, manifest — the built one when `None`).
fn plugin_dir(plugins: &[(&str, Option<String>)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, manifest) in plugins {
        let manifest = match manifest {
            Some(m) => m.clone(),
            None => std::fs::read_to_string(built().join(name).join("plugin.toml")).unwrap(),
        };
        install(dir.path(), name, name, &manifest);
    }
    dir
}

fn config(plugins: &tempfile::TempDir, extra: &str) -> String {
    format!(
        "[plugins]\ndir = \"{}\"\n[sip]\nmedia_fast_path = false\n{extra}",
        plugins.path().display()
    )
}

fn flow_of<'a>(logs: &'a [Value], plugin: &str) -> Option<&'a Value> {
    logs.iter()
        .find(|l| l["message"] == "flow" && l["service"] == "plugin" && l["plugin"] == plugin)
}

fn wait_listening(ns: &Ns, transport: &str) {
    let flag = if transport == "t1" { "-tln" } else { "-uln" };
    for _ in 0..200 {
        if ns.run_ok(&["ss", flag]).contains(":5060") {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("sipp UAS is not listening in {}", ns.name());
}

#[test]
fn a_call_to_a_premium_number_gets_the_screeners_status_and_the_callee_sees_nothing() {
    screened_calls("u1");
}

#[test]
fn over_tcp_the_screeners_answer_comes_back_on_the_callers_connection() {
    screened_calls("t1");
}

/// A premium-rate call and an ordinary one over `transport` (sipp's `u1` or `t1`).
fn screened_calls(transport: &str) {
    require_tools(&["sipp"]);
    let lab = Lab::new();
    let plugins = plugin_dir(&[("sip-screener", None)]);
    let daemon = Daemon::start(&lab, &config(&plugins, ""));
    let scratch = tempfile::tempdir().unwrap();
    let trace = scratch.path().join("uas-messages.log");
    let uas_xml = sipp::write_scenario(
        scratch.path(),
        "uas.xml",
        &sipp::uas_scenario(sipp::Answer::Accept),
    );
    let _uas = sipp::start_uas_traced(&lab.origin, addr::ORIGIN, &uas_xml, 1, transport, &trace);
    wait_listening(&lab.origin, transport);
    let wire = if transport == "t1" { "tcp" } else { "udp" };

    // A premium-rate number: the gateway answers 403 itself.
    let refused = sipp::write_scenario(
        scratch.path(),
        "refused.xml",
        &sipp::uac_refused_scenario(403),
    );
    let (out, ok) = sipp::run_uac_to(
        &lab.client,
        addr::CLIENT,
        addr::ORIGIN,
        &refused,
        6000,
        1,
        transport,
        "900123456",
    );
    assert!(
        ok,
        "sipp UAC did not get 403:\n{out}\n{}",
        daemon.log_text()
    );
    let call = daemon.wait_for_log(WAIT, |l| {
        l["message"] == "call" && l["outcome"] == "rejected"
    });
    assert_eq!(call["status"], 403, "{call}");
    assert_eq!(call["reason"], "Premium rate numbers are blocked", "{call}");
    assert_eq!(call["ended_by"], "plugin sip-screener", "{call}");
    assert_eq!(call["transport"], wire, "{call}");
    // Give a forwarded INVITE (or its ACK) time to arrive, then look at what the callee got.
    std::thread::sleep(Duration::from_millis(500));
    let seen = std::fs::read_to_string(&trace).unwrap_or_default();
    assert!(
        !seen.contains("INVITE") && !seen.contains("ACK"),
        "the callee received:\n{seen}"
    );

    // An ordinary number: the call completes, and its record carries the plugin's tag.
    let xml = sipp::write_scenario(
        scratch.path(),
        "uac.xml",
        &sipp::uac_scenario(&format!("{}/g711a.pcap", sipp::PCAP_DIR), None, 200, false),
    );
    let (out, ok) = sipp::run_uac_to(
        &lab.client,
        addr::CLIENT,
        addr::ORIGIN,
        &xml,
        6000,
        1,
        transport,
        "4711",
    );
    assert!(
        ok,
        "the ordinary call failed:\n{out}\n{}",
        daemon.log_text()
    );
    let call = daemon.wait_for_log(WAIT, |l| {
        l["message"] == "call" && l["outcome"] == "completed"
    });
    assert_eq!(call["tags"]["screened"], "no", "{call}");
    let calls = daemon.cli(&lab, &["calls", "--json"]);
    let calls: Value = serde_json::from_slice(&calls.stdout).unwrap();
    let recent = calls["recent"].as_array().unwrap();
    let completed = recent.iter().find(|c| c["state"] == "completed").unwrap();
    assert_eq!(completed["tags"]["screened"], "no", "{calls}");
    let rejected = recent.iter().find(|c| c["state"] == "rejected").unwrap();
    assert_eq!(rejected["final_status"], 403, "{calls}");
    assert_eq!(rejected["ended_by"], "plugin sip-screener", "{calls}");
}

/// danted in `origin` on ORIGIN:1080, letting anyone connect anywhere without authentication.
fn socks_server(lab: &Lab, dir: &std::path::Path) -> Background {
    let conf = dir.join("danted.conf");
    std::fs::write(
        &conf,
        format!(
            "logoutput: stderr\n\
             internal: {origin} port = 1080\n\
             external: {origin}\n\
             clientmethod: none\n\
             socksmethod: none\n\
             user.privileged: root\n\
             user.unprivileged: nobody\n\
             client pass {{ from: 0.0.0.0/0 to: 0.0.0.0/0 }}\n\
             socks pass {{ from: 0.0.0.0/0 to: 0.0.0.0/0 command: connect }}\n",
            origin = addr::ORIGIN
        ),
    )
    .unwrap();
    let server = lab
        .origin
        .spawn(&["danted", "-f", &conf.display().to_string(), "-N", "1"]);
    wait_tcp(&lab.origin, addr::ORIGIN, 1080);
    server
}

/// 256 KiB of bytes that are not all alike, served by an HTTP server on ORIGIN:8080.
fn http_origin(lab: &Lab, dir: &std::path::Path) -> (Background, Vec<u8>) {
    let body: Vec<u8> = (0..256 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("blob"), &body).unwrap();
    (crate::util::http_server(&lab.origin, dir, 8080), body)
}

fn curl(ns: &Ns, args: &[&str]) -> Vec<u8> {
    let mut all = vec!["curl", "-sS", "--fail", "--max-time", "20"];
    all.extend_from_slice(args);
    let out = ns.run(&all);
    assert!(
        out.status.success(),
        "{all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn curl_through_a_real_socks5_server_is_observed_byte_exact_and_tagged_with_its_target() {
    require_tools(&["danted", "curl", "python3"]);
    let lab = Lab::new();
    let scratch = tempfile::tempdir().unwrap();
    // Before danted starts: `ip netns exec` gives it the namespace's hosts file as it starts.
    lab.origin.set_hosts(&[("origin.lab", addr::ORIGIN)]);
    let _socks = socks_server(&lab, scratch.path());
    let (_web, body) = http_origin(&lab, scratch.path());
    let plugins = plugin_dir(&[("socks5-observer", None)]);
    let daemon = Daemon::start(&lab, &config(&plugins, ""));

    let proxy = format!("{}:1080", addr::ORIGIN);
    let url = format!("http://{}:8080/blob", addr::ORIGIN);
    let got = curl(&lab.client, &["--socks5", &proxy, &url]);
    assert!(
        got == body,
        "{} bytes, not the origin's {}",
        got.len(),
        body.len()
    );
    let logs = daemon.wait_for_log(WAIT, |l| {
        l["message"] == "flow" && l["service"] == "plugin" && l["plugin"] == "socks5-observer"
    });
    assert_eq!(logs["orig_dst"], proxy, "{logs}");
    assert_eq!(logs["tags"]["socks_version"], "5", "{logs}");
    assert_eq!(logs["tags"]["socks_auth"], "none", "{logs}");
    assert_eq!(logs["tags"]["socks_command"], "connect", "{logs}");
    assert_eq!(
        logs["tags"]["socks_target"],
        format!("{}:8080", addr::ORIGIN),
        "{logs}"
    );
    assert_eq!(logs["tags"]["socks_reply"], "succeeded", "{logs}");
    assert_eq!(
        logs["path"], "splice",
        "spliced once the handshake was read: {logs}"
    );
    assert!(
        logs["bytes_down"].as_u64().unwrap() > body.len() as u64,
        "{logs}"
    );

    // A name the SOCKS server resolves (curl's --socks5-hostname): the target is the name.
    let url = "http://origin.lab:8080/blob";
    let got = curl(&lab.client, &["--socks5-hostname", &proxy, url]);
    assert!(got == body);
    let named = daemon.wait_for_log(WAIT, |l| {
        l["message"] == "flow" && l["tags"]["socks_target"] == "origin.lab:8080"
    });
    assert_eq!(named["plugin"], "socks5-observer");
    // The claimed port is a service of its own in `velocache stats`: its kernel counters and
    // its streams, by how they ended.
    let stats = daemon.cli(&lab, &["stats", "--json"]);
    let stats: Value = serde_json::from_slice(&stats.stdout).unwrap();
    let plugin = stats["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "plugin")
        .unwrap()
        .clone();
    assert_eq!(plugin["enabled"], true, "{plugin}");
    assert!(
        plugin["kernel"]["steered_listener"].as_u64().unwrap_or(0) >= 2,
        "{plugin}"
    );
    assert!(plugin["flows"].as_u64().unwrap_or(0) >= 2, "{plugin}");
    let spliced = plugin["metrics"].as_array().unwrap().iter().any(|m| {
        m["name"] == "velocache_plugin_streams_total"
            && m["labels"]["plugin"] == "socks5-observer"
            && m["labels"]["end"] == "spliced"
            && m["value"].as_f64().unwrap_or(0.0) >= 2.0
    });
    assert!(spliced, "{plugin}");
}

#[test]
fn a_plugin_that_traps_on_its_claimed_port_is_disabled_and_the_connection_still_reaches_its_destination()
 {
    require_tools(&["curl", "python3"]);
    let lab = Lab::new();
    let scratch = tempfile::tempdir().unwrap();
    let (_web, body) = http_origin(&lab, scratch.path());
    let manifest = std::fs::read_to_string(built().join("trap").join("plugin.toml")).unwrap();
    let plugins = plugin_dir(&[("trap", Some(trap_on_port(&manifest, 8080)))]);
    let mut daemon = Daemon::start(&lab, &config(&plugins, ""));

    let url = format!("http://{}:8080/blob", addr::ORIGIN);
    for _ in 0..2 {
        let got = curl(&lab.client, &[&url]);
        assert!(
            got == body,
            "{} bytes, not the origin's {}",
            got.len(),
            body.len()
        );
    }
    let flow = daemon.wait_for_log(WAIT, |l| {
        l["message"] == "flow" && l["service"] == "plugin" && l["plugin"] == "trap"
    });
    assert_eq!(flow["action"], "passthrough", "{flow}");
    assert!(
        flow["reason"]
            .as_str()
            .unwrap_or("")
            .contains("plugin failed"),
        "{flow}"
    );
    assert_eq!(flow["orig_dst"], format!("{}:8080", addr::ORIGIN));
    let logs = daemon.logs();
    assert!(
        flow_of(&logs, "trap").is_some(),
        "the plugin's stream has its flow line"
    );
    assert!(daemon.try_wait().is_none(), "the daemon is still running");
}

/// The trap plugin's manifest, with its TCP hook claiming `port`.
fn trap_on_port(manifest: &str, port: u16) -> String {
    let mut m: toml::Table = manifest.parse().unwrap();
    m.insert(
        "ports".into(),
        toml::Value::Array(vec![toml::Value::Integer(port.into())]),
    );
    m.insert(
        "hooks".into(),
        toml::Value::Array(vec![toml::Value::String("tcp".into())]),
    );
    toml::to_string(&m).unwrap()
}

/// `socks5-observer` claiming `port` (on plain HTTP it sees a stream that is not SOCKS, tags it
/// so and splices it at once: a plugin on a port, and nothing more).
fn observer_on(port: u16) -> String {
    format!("name = \"socks5-observer\"\nhooks = [\"tcp\"]\nports = [{port}]\n")
}

fn plugin_flows(daemon: &Daemon, port: u16) -> usize {
    let orig_dst = format!("{}:{port}", addr::ORIGIN);
    daemon
        .logs()
        .iter()
        .filter(|l| l["message"] == "flow" && l["service"] == "plugin" && l["orig_dst"] == orig_dst)
        .count()
}

#[test]
fn a_plugin_reload_that_moves_a_claim_rewrites_the_kernels_port_map() {
    require_tools(&["curl", "python3"]);
    let lab = Lab::new();
    let scratch = tempfile::tempdir().unwrap();
    let (_web, body) = http_origin(&lab, scratch.path());
    let _web2 = crate::util::http_server(&lab.origin, scratch.path(), 8081);
    let plugins = plugin_dir(&[("socks5-observer", Some(observer_on(8080)))]);
    let daemon = Daemon::start(&lab, &config(&plugins, ""));
    let get = |port: u16| {
        let got = curl(
            &lab.client,
            &[&format!("http://{}:{port}/blob", addr::ORIGIN)],
        );
        assert!(got == body, "{} bytes from port {port}", got.len());
    };

    get(8080);
    get(8081);
    daemon.wait_for_log(WAIT, |l| {
        l["message"] == "flow"
            && l["plugin"] == "socks5-observer"
            && l["tags"]["socks_version"] == "unknown"
    });
    assert_eq!(plugin_flows(&daemon, 8080), 1);
    assert_eq!(plugin_flows(&daemon, 8081), 0, "8081 is not claimed yet");

    // The plugin now claims 8081 instead.
    install(
        plugins.path(),
        "socks5-observer",
        "socks5-observer",
        &observer_on(8081),
    );
    let reload = daemon.cli(&lab, &["plugins", "reload"]);
    assert!(
        reload.status.success(),
        "{}",
        String::from_utf8_lossy(&reload.stderr)
    );
    daemon.wait_for_log(WAIT, |l| l["message"] == "plugin port claims applied");
    get(8081);
    get(8080);
    daemon.wait_for_log(WAIT, |_| plugin_flows(&daemon, 8081) == 1);
    assert_eq!(
        plugin_flows(&daemon, 8080),
        1,
        "8080 flows past the gateway again"
    );
    let status = daemon.cli(&lab, &["service", "status", "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    let plugin = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "plugin")
        .unwrap()
        .clone();
    assert_eq!(plugin["ports"], serde_json::json!([8081]), "{status}");
}
