//! Boundaries: what the gateway must never do, whatever it is sent. Packets from the WAN are
//! never steered; the admin API over TCP needs its token and the metrics listener serves
//! nothing else; the CA's private key appears in no log line and no API answer; a client cannot
//! use the proxy to reach any destination but the one it connected to.
use std::process::Stdio;

use serde_json::json;
use velocache_tests::{Daemon, Lab, addr, require_tools, velocache_bin};

use crate::http::{Origin, WAIT, url};
use crate::util::{dns_upstream, http_server};

/// A server in `client` (the LAN) reached from `origin` (the WAN) on an intercepted port, and
/// a DNS query the same way: both go through the gateway untouched — no flow, no query logged
/// by the daemon, the server sees the WAN peer's own address.
#[test]
fn packets_arriving_on_the_wan_interface_are_never_steered() {
    require_tools(&["curl", "python3", "dig", "dnsmasq"]);
    let lab = Lab::new();
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "lan server").unwrap();
    let server = http_server(&lab.client, www.path(), 80);
    let _dns = dns_upstream(&lab.client, addr::CLIENT);
    let daemon = Daemon::start(&lab, "");
    let body = lab.origin.run_ok(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        &format!("http://{}/", addr::CLIENT),
    ]);
    assert_eq!(body, "lan server");
    let answer = lab.origin.run_ok(&[
        "dig",
        "+short",
        "+time=3",
        &format!("@{}", addr::CLIENT),
        "w.test.lab",
    ]);
    assert_eq!(answer.trim(), "10.9.9.9");
    // A LAN request through the same daemon is steered (the daemon is working).
    let _origin = Origin::start(&lab);
    lab.client.run_ok(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-o",
        "/dev/null",
        &url("/"),
    ]);
    daemon.wait_for_log(WAIT, |l| {
        l["message"] == "flow"
            && l["client"]
                .as_str()
                .is_some_and(|c| c.starts_with(addr::CLIENT))
    });
    let from_wan: Vec<String> = daemon
        .logs()
        .iter()
        .filter(|l| {
            l["client"]
                .as_str()
                .is_some_and(|c| c.starts_with("10.77.2.") || c.starts_with("[fd77:2:"))
        })
        .map(|l| l.to_string())
        .collect();
    assert!(
        from_wan.is_empty(),
        "WAN traffic was steered:\n{}",
        from_wan.join("\n")
    );
    assert!(
        server.stderr().contains(&format!("{} - -", addr::ORIGIN)),
        "the LAN server did not see the WAN peer's address:\n{}",
        server.stderr()
    );
}

/// The TCP admin API answers only with the right bearer token (a wrong one: exit 5, as the
/// README says; raw requests: 401), and the metrics listener serves `/metrics` and nothing else.
#[test]
fn the_tcp_admin_api_needs_its_token_and_the_metrics_listener_serves_only_metrics() {
    require_tools(&["curl"]);
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "s3cret-token-for-the-lab\n").unwrap();
    let wrong = dir.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-token").unwrap();
    let mut daemon = Daemon::start(
        &lab,
        &format!(
            "[admin]\ntcp_listen = \"127.0.0.1:9180\"\ntoken_file = \"{}\"\nmetrics_listen = \"127.0.0.1:9181\"\n",
            token.display()
        ),
    );
    let cli = |extra: &[&str]| {
        let out = lab
            .gw
            .command(&velocache_bin().display().to_string())
            .args(["stats", "--json", "--connect", "127.0.0.1:9180"])
            .args(extra)
            .env_remove("VELOCACHE_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // The CLI refuses to connect without a token at all (a usage error).
    let (code, out) = cli(&[]);
    assert_eq!(code, Some(2), "no token: {out}");
    let (code, out) = cli(&["--token-file", &wrong.display().to_string()]);
    assert_eq!(code, Some(5), "wrong token: {out}");
    let (code, out) = cli(&["--token-file", &token.display().to_string()]);
    assert_eq!(code, Some(0), "right token: {out}");
    // Raw HTTP: 401 without the token, whatever the path.
    let status = |url: &str, auth: Option<&str>| {
        let mut args = vec![
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ];
        let header;
        if let Some(a) = auth {
            header = format!("Authorization: Bearer {a}");
            args.extend(["-H", &header]);
        }
        args.push(url);
        lab.gw.run_ok(&args)
    };
    assert_eq!(status("http://127.0.0.1:9180/v1/stats", None), "401");
    assert_eq!(status("http://127.0.0.1:9180/v1/ca", Some("nope")), "401");
    assert_eq!(
        status(
            "http://127.0.0.1:9180/v1/stats",
            Some("s3cret-token-for-the-lab")
        ),
        "200"
    );
    // The metrics listener: /metrics without a token, nothing else at all.
    assert_eq!(status("http://127.0.0.1:9181/metrics", None), "200");
    for path in ["/v1/stats", "/v1/ca", "/v1/cache", "/v1/service/stop"] {
        let code = status(&format!("http://127.0.0.1:9181{path}"), None);
        assert!(
            code == "404" || code == "401" || code == "405",
            "{path}: {code}"
        );
    }
    assert!(daemon.try_wait().is_none(), "the daemon died");
}

/// The CA's private key (and a rotated one) appears in no log line and no admin API answer.
#[test]
fn the_ca_private_key_is_in_no_log_line_and_no_api_answer() {
    let lab = Lab::new();
    let daemon = Daemon::start(&lab, "[log]\nlevel = \"debug\"\n");
    let ca_dir = daemon.dir().join("state/ca");
    let first_key = std::fs::read_to_string(ca_dir.join("ca.key")).unwrap();
    let config = daemon.dir().join("velocache.toml");
    let api = |args: &[&str]| {
        let out = lab
            .gw
            .command(&velocache_bin().display().to_string())
            .args(args)
            .args(["--json", "--config", &config.display().to_string()])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let mut answers = String::new();
    for args in [
        &["ca", "export"][..],
        &["ca", "rotate"],
        &["ca", "export"],
        &["stats"],
        &["service", "status"],
        &["cache", "ls"],
        &["calls"],
        &["rules", "show"],
        &["metrics"],
        &["service", "reload"],
    ] {
        answers.push_str(&api(args));
    }
    let second_key = std::fs::read_to_string(ca_dir.join("ca.key")).unwrap();
    assert_ne!(first_key, second_key, "the CA was not rotated");
    let logs = daemon.log_text();
    for key in [&first_key, &second_key] {
        for line in key
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        {
            assert!(!logs.contains(line), "a CA key line is in the log");
            assert!(!answers.contains(line), "a CA key line is in an API answer");
        }
    }
    assert!(
        answers.contains("BEGIN CERTIFICATE"),
        "ca export gave no certificate"
    );
}

/// A client connected to one origin names another in an absolute-form request line, in Host,
/// and in a CONNECT: every request still goes to the address it connected to, and nothing ever
/// reaches the other one through the gateway.
#[test]
fn the_proxy_reaches_no_destination_but_the_one_the_client_connected_to() {
    require_tools(&["curl", "python3"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    origin.file("a.txt", 10);
    origin.route(
        "/a.txt",
        json!({"headers": {"Cache-Control": "max-age=600"}}),
    );
    let daemon = Daemon::start(&lab, "");
    let target = format!("http://{}/a.txt", addr::ORIGIN2);
    // Absolute-form naming the other address.
    let code = lab.client.run_ok(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--request-target",
        &target,
        &url("/a.txt"),
    ]);
    assert!(code == "200" || code == "400", "{code}");
    let last = origin.last("/a.txt");
    if code == "200" {
        assert_eq!(
            last["__local"]
                .as_str()
                .map(|l| l.trim_start_matches("::ffff:")),
            Some(addr::ORIGIN),
            "{last}"
        );
    }
    // Host naming the other address.
    lab.client.run_ok(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-o",
        "/dev/null",
        "-H",
        &format!("Host: {}", addr::ORIGIN2),
        &url("/a.txt?host"),
    ]);
    let last = origin.last("/a.txt");
    assert_eq!(
        last["__local"]
            .as_str()
            .map(|l| l.trim_start_matches("::ffff:")),
        Some(addr::ORIGIN),
        "{last}"
    );
    // CONNECT to the other address, through the intercepted connection to the first.
    let out = lab.client.run(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-p",
        "-x",
        &format!("http://{}:80", addr::ORIGIN),
        &format!("http://{}/connect.txt", addr::ORIGIN2),
    ]);
    assert!(!out.status.success(), "a tunnel to another host was opened");
    let line = daemon.wait_for_log(WAIT, |l| {
        l["message"] == "request" && l["method"] == "CONNECT"
    });
    assert_eq!(line["orig_dst"], format!("{}:80", addr::ORIGIN), "{line}");
    // Nothing arrived on the other address, and no tunnelled GET anywhere.
    let state = origin.state();
    let counts = state["counts"].as_object().cloned().unwrap_or_default();
    let last_all = state["last"].as_object().cloned().unwrap_or_default();
    for (path, l) in &last_all {
        let local = l["__local"].as_str().unwrap_or("");
        assert!(!local.ends_with(addr::ORIGIN2), "{path} reached {local}");
    }
    assert!(
        counts.keys().all(|p| p != "/connect.txt"),
        "a tunnelled request reached an origin: {counts:?}"
    );
}
