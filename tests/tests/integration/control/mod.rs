//! The control plane as an operator meets it: every CLI subcommand against a daemon running in
//! the lab (`ip netns exec <gw> velocache … --json`), its JSON and exit codes, `/metrics`
//! checked by the Prometheus project's own OpenMetrics parser, reloads (SIGHUP and `service
//! reload`) with good and bad files while a download is in flight, and `service stop`.
use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde_json::Value;
use velocache_tests::{Daemon, Lab, addr, require_tools, velocache_bin};

use crate::util::{dns_upstream, http_server, random_file};

mod cache;
mod reload;
mod rules_edit;

pub(super) const WAIT: Duration = Duration::from_secs(20);

/// What a CLI run returned.
pub(super) struct Cli {
    pub(super) code: i32,
    pub(super) stdout: String,
    pub(super) stderr: String,
}

impl Cli {
    pub(super) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}), exit {}:\nstdout: {}\nstderr: {}",
                self.code, self.stdout, self.stderr
            )
        })
    }

    pub(super) fn ok(self) -> Value {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self.json()
    }
}

/// `X-Cache-Status` of a client's GET of `path` at the origin.
fn curl_cache_status(lab: &Lab, path: &str) -> String {
    let head = lab.client.run_ok(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-o",
        "/dev/null",
        "-D",
        "-",
        &format!("http://{}{path}", addr::ORIGIN),
    ]);
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-cache-status:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// `velocache ARGS --config <the daemon's config>` in the gateway namespace.
pub(super) fn cli(lab: &Lab, daemon: &Daemon, args: &[&str]) -> Cli {
    let config = daemon.dir().join("velocache.toml");
    let out = lab
        .gw
        .command(&velocache_bin().display().to_string())
        .args(args)
        .args(["--config", &config.display().to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Cli {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The exit code and JSON error of a command expected to fail.
pub(super) fn fails(lab: &Lab, daemon: &Daemon, args: &[&str], code: i32, kind: &str) -> Value {
    let out = cli(lab, daemon, args);
    assert_eq!(
        out.code, code,
        "{args:?}: stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    let v = out.json();
    assert_eq!(v["kind"], kind, "{args:?}: {v}");
    assert_eq!(v["exit_code"], code);
    v
}

pub(super) fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

/// Parse OpenMetrics text with the reference parser (python3-prometheus-client); returns
/// `{family: [[sample, labels, value], …]}`.
fn openmetrics_families(text: &str) -> Value {
    let script = r#"
import sys, json
from prometheus_client.openmetrics.parser import text_string_to_metric_families
fams = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    fams[f.name] = [[s.name, s.labels, s.value] for s in f.samples]
print(json.dumps(fams))
"#;
    // Debian's interpreter: the parser is the Debian package python3-prometheus-client.
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser rejected /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sample(fams: &Value, family: &str, labels: &[(&str, &str)]) -> f64 {
    fams[family]
        .as_array()
        .unwrap_or_else(|| panic!("family {family} missing"))
        .iter()
        .find(|s| labels.iter().all(|(k, v)| s[1][*k] == *v))
        .unwrap_or_else(|| panic!("{family}{labels:?} missing: {}", fams[family]))[2]
        .as_f64()
        .unwrap()
}

const RULES: &str = "warmup_urls = [\"http://10.77.2.2/warm.bin\"]\n\n\
[[rule]]\nname = \"packages\"\nmatch_path = \"*.deb\"\naction = \"cache\"\nttl_override = \"30d\"\n\n\
[[rule]]\nname = \"no-ads\"\nmatch_host = \"*.ads.lab\"\naction = \"deny\"\n";

#[test]
fn every_cli_subcommand_answers_with_json_and_documented_exit_codes() {
    require_tools(&["curl", "python3", "dig", "dnsmasq", "openssl", "setpriv"]);
    let lab = Lab::new();
    let www = tempfile::tempdir().unwrap();
    random_file(&www.path().join("a.bin"), 10_000);
    random_file(&www.path().join("warm.bin"), 20_000);
    // Published two days ago: fresh for hours by the heuristic, so a second fetch is a hit.
    for f in ["a.bin", "warm.bin"] {
        std::fs::File::options()
            .write(true)
            .open(www.path().join(f))
            .unwrap()
            .set_modified(std::time::SystemTime::now() - Duration::from_secs(2 * 86_400))
            .unwrap();
    }
    let _origin = http_server(&lab.origin, www.path(), 80);
    let _dns = dns_upstream(&lab.origin, addr::ORIGIN);
    let files = tempfile::tempdir().unwrap();
    let rules = write(&files.path().join("rules.toml"), RULES);
    let daemon = Daemon::start(
        &lab,
        &format!(
            "[rules]\nfile = \"{}\"\n[admin]\nmetrics_listen = \"127.0.0.1:9181\"\n",
            rules.display()
        ),
    );

    // Traffic the counters can show.
    lab.client.run_ok(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-o",
        "/dev/null",
        &format!("http://{}/a.bin", addr::ORIGIN),
    ]);
    let dig = lab.client.run_ok(&[
        "dig",
        "+short",
        "+time=2",
        &format!("@{}", addr::ORIGIN),
        "x.test.lab",
    ]);
    assert_eq!(dig.trim(), "10.9.9.9");

    // stats: per service flows from the flow tracker, kernel counters from the datapath.
    let stats = cli(&lab, &daemon, &["stats", "--json"]).ok();
    let service = |name: &str| {
        stats["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == name)
            .unwrap()
            .clone()
    };
    let http = service("http");
    assert_eq!(http["enabled"], true);
    assert!(http["flows"].as_u64().unwrap() >= 1, "{http}");
    assert!(
        http["kernel"]["steered_listener"].as_u64().unwrap() >= 1,
        "{http}"
    );
    assert!(service("dns")["flows"].as_u64().unwrap() >= 1, "{stats}");
    assert!(http["active_sessions"].is_u64());
    assert_eq!(stats["warmup"]["total"], 1, "{stats}");
    assert!(
        stats["daemon"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "velocache_process_resident_memory_bytes"
                && s["value"].as_f64().unwrap() > 0.0),
        "{stats}"
    );
    // The rules' warmup_urls were fetched at start, through the cache: the origin saw the
    // request and the first client gets a hit.
    daemon.wait_for_log(WAIT, |l| {
        l["message"] == "request" && l["path"] == "/warm.bin" && l["cache"] == "miss"
    });
    daemon.wait_for_log(WAIT, |l| {
        l["message"] == "cache warm-up finished" && l["ok"] == 1
    });
    let warmed = curl_cache_status(&lab, "/warm.bin");
    assert_eq!(warmed, "hit");
    let stats = cli(&lab, &daemon, &["stats", "--json"]).ok();
    assert_eq!(stats["warmup"]["state"], "done", "{stats}");
    assert_eq!(stats["warmup"]["ok"], 1, "{stats}");
    let human = cli(&lab, &daemon, &["stats"]);
    assert_eq!(human.code, 0);
    assert!(human.stdout.starts_with("SERVICE"), "{}", human.stdout);

    // service status.
    let status = cli(&lab, &daemon, &["service", "status", "--json"]).ok();
    assert_eq!(status["state"], "running");
    assert_eq!(status["pid"], daemon.pid());
    assert_eq!(status["interfaces"], serde_json::json!([addr::LAN_IF]));
    assert_eq!(status["rules"], 2);
    assert_eq!(status["rules_file"], rules.display().to_string());
    assert_eq!(
        status["admin"]["socket"],
        daemon.dir().join("run/admin.sock").display().to_string()
    );
    assert_eq!(status["admin"]["metrics"], "127.0.0.1:9181");

    // rules show / check.
    let shown = cli(&lab, &daemon, &["rules", "show", "--json"]).ok();
    assert_eq!(shown["rules"][0]["name"], "packages");
    assert_eq!(shown["rules"][0]["ttl_override_secs"], 30 * 86_400);
    assert_eq!(shown["rules"][1]["action"], "deny");
    assert_eq!(shown["warmup_urls"][0], "http://10.77.2.2/warm.bin");
    let checked = cli(
        &lab,
        &daemon,
        &["rules", "check", &rules.display().to_string(), "--json"],
    )
    .ok();
    assert_eq!(checked["rules"], 2);
    let bad = write(
        &files.path().join("bad.toml"),
        "[[rule]]\nname = \"x\"\naction = 5\n",
    );
    let err = fails(
        &lab,
        &daemon,
        &["rules", "check", &bad.display().to_string(), "--json"],
        1,
        "failed",
    );
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains(&format!("{}:3", bad.display())),
        "{err}"
    );

    // The HTTP cache: list, show, purge (the next request misses), warm (the next one hits).
    let listing = cli(&lab, &daemon, &["cache", "ls", "--json"]).ok();
    assert_eq!(listing["total"], 2, "{listing}");
    let urls: Vec<&str> = listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["url"].as_str().unwrap())
        .collect();
    assert!(urls.contains(&"http://10.77.2.2/a.bin"), "{listing}");
    let shown = cli(
        &lab,
        &daemon,
        &["cache", "show", "http://10.77.2.2/a.bin", "--json"],
    )
    .ok();
    assert_eq!(shown["size_bytes"], 10_000, "{shown}");
    assert_eq!(shown["status"], 200);
    let purged = cli(
        &lab,
        &daemon,
        &["cache", "purge", "http://10.77.2.2/a*", "--json"],
    )
    .ok();
    assert_eq!(purged["purged"], 1, "{purged}");
    assert_eq!(purged["bytes"], 10_000);
    fails(
        &lab,
        &daemon,
        &["cache", "show", "http://10.77.2.2/a.bin", "--json"],
        4,
        "not_found",
    );
    assert_eq!(curl_cache_status(&lab, "/a.bin"), "miss");
    cli(&lab, &daemon, &["cache", "purge", "*", "--json"]).ok();
    let warm = cli(
        &lab,
        &daemon,
        &["cache", "warm", "http://10.77.2.2/a.bin", "--json"],
    )
    .ok();
    assert_eq!(warm["results"][0]["ok"], true, "{warm}");
    assert_eq!(warm["results"][0]["outcome"], "stored", "{warm}");
    assert_eq!(curl_cache_status(&lab, "/a.bin"), "hit");
    // SIP calls: none here (the SIP lab tests show calls with their media).
    let calls = cli(&lab, &daemon, &["calls", "--json"]).ok();
    assert_eq!(calls["active"], serde_json::json!([]), "{calls}");

    // The local CA: HTTPS is on, so the TLS layer registered it.
    let ca = cli(&lab, &daemon, &["ca", "export", "--json"]).ok();
    let pem = ca["pem"].as_str().unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    let pem_file = write(&files.path().join("ca.pem"), pem);
    let subject = lab.gw.run_ok(&[
        "openssl",
        "x509",
        "-noout",
        "-subject",
        "-in",
        &pem_file.display().to_string(),
    ]);
    assert!(subject.contains("subject"), "{subject}");
    let plain = cli(&lab, &daemon, &["ca", "export"]);
    assert_eq!(plain.stdout, pem, "without --json: the PEM itself");

    // /metrics through the CLI and the metrics listener: the reference parser accepts both.
    let text = cli(&lab, &daemon, &["metrics"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    let fams = openmetrics_families(&text.stdout);
    assert!(
        sample(
            &fams,
            "velocache_datapath_packets",
            &[("service", "http"), ("verdict", "steered_listener")]
        ) >= 1.0
    );
    assert!(sample(&fams, "velocache_flows", &[("service", "http")]) >= 1.0);
    assert!(sample(&fams, "velocache_active_sessions", &[("service", "dns")]) >= 0.0);
    assert_eq!(sample(&fams, "velocache_rules", &[]), 2.0);
    let scraped = lab.gw.run_ok(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "http://127.0.0.1:9181/metrics",
    ]);
    openmetrics_families(&scraped);
    let denied = lab.gw.run(&[
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "http://127.0.0.1:9181/v1/status",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&denied.stdout),
        "404",
        "metrics listener serves /metrics only"
    );

    // Commands that need no daemon.
    let dp = cli(&lab, &daemon, &["datapath", "show", "--json", addr::LAN_IF]).ok();
    assert_eq!(dp[0]["velocache_attached"], true);
    let check = cli(
        &lab,
        &daemon,
        &[
            "config",
            "check",
            &daemon.dir().join("velocache.toml").display().to_string(),
        ],
    );
    assert_eq!(check.code, 0, "{}", check.stderr);

    // Usage error, daemon not running, permission denied.
    let usage = cli(&lab, &daemon, &["cache", "purge"]);
    assert_eq!(usage.code, 2, "{}", usage.stderr);
    fails(
        &lab,
        &daemon,
        &["stats", "--json", "--socket", "/nonexistent/admin.sock"],
        3,
        "not_running",
    );
    let sock = daemon.dir().join("run/admin.sock");
    let meta = std::fs::metadata(&sock).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "admin socket is root-only"
    );
    let nobody = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(velocache_bin())
        .args(["stats", "--json", "--socket", &sock.display().to_string()])
        .output()
        .unwrap();
    assert_eq!(
        nobody.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&nobody.stderr)
    );
}

#[test]
fn service_stop_stops_the_daemon_cleanly() {
    let lab = Lab::new();
    let mut daemon = Daemon::start(&lab, "");
    let sock = daemon.dir().join("run/admin.sock");
    assert!(sock.exists());
    let out = cli(&lab, &daemon, &["service", "stop", "--json"]).ok();
    assert_eq!(out["stopping"], true);
    assert_eq!(out["stopped"], true, "{out}");
    // The process is gone (CLI waited for that), with status 0 and its datapath detached.
    let mut status = None;
    for _ in 0..200 {
        status = daemon.try_wait();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let status = status.expect("daemon still running after service stop");
    assert!(status.success(), "{status}");
    daemon.wait_for_log(WAIT, |l| l["message"] == "velocache stopped");
    daemon.wait_for_log(WAIT, |l| {
        l["message"] == "stop requested through the admin API"
    });
    assert!(!sock.exists(), "admin socket removed");
    let dp = cli(&lab, &daemon, &["datapath", "show", "--json", addr::LAN_IF]);
    assert_eq!(dp.code, 1, "nothing attached any more: {}", dp.stdout);
    fails(
        &lab,
        &daemon,
        &["service", "status", "--json"],
        3,
        "not_running",
    );
}
