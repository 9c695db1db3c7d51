//! Chaos tooling in the lab (issue 16, part B): fault injection seen from `curl` in `client`,
//! anomaly lines when the scripted origin (`tests/scripts/origin.py`) turns slow or is sent a
//! path of a shape it never saw, and record → origin changes → replay reporting the change.
//! Times are only ever checked as lower bounds ("at least the delay"), never as speeds.
use std::{path::Path, time::Duration};

use serde_json::{Value, json};
use velocache_tests::{Daemon, Lab, addr, require_tools, velocache_bin};

use crate::http::{Origin, WAIT, url};

/// `velocache ARGS --config <the daemon's config>` in `gw`: exit code, stdout, stderr.
fn cli(lab: &Lab, daemon: &Daemon, args: &[&str]) -> (i32, String, String) {
    let out = daemon.cli(lab, args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cli_json(lab: &Lab, daemon: &Daemon, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, out, err) = cli(lab, daemon, &all);
    assert_eq!(code, 0, "velocache {args:?}:\n{out}\n{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("velocache {args:?}: {e}\n{out}"))
}

/// A daemon with `rules` as its rules file and `extra` configuration.
fn daemon_with_rules(lab: &Lab, rules: &str, extra: &str) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.toml");
    std::fs::write(&file, rules).unwrap();
    let daemon = Daemon::start(
        lab,
        &format!("{extra}\n[rules]\nfile = \"{}\"\n", file.display()),
    );
    (daemon, dir)
}

/// `curl -w` of one GET from `client`: (status, seconds in total).
fn timed_get(lab: &Lab, path: &str) -> (u16, f64) {
    let out = lab.client.run_ok(&[
        "curl",
        "-sS",
        "--max-time",
        "60",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{time_total}",
        &url(path),
    ]);
    let mut it = out.split_whitespace();
    let status = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let secs = it.next().and_then(|s| s.parse().ok()).unwrap_or(0.0);
    (status, secs)
}

fn lines<'a>(logs: &'a [Value], message: &str) -> Vec<&'a Value> {
    logs.iter().filter(|l| l["message"] == message).collect()
}

const FAULT_RULES: &str = r#"
[[rule]]
name = "slow"
match_path = "/slow/*"
action = "intercept_no_cache"
fault = { delay_ms = 800 }

[[rule]]
name = "down"
match_path = "/down/*"
action = "cache"
fault = { abort_status = 503 }

[[rule]]
name = "flaky"
match_path = "/flaky/*"
action = "intercept_no_cache"
fault = { abort_status = 500, abort_percent = 50 }

[[rule]]
name = "thin"
match_path = "/thin/*"
action = "intercept_no_cache"
fault = { bandwidth_kbps = 256 }
"#;

#[test]
fn faults_delay_abort_and_throttle_only_the_requests_their_rule_matches() {
    require_tools(&["curl", "python3"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    for dir in ["slow", "down", "flaky", "thin"] {
        std::fs::create_dir_all(origin.path(dir)).unwrap();
    }
    origin.file("slow/a", 100);
    origin.file("down/a", 100);
    origin.file("flaky/x", 100);
    origin.file("plain", 100);
    let thin_sha = origin.file("thin/big", 64_000);
    let (daemon, _rules) = daemon_with_rules(&lab, FAULT_RULES, "");

    // Delay: at least delay_ms; a path no fault rule decides is answered at once (no bound
    // checked on it, only that it is not aborted).
    let (status, secs) = timed_get(&lab, "/slow/a");
    assert_eq!(status, 200);
    assert!(secs >= 0.8, "the delayed request took {secs} s");
    assert_eq!(timed_get(&lab, "/plain").0, 200);

    // Abort: the status, and the origin never asked.
    let body = crate::http::curl(&lab, &["-w", "\n%{http_code}", &url("/down/a")]);
    assert!(body.ends_with("\n503"), "{body}");
    assert!(body.contains("fault injected by rule down"), "{body}");
    assert_eq!(origin.count("/down/a"), 0);

    // abort_percent = 50 over 60 requests on one connection: a wide band (outside it by chance
    // with odds below 1e-6).
    let flaky = url("/flaky/x");
    let mut args = vec!["-w", "%{http_code}\n"];
    for _ in 0..60 {
        args.extend_from_slice(&["-o", "/dev/null", flaky.as_str()]);
    }
    let codes = crate::http::curl(&lab, &args);
    let codes: Vec<&str> = codes.lines().collect();
    assert_eq!(codes.len(), 60, "{codes:?}");
    let aborted = codes.iter().filter(|c| **c == "500").count();
    assert_eq!(
        aborted + codes.iter().filter(|c| **c == "200").count(),
        60,
        "{codes:?}"
    );
    assert!((12..=48).contains(&aborted), "{aborted} of 60 aborted");
    assert_eq!(origin.count("/flaky/x") as usize, 60 - aborted);

    // Bandwidth: 64 000 bytes at 256 kbps (32 000 bytes/s) take at least 2 s, and arrive whole.
    let (status, secs) = timed_get(&lab, "/thin/big");
    assert_eq!(status, 200);
    assert!(secs >= 2.0, "the throttled body took {secs} s");
    assert_eq!(crate::http::fetch_sha(&lab, "/thin/big"), thin_sha);

    // Each application is logged with its rule and kind, and counted.
    let logs = daemon.logs();
    let faults = lines(&logs, "fault injected");
    for (rule, kind) in [
        ("slow", "delay"),
        ("down", "abort"),
        ("flaky", "abort"),
        ("thin", "bandwidth"),
    ] {
        assert!(
            faults
                .iter()
                .any(|l| l["rule"] == rule && l["fault"] == kind),
            "no {kind} line for {rule}: {faults:?}"
        );
    }
    assert!(
        faults.iter().all(|l| l["path"] != "/plain"),
        "a request no fault rule decides got one"
    );
    let (_, metrics, _) = cli(&lab, &daemon, &["metrics"]);
    assert!(
        metrics.contains(r#"velocache_http_faults_injected_total{kind="abort",rule="flaky"}"#),
        "{metrics}"
    );
    let rules = cli_json(&lab, &daemon, &["rules", "show"]);
    assert_eq!(rules["rules"][2]["fault"]["abort_percent"], json!(50.0));

    // `rules check` refuses a bad fault table with the line and the key.
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        bad.path(),
        "[[rule]]\nname = \"ok\"\naction = \"cache\"\n\n[[rule]]\nname = \"bad\"\naction = \"cache\"\nfault = { abort_percent = 20 }\n",
    )
    .unwrap();
    let out = std::process::Command::new(velocache_bin())
        .args(["rules", "check", &bad.path().display().to_string()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(":8:") && err.contains("rule[1].fault.abort_percent"),
        "{err}"
    );
}

#[test]
fn an_anomaly_line_when_the_origin_slows_down_or_meets_a_never_seen_path_shape() {
    require_tools(&["curl", "python3"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    std::fs::create_dir_all(origin.path("api/items")).unwrap();
    for i in 1..=12 {
        origin.file(&format!("api/items/{i}"), 200);
    }
    origin.file("admin-export", 200);
    // Every request goes to the origin (nothing is answered from the cache).
    let (daemon, _rules) = daemon_with_rules(
        &lab,
        "[[rule]]\nname = \"all\"\naction = \"intercept_no_cache\"\n",
        "[anomaly]\nwarmup_requests = 10\nlatency_min_ms = 100\nalert_interval_secs = 1\n",
    );
    for i in 1..=12 {
        assert_eq!(timed_get(&lab, &format!("/api/items/{i}")).0, 200);
    }
    assert!(
        lines(&daemon.logs(), "anomaly").is_empty(),
        "warm-up, one path shape, a steady origin: nothing to report"
    );

    // A shape never sent to this origin.
    assert_eq!(timed_get(&lab, "/admin-export").0, 200);
    let shape = daemon.wait_for_log(WAIT, |l| {
        l["message"] == "anomaly" && l["metric"] == "new_path"
    });
    assert_eq!(shape["observed"], "/admin-export");
    assert_eq!(shape["origin"], format!("{}:80", addr::ORIGIN));
    assert_eq!(shape["host"], addr::ORIGIN);
    assert_eq!(shape["level"], "warn");

    // The origin turns slow for real: its answers wait 700 ms.
    origin.route("/api/items/3", json!({"delay": 0.7}));
    for _ in 0..3 {
        let (status, secs) = timed_get(&lab, "/api/items/3");
        assert_eq!(status, 200);
        assert!(secs >= 0.7, "{secs}");
    }
    let slow = daemon.wait_for_log(WAIT, |l| {
        l["message"] == "anomaly" && l["metric"] == "latency_ms"
    });
    let baseline = slow["baseline"].as_f64().unwrap();
    let observed = slow["observed"].as_f64().unwrap();
    assert!(observed > 3.0 * baseline && observed >= 100.0, "{slow}");
    assert_eq!(slow["path"], "/api/items/3");
    assert_eq!(
        lines(&daemon.logs(), "anomaly")
            .iter()
            .filter(|l| l["metric"] == "latency_ms")
            .count(),
        1,
        "one deviation, one line"
    );
    let (_, metrics, _) = cli(&lab, &daemon, &["metrics"]);
    for metric in ["latency_ms", "new_path"] {
        assert!(
            metrics.contains(&format!(
                "velocache_http_anomalies_total{{metric=\"{metric}\"}} 1"
            )),
            "{metrics}"
        );
    }
}

#[test]
fn replay_reports_the_responses_the_origin_changed_since_the_recording() {
    require_tools(&["curl", "python3"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    std::fs::create_dir_all(origin.path("r")).unwrap();
    let first_sha = origin.file("r/page", 5000);
    origin.file("r/other", 300);
    origin.file("elsewhere", 10);
    let (daemon, _rules) = daemon_with_rules(
        &lab,
        "[[rule]]\nname = \"all\"\naction = \"intercept_no_cache\"\n",
        "",
    );
    let started = cli_json(&lab, &daemon, &["record", "start", "--host", addr::ORIGIN]);
    assert_eq!(started["state"], "recording");
    crate::http::curl(
        &lab,
        &[
            "-o",
            "/dev/null",
            "-H",
            "Authorization: Bearer topsecret",
            &url("/r/page"),
        ],
    );
    crate::http::curl(&lab, &["-o", "/dev/null", &url("/r/other?x=1")]);
    // A POST: its body is recorded and replayed (the origin answers with its length).
    let posted = crate::http::curl(&lab, &["--data-binary", "hello=world", &url("/r/form")]);
    assert_eq!(posted, "posted 11 bytes\n");
    // Entries land when the proxy is done with each body: wait for all three (bounded).
    let end = std::time::Instant::now() + WAIT;
    while cli_json(&lab, &daemon, &["record", "status"])["entries"] != 3 {
        assert!(
            std::time::Instant::now() < end,
            "the recording never got 3 entries"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let stopped = cli_json(&lab, &daemon, &["record", "stop"]);
    assert_eq!(stopped["state"], "stopped");
    let file = stopped["file"].as_str().unwrap().to_string();
    assert!(
        file.starts_with(&daemon.dir().join("state").display().to_string()),
        "{file}"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        !text.contains("topsecret"),
        "the Authorization value was recorded"
    );
    let har: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(har["log"]["version"], "1.2");
    assert_eq!(har["log"]["entries"].as_array().unwrap().len(), 3);
    assert_eq!(
        har["log"]["entries"][2]["request"]["postData"]["text"],
        "hello=world"
    );
    assert_eq!(
        har["log"]["entries"][0]["response"]["content"]["_sha256"],
        first_sha
    );

    // Unchanged: the replay agrees with the recording (the POST too: its body was sent again).
    let same = replay(&lab, &daemon, &file, &[]);
    assert_eq!(same["changed"], 0, "{same}");

    // The origin changes: new bytes under /r/page, a 503 for /r/other.
    let new_sha = {
        std::fs::remove_file(origin.path("r/page")).unwrap();
        std::fs::write(origin.path("r/page"), vec![7u8; 5000]).unwrap();
        crate::util::sha256(&origin.path("r/page"))
    };
    assert_ne!(new_sha, first_sha);
    origin.route("/r/other", json!({"status": 503}));
    let changed = replay(&lab, &daemon, &file, &["--fast"]);
    assert_eq!(changed["changed"], 2, "{changed}");
    let page = &changed["results"][0];
    assert_eq!(page["status"], 200);
    assert_eq!(page["status_changed"], false);
    assert_eq!(page["body_changed"], true);
    assert_eq!(page["sha256"], new_sha);
    let other = &changed["results"][1];
    assert_eq!(
        (other["recorded_status"].clone(), other["status"].clone()),
        (json!(200), json!(503))
    );
    assert_eq!(other["status_changed"], true);
    // The table says the same to a person.
    let (code, table, err) = cli(
        &lab,
        &daemon,
        &["replay", &file, "--to", &format!("http://{}", addr::ORIGIN)],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        table.contains("200 -> 503") && table.contains("CHANGED"),
        "{table}"
    );
}

/// `velocache replay FILE --to http://<origin> ARGS --json` from `gw` (not intercepted).
fn replay(lab: &Lab, daemon: &Daemon, file: &str, args: &[&str]) -> Value {
    let to = format!("http://{}", addr::ORIGIN);
    let mut all = vec!["replay", file, "--to", to.as_str()];
    all.extend_from_slice(args);
    assert!(Path::new(file).exists());
    cli_json(lab, daemon, &all)
}
