//! The transparent datapath: steering, bypass, IPv6, fail-open, clean stop.
use std::time::Duration;

use velocache_tests::{Daemon, Lab, addr, require_tools};

use crate::util::{dns_upstream, flows, http_server, random_file, sha256};

const WAIT: Duration = Duration::from_secs(20);

fn curl(lab: &Lab, args: &[&str]) -> String {
    let mut all = vec!["curl", "-sS", "--max-time", "10"];
    all.extend_from_slice(args);
    lab.client.run_ok(&all)
}

#[test]
fn http_is_intercepted_and_bytes_arrive_unchanged() {
    require_tools(&["curl", "python3", "sha256sum"]);
    let lab = Lab::new();
    let www = tempfile::tempdir().unwrap();
    let want = random_file(&www.path().join("blob.bin"), 3 * 1024 * 1024 + 17);
    let _origin = http_server(&lab.origin, www.path(), 80);
    let daemon = Daemon::start(&lab, "");

    let out = tempfile::tempdir().unwrap();
    let got_path = out.path().join("got.bin");
    curl(
        &lab,
        &[
            "-o",
            &got_path.display().to_string(),
            &format!("http://{}/blob.bin", addr::ORIGIN),
        ],
    );
    assert_eq!(sha256(&got_path), want, "bytes changed in transit");

    let line = daemon.wait_for_log(WAIT, |l| {
        l["message"] == "flow"
            && l["service"] == "http"
            && l["orig_dst"] == format!("{}:80", addr::ORIGIN)
    });
    assert_eq!(line["transport"], "tcp");
    assert!(line["client"].as_str().unwrap().starts_with(addr::CLIENT));
    assert!(
        line["bytes_down"].as_u64().unwrap() > 3 * 1024 * 1024,
        "{line}"
    );
    assert!(line["bytes_up"].as_u64().unwrap() > 0);
    assert!(line["duration_ms"].is_u64());
    for key in ["timestamp", "level", "service", "message"] {
        assert!(line.get(key).is_some(), "{key} missing in {line}");
    }
}

#[test]
fn dns_to_an_upstream_resolver_is_intercepted_over_udp_and_tcp() {
    require_tools(&["dig", "dnsmasq"]);
    let lab = Lab::new();
    let _upstream = dns_upstream(&lab.origin, addr::ORIGIN);
    // Only the datapath is under test here: pass-through DNS, whatever the DNS service does.
    let daemon = Daemon::start(&lab, "");

    let target = format!("@{}", addr::ORIGIN);
    let udp = lab
        .client
        .run_ok(&["dig", "+short", "+time=2", &target, "a.test.lab"]);
    assert_eq!(udp.trim(), "10.9.9.9");
    let tcp = lab
        .client
        .run_ok(&["dig", "+short", "+tcp", "+time=2", &target, "b.test.lab"]);
    assert_eq!(tcp.trim(), "10.9.9.9");

    daemon.wait_for_log(WAIT, |l| {
        l["service"] == "dns"
            && l["transport"] == "tcp"
            && l["orig_dst"] == format!("{}:53", addr::ORIGIN)
    });
    let counters = daemon.wait_for_log(WAIT, |l| {
        l["message"] == "kernel counters"
            && l["for_service"] == "dns"
            && l["steered_new"].as_u64() >= Some(2)
    });
    assert_eq!(counters["passed_no_listener"], 0, "{counters}");
}

#[test]
fn bypassed_clients_and_destinations_are_not_intercepted() {
    require_tools(&["curl", "python3"]);
    let lab = Lab::new();
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "origin").unwrap();
    let _origin = http_server(&lab.origin, www.path(), 80);
    let daemon = Daemon::start(
        &lab,
        &format!(
            "[datapath]\nbypass_clients = [\"{}/32\", \"{}/128\"]\nbypass_destinations = [\"{}/32\"]\n",
            addr::CLIENT2,
            addr::CLIENT2_6,
            addr::ORIGIN2
        ),
    );

    // Bypassed client, bypassed destination, then a normal one as the control.
    assert_eq!(
        curl(
            &lab,
            &[
                "--interface",
                addr::CLIENT2,
                &format!("http://{}/", addr::ORIGIN)
            ]
        ),
        "origin"
    );
    assert_eq!(
        curl(&lab, &[&format!("http://{}/", addr::ORIGIN2)]),
        "origin"
    );
    assert_eq!(
        curl(&lab, &[&format!("http://{}/", addr::ORIGIN)]),
        "origin"
    );

    daemon.wait_for_log(WAIT, |l| {
        l["message"] == "flow" && l["orig_dst"] == format!("{}:80", addr::ORIGIN)
    });
    let counters = daemon.wait_for_log(WAIT, |l| {
        l["message"] == "kernel counters"
            && l["for_service"] == "http"
            && l["bypassed_client"].as_u64() > Some(0)
            && l["bypassed_destination"].as_u64() > Some(0)
    });
    assert!(counters["steered_new"].as_u64() >= Some(1), "{counters}");
    let logs = daemon.logs();
    assert!(
        flows(&logs, &[])
            .iter()
            .all(|f| !f["client"].as_str().unwrap().starts_with(addr::CLIENT2)),
        "bypassed client was intercepted"
    );
    assert!(
        flows(&logs, &[("orig_dst", &format!("{}:80", addr::ORIGIN2))]).is_empty(),
        "bypassed destination was intercepted"
    );
}

#[test]
fn ipv6_flows_are_intercepted() {
    require_tools(&["curl", "python3"]);
    let lab = Lab::new();
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "origin6").unwrap();
    let _origin = http_server(&lab.origin, www.path(), 80);
    let daemon = Daemon::start(&lab, "");
    assert_eq!(
        curl(&lab, &["-6", &format!("http://[{}]/", addr::ORIGIN6)]),
        "origin6"
    );
    let line = daemon.wait_for_log(WAIT, |l| {
        l["message"] == "flow" && l["orig_dst"] == format!("[{}]:80", addr::ORIGIN6)
    });
    assert!(
        line["client"].as_str().unwrap().starts_with("[fd77:1::"),
        "{line}"
    );
}

#[test]
fn killed_daemon_fails_open_and_a_restart_intercepts_again() {
    require_tools(&["curl", "python3", "dig", "dnsmasq"]);
    let lab = Lab::new();
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "origin").unwrap();
    let _origin = http_server(&lab.origin, www.path(), 80);
    let _upstream = dns_upstream(&lab.origin, addr::ORIGIN);
    let url = format!("http://{}/", addr::ORIGIN);

    let mut first = Daemon::start(&lab, "");
    assert_eq!(curl(&lab, &[&url]), "origin");
    first.wait_for_log(WAIT, |l| l["message"] == "flow" && l["service"] == "http");
    first.kill9();

    // No manual step: the next connection and query go straight to their destinations.
    assert_eq!(curl(&lab, &[&url]), "origin");
    let dig = lab.client.run_ok(&[
        "dig",
        "+short",
        "+time=2",
        &format!("@{}", addr::ORIGIN),
        "x.test.lab",
    ]);
    assert_eq!(dig.trim(), "10.9.9.9");

    let second = Daemon::start(&lab, "");
    assert_eq!(curl(&lab, &[&url]), "origin");
    second.wait_for_log(WAIT, |l| l["message"] == "flow" && l["service"] == "http");
    // The killed daemon's policy rule was replaced, not duplicated.
    let rules = lab.gw.run_ok(&["ip", "rule"]);
    assert_eq!(rules.matches("fwmark 0x5643").count(), 1, "{rules}");
}

#[test]
fn clean_stop_leaves_no_link_rule_or_route() {
    require_tools(&["curl", "python3"]);
    let lab = Lab::new();
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "origin").unwrap();
    let _origin = http_server(&lab.origin, www.path(), 80);
    let mut daemon = Daemon::start(&lab, "");
    let bin = velocache_tests::velocache_bin().display().to_string();
    let show = [bin.as_str(), "datapath", "show", "--json", addr::LAN_IF];
    let attached = lab.gw.run_ok(&show);
    assert!(
        attached.contains("\"velocache_attached\": true"),
        "classifier not attached: {attached}"
    );
    assert!(lab.gw.run_ok(&["ip", "rule"]).contains("fwmark 0x5643"));

    let status = daemon.stop();
    assert!(status.success(), "daemon exited with {status}");

    let out = lab.gw.run(&show);
    let attached = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "`datapath show` should fail when nothing is attached"
    );
    assert!(
        attached.contains("\"velocache_attached\": false"),
        "classifier left attached: {attached}"
    );
    for family in ["-4", "-6"] {
        let rules = lab.gw.run_ok(&["ip", family, "rule"]);
        assert!(!rules.contains("0x5643"), "rule left: {rules}");
        let routes = lab
            .gw
            .run_ok(&["ip", family, "route", "show", "table", "all"]);
        assert!(!routes.contains("table 22083"), "route left: {routes}");
    }
    let filters = lab
        .gw
        .run_ok(&["tc", "filter", "show", "dev", addr::LAN_IF, "ingress"]);
    assert!(!filters.contains("velocache"), "tc filter left: {filters}");
    // And traffic still flows, directly.
    assert_eq!(
        curl(&lab, &[&format!("http://{}/", addr::ORIGIN)]),
        "origin"
    );
}

#[test]
fn a_second_daemon_in_the_same_namespace_refuses_to_start() {
    let lab = Lab::new();
    let first = Daemon::start(&lab, "");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.toml");
    std::fs::write(&path, Daemon::lab_config(dir.path(), "[http]\nlisten_port = 25080\n[https]\nlisten_port = 25443\n[dns]\nlisten_port = 25053\n[sip]\nlisten_port = 25060\n")).unwrap();
    let out = lab.gw.run(&[
        &velocache_tests::velocache_bin().display().to_string(),
        "run",
        "--config",
        &path.display().to_string(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already running"), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", first.pid())), "{stderr}");
}

#[test]
fn traffic_to_the_gateway_itself_is_not_intercepted() {
    require_tools(&["curl", "python3"]);
    let lab = Lab::new();
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "gateway").unwrap();
    let _local = http_server(&lab.gw, www.path(), 80);
    let daemon = Daemon::start(&lab, "");
    assert_eq!(
        curl(&lab, &[&format!("http://{}/", addr::GW_LAN)]),
        "gateway"
    );
    daemon.wait_for_log(WAIT, |l| {
        l["message"] == "kernel counters"
            && l["for_service"] == "http"
            && l["gateway_local"].as_u64() > Some(0)
    });
    assert!(flows(&daemon.logs(), &[("service", "http")]).is_empty());
}

#[test]
fn a_dropping_input_firewall_does_not_break_interception() {
    require_tools(&["curl", "python3", "nft"]);
    let lab = Lab::new();
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "origin").unwrap();
    let _origin = http_server(&lab.origin, www.path(), 80);
    // A router's usual input policy: drop what is not an answer to the gateway's own traffic.
    lab.gw.run_ok(&["nft", "add", "table", "inet", "fw"]);
    lab.gw.run_ok(&[
        "nft",
        "add chain inet fw input { type filter hook input priority 0; policy drop; }",
    ]);
    lab.gw.run_ok(&[
        "nft",
        "add",
        "rule",
        "inet",
        "fw",
        "input",
        "ct",
        "state",
        "established,related",
        "accept",
    ]);

    let mut daemon = Daemon::start(&lab, "[datapath]\nfirewall_accept = false\n");
    let blocked = lab.client.run(&[
        "curl",
        "-sS",
        "--max-time",
        "3",
        &format!("http://{}/", addr::ORIGIN),
    ]);
    assert!(
        !blocked.status.success(),
        "the firewall should drop steered packets without the accept rule"
    );
    assert!(daemon.stop().success());

    let mut daemon = Daemon::start(&lab, "");
    assert_eq!(
        curl(&lab, &[&format!("http://{}/", addr::ORIGIN)]),
        "origin"
    );
    daemon.wait_for_log(WAIT, |l| l["message"] == "flow" && l["service"] == "http");
    assert!(
        lab.gw
            .run_ok(&["nft", "list", "chain", "inet", "fw", "input"])
            .contains("velocache")
    );

    assert!(daemon.stop().success());
    let chain = lab
        .gw
        .run_ok(&["nft", "list", "chain", "inet", "fw", "input"]);
    assert!(
        !chain.contains("velocache"),
        "accept rule left behind: {chain}"
    );
}

#[test]
fn a_client_reusing_its_port_right_away_is_served_every_time() {
    require_tools(&["python3"]);
    let lab = Lab::new();
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "origin").unwrap();
    let _origin = http_server(&lab.origin, www.path(), 80);
    let daemon = Daemon::start(&lab, "");
    // The gateway closes first (an HTTP/1.0 exchange), so its client-facing socket sits in
    // TIME_WAIT holding the client's tuple; the client reuses the same port at once (every
    // close order and path: `reuse.rs`).
    let script = format!(
        r#"
import socket, sys, time
for i in range(3):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("{client}", 41234))
    s.settimeout(4)
    s.connect(("{origin}", 80))
    s.sendall(b"GET / HTTP/1.0\r\nHost: origin\r\n\r\n")
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    s.close()
    assert data.endswith(b"origin"), data
    print("ok", i)
"#,
        client = addr::CLIENT,
        origin = addr::ORIGIN
    );
    let out = lab.client.run_ok(&["python3", "-c", &script]);
    assert_eq!(out.matches("ok").count(), 3, "{out}");
    daemon.wait_for_log(WAIT, |_| {
        flows(
            &daemon.logs(),
            &[("client", &format!("{}:41234", addr::CLIENT))],
        )
        .len()
            == 3
    });
}
