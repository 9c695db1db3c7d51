//! A client that reuses its source port toward the same origin right away connects at once —
//! whatever closed the previous connection (the gateway first, the client first, a reset, a
//! half-close) and whatever the path (plain HTTP, decrypted HTTPS, spliced TLS, SIP over TCP).
//! And when the daemon is gone (killed, or stopped cleanly), the reused port goes straight to
//! the origin.
//!
//! The client is `tests/scripts/reuse_client.py`: one source port, every kind of close in turn,
//! each connect bounded by 2 s (a functional bound, not a measurement). That a connect was not
//! even delayed is read from the kernel, not from a clock: the client's `TcpExtTCPSynRetrans`
//! must not move (a SYN lost on the way is resent after a second, and counted).
use std::{path::PathBuf, time::Duration};

use velocache_tests::{Daemon, Lab, Ns, addr, require_tools};

use crate::{
    https::{daemon_with, our_ca, tls_origin},
    util::{flows, http_server},
};

const WAIT: Duration = Duration::from_secs(20);
const KINDS: &str = "gateway-first,client-first,reset,half-close";
/// Connections the client makes: one per kind, and a last one.
const CONNECTIONS: usize = 5;

fn script(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
        .display()
        .to_string()
}

/// A `TcpExt` counter of the namespace (`/proc/net/netstat` is per network namespace).
fn tcp_ext(ns: &Ns, name: &str) -> u64 {
    let text = ns.run_ok(&["cat", "/proc/net/netstat"]);
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        panic!("no TcpExt in /proc/net/netstat:\n{text}");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in TcpExt"))
}

/// Run the reusing client from `client:port` to `dst:dport` through every kind of close;
/// panic unless every connection succeeded with no SYN resent.
fn reuse_port(lab: &Lab, args: &[&str]) {
    let before = tcp_ext(&lab.client, "TCPSynRetrans");
    let client = script("reuse_client.py");
    let mut all = vec!["python3", client.as_str()];
    all.extend_from_slice(args);
    let out = lab.client.run(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the client failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("ok ").count(), CONNECTIONS, "{stdout}");
    let after = tcp_ext(&lab.client, "TCPSynRetrans");
    assert_eq!(
        after, before,
        "SYNs had to be resent: a connect on the reused port was held back\n{stdout}"
    );
}

/// The daemon's `flow` lines from `client`, once all `CONNECTIONS` are logged.
fn wait_flows(daemon: &Daemon, service: &str, client: &str) {
    daemon.wait_for_log(WAIT, |_| {
        flows(&daemon.logs(), &[("service", service), ("client", client)]).len() >= CONNECTIONS
    });
}

/// The daemon's latest `kernel counters` line for `service`.
fn counters(daemon: &Daemon, service: &str, pred: impl Fn(&serde_json::Value) -> bool) {
    daemon.wait_for_log(WAIT, |l| {
        l["message"] == "kernel counters" && l["for_service"] == service && pred(l)
    });
}

fn hello_origin(lab: &Lab) -> (tempfile::TempDir, velocache_tests::Background) {
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("hello.txt"), "origin").unwrap();
    let server = http_server(&lab.origin, www.path(), 80);
    (www, server)
}

#[test]
fn plain_http_reusing_a_port_after_every_kind_of_close_connects_at_once() {
    require_tools(&["python3", "cat"]);
    let lab = Lab::new();
    let (_www, _origin) = hello_origin(&lab);
    let daemon = Daemon::start(&lab, "");
    reuse_port(
        &lab,
        &["http", addr::CLIENT, "41301", addr::ORIGIN, "80", KINDS],
    );
    wait_flows(&daemon, "http", &format!("{}:41301", addr::CLIENT));
    // The gateway closed first, so a closing socket held the port; the next SYN went through it.
    counters(&daemon, "http", |l| {
        l["steered_reused_port"].as_u64() >= Some(1) && l["lookup_assigned"].as_u64() >= Some(1)
    });
}

#[test]
fn plain_http_over_ipv6_reusing_a_port_connects_at_once() {
    require_tools(&["python3", "cat"]);
    let lab = Lab::new();
    let (_www, _origin) = hello_origin(&lab);
    let daemon = Daemon::start(&lab, "");
    reuse_port(
        &lab,
        &["http", addr::CLIENT6, "41302", addr::ORIGIN6, "80", KINDS],
    );
    wait_flows(&daemon, "http", &format!("[{}]:41302", addr::CLIENT6));
    counters(&daemon, "http", |l| {
        l["steered_reused_port"].as_u64() >= Some(1)
    });
}

#[test]
fn decrypted_https_reusing_a_port_after_every_kind_of_close_connects_at_once() {
    require_tools(&["python3", "cat", "nginx", "openssl", "nft"]);
    let lab = Lab::new();
    let origin = tls_origin(&lab);
    let (daemon, _d) = daemon_with(
        &lab,
        &origin,
        "[[rule]]\nname = \"lab\"\nmatch_host = \"origin.lab\"\naction = \"intercept_no_cache\"\n",
    );
    // Verified against the daemon's CA: the connections really are decrypted.
    let ca = our_ca(&daemon).display().to_string();
    reuse_port(
        &lab,
        &[
            "https",
            addr::CLIENT,
            "41303",
            addr::ORIGIN,
            "443",
            KINDS,
            "origin.lab",
            &ca,
        ],
    );
    wait_flows(&daemon, "https", &format!("{}:41303", addr::CLIENT));
    counters(&daemon, "https", |l| {
        l["steered_reused_port"].as_u64() >= Some(1)
    });
}

#[test]
fn spliced_tls_reusing_a_port_after_every_kind_of_close_connects_at_once() {
    require_tools(&["python3", "cat", "nginx", "openssl", "nft"]);
    let lab = Lab::new();
    let origin = tls_origin(&lab);
    let (daemon, _d) = daemon_with(&lab, &origin, "");
    // Verified against the origin's CA: the connections are spliced, not decrypted.
    let ca = origin.pki.ca_cert().display().to_string();
    reuse_port(
        &lab,
        &[
            "https",
            addr::CLIENT,
            "41304",
            addr::ORIGIN,
            "443",
            KINDS,
            "origin.lab",
            &ca,
        ],
    );
    wait_flows(&daemon, "https", &format!("{}:41304", addr::CLIENT));
    // The origin closed first, the splice passed that on: the gateway closed first towards
    // the client.
    counters(&daemon, "https", |l| {
        l["steered_reused_port"].as_u64() >= Some(1)
    });
}

#[test]
fn sip_over_tcp_reusing_a_port_after_every_kind_of_close_connects_at_once() {
    require_tools(&["python3", "cat"]);
    let lab = Lab::new();
    let _peer = lab.origin.spawn(&[
        "python3",
        &script("sip_tcp_origin.py"),
        addr::ORIGIN,
        "5060",
    ]);
    velocache_tests::servers::wait_tcp(&lab.origin, addr::ORIGIN, 5060);
    let daemon = Daemon::start(&lab, "");
    reuse_port(
        &lab,
        &["sip", addr::CLIENT, "41305", addr::ORIGIN, "5060", KINDS],
    );
    wait_flows(&daemon, "sip", &format!("{}:41305", addr::CLIENT));
    counters(&daemon, "sip", |l| {
        l["steered_reused_port"].as_u64() >= Some(1)
    });
}

/// One connection the gateway closes first (its socket then holds the port), from `port`.
fn leave_a_closing_socket(lab: &Lab, port: &str) {
    let client = script("reuse_client.py");
    lab.client.run_ok(&[
        "python3",
        &client,
        "http",
        addr::CLIENT,
        port,
        addr::ORIGIN,
        "80",
        "gateway-first",
    ]);
    let held = lab.gw.run_ok(&["ss", "-tanH", "state", "all"]);
    assert!(
        held.contains(&format!("{}:{port}", addr::CLIENT)),
        "the gateway holds no closing socket for the port: {held}"
    );
}

/// Whether the origin's Python server logged a request from `client:port` (it logs each one to
/// stderr): a connection that reached it directly.
fn origin_saw(server: &velocache_tests::Background, client: &str) -> bool {
    server.stderr().contains(&format!("{client} - -"))
}

#[test]
fn after_a_kill_the_reused_port_goes_straight_to_the_origin() {
    require_tools(&["python3", "ss", "curl", "cat", "sysctl"]);
    let lab = Lab::new();
    let (_www, origin) = hello_origin(&lab);
    let mut daemon = Daemon::start(&lab, "");
    leave_a_closing_socket(&lab, "41306");
    daemon.kill9();
    // The classifier (TCX) went with the daemon, the closing socket stayed: the reused port
    // must still reach the origin, at once.
    let before = tcp_ext(&lab.client, "TCPSynRetrans");
    let body = lab.client.run_ok(&[
        "curl",
        "-sS",
        "--max-time",
        "5",
        "--local-port",
        "41306",
        &format!("http://{}/hello.txt", addr::ORIGIN),
    ]);
    assert_eq!(body, "origin");
    assert_eq!(tcp_ext(&lab.client, "TCPSynRetrans"), before);
    assert!(origin_saw(&origin, addr::CLIENT), "{}", origin.stderr());
}

#[test]
fn a_surviving_classifier_passes_a_reused_port_and_the_whole_connection_after_a_kill() {
    require_tools(&["python3", "ss", "curl", "cat", "sysctl"]);
    let lab = Lab::new();
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("hello.txt"), "origin").unwrap();
    // Big enough for many packets after the handshake, which the closing socket must not take.
    let want = crate::util::random_file(&www.path().join("big.bin"), 2 * 1024 * 1024);
    let origin = http_server(&lab.origin, www.path(), 80);
    // A netlink (clsact) classifier outlives the daemon; no listener is left behind it.
    let mut daemon = Daemon::start(&lab, "[datapath]\nattach = \"netlink\"\n");
    leave_a_closing_socket(&lab, "41307");
    daemon.kill9();
    let out = tempfile::tempdir().unwrap();
    let got = out.path().join("big.bin");
    lab.client.run_ok(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--local-port",
        "41307",
        "-o",
        &got.display().to_string(),
        &format!("http://{}/big.bin", addr::ORIGIN),
    ]);
    assert_eq!(crate::util::sha256(&got), want, "bytes changed in transit");
    assert!(origin_saw(&origin, addr::CLIENT), "{}", origin.stderr());
}

#[test]
fn a_clean_stop_leaves_no_socket_holding_an_intercepted_address() {
    require_tools(&["python3", "ss", "curl", "cat", "sysctl"]);
    let lab = Lab::new();
    let (_www, server) = hello_origin(&lab);
    let demux = |ns: &Ns| ns.run_ok(&["sysctl", "-n", "net.ipv4.tcp_early_demux"]);
    assert_eq!(demux(&lab.gw).trim(), "1");
    let mut daemon = Daemon::start(&lab, "");
    assert_eq!(demux(&lab.gw).trim(), "0", "early demux stays on");
    leave_a_closing_socket(&lab, "41308");
    assert!(daemon.stop().success());
    // The daemon's own connections to the origin (from the gateway's address) may linger;
    // none may hold the origin's address as its local one.
    let left = lab.gw.run_ok(&["ss", "-tanH", "state", "all"]);
    let origin = format!("{}:80", addr::ORIGIN);
    assert!(
        !left
            .lines()
            .any(|l| l.split_whitespace().nth(3) == Some(origin.as_str())),
        "sockets left holding the origin's address: {left}"
    );
    assert_eq!(demux(&lab.gw).trim(), "1", "early demux not restored");
    let body = lab.client.run_ok(&[
        "curl",
        "-sS",
        "--max-time",
        "5",
        "--local-port",
        "41308",
        &format!("http://{}/hello.txt", addr::ORIGIN),
    ]);
    assert_eq!(body, "origin");
    assert!(origin_saw(&server, addr::CLIENT), "{}", server.stderr());
}
