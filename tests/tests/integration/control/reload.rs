//! Reloads as an operator meets them: SIGHUP and `velocache service reload` / `rules reload`
//! with good and bad files while a flow is in flight, live settings (bypass list, log level)
//! and settings that wait for a restart.
use std::time::Duration;

use serde_json::Value;
use velocache_tests::{Daemon, Lab, addr, require_tools};

use super::{WAIT, cli, write};
use crate::util::{http_server, random_file, sha256};

#[test]
fn reload_by_sighup_and_cli_keeps_flows_applies_live_settings_and_refuses_bad_files() {
    require_tools(&["curl", "python3", "sha256sum"]);
    let lab = Lab::new();
    let www = tempfile::tempdir().unwrap();
    let want = random_file(&www.path().join("big.bin"), 1_000_000);
    // An origin that takes its time for `/slow` (40 slices, 150 ms apart), so the daemon holds
    // that flow open across every reload below; anything else comes at once.
    let slow = write(&www.path().join("slow.py"), SLOW_ORIGIN);
    let _origin = lab.origin.spawn(&[
        "python3",
        &slow.display().to_string(),
        &www.path().join("big.bin").display().to_string(),
    ]);
    velocache_tests::servers::wait_tcp(&lab.origin, addr::ORIGIN, 80);
    let files = tempfile::tempdir().unwrap();
    let rules = write(
        &files.path().join("rules.toml"),
        "[[rule]]\nname = \"one\"\nmatch_host = \"a.lab\"\naction = \"deny\"\n",
    );
    let extra = format!("[rules]\nfile = \"{}\"\n", rules.display());
    let daemon = Daemon::start(&lab, &extra);
    let config_path = daemon.dir().join("velocache.toml");
    let config_text = daemon.config.clone();

    let got = files.path().join("got.bin");
    let mut download = lab.client.spawn(&[
        "curl",
        "-sS",
        "--max-time",
        "120",
        "-o",
        &got.display().to_string(),
        &format!("http://{}/slow", addr::ORIGIN),
    ]);
    for _ in 0..400 {
        if std::fs::metadata(&got).is_ok_and(|m| m.len() > 0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(
        std::fs::metadata(&got).is_ok_and(|m| m.len() > 0),
        "the download did not start"
    );

    // Good rules, by SIGHUP.
    write(
        &rules,
        "[[rule]]\nname = \"two\"\nmatch_host = \"b.lab\"\naction = \"deny\"\n",
    );
    daemon.reload();
    daemon.wait_for_log(WAIT, |l| {
        l["message"] == "reload done" && l["trigger"] == "SIGHUP"
    });
    let shown = cli(&lab, &daemon, &["rules", "show", "--json"]).ok();
    assert_eq!(shown["rules"][0]["name"], "two");

    // Bad rules, by SIGHUP: refused, with file and line, the rules in force stay.
    write(
        &rules,
        "[[rule]]\nname = \"three\"\n\naction = [\"cache\"]\n",
    );
    daemon.reload();
    let refused = daemon.wait_for_log(WAIT, |l| {
        l["message"] == "rules reload refused; the rules in force stay"
    });
    let error = refused["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("{}:4:", rules.display())),
        "{refused}"
    );
    let shown = cli(&lab, &daemon, &["rules", "show", "--json"]).ok();
    assert_eq!(shown["rules"][0]["name"], "two");
    // The same through the CLI: exit 1, the report says why.
    let out = cli(&lab, &daemon, &["rules", "reload", "--json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let report = out.json();
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains(&format!("{}:4:", rules.display())),
        "{report}"
    );
    assert_eq!(report["rules"], 1);
    write(
        &rules,
        "[[rule]]\nname = \"four\"\nmatch_host = \"d.lab\"\naction = \"deny\"\n",
    );

    // A bad configuration file: refused with file, line, key and reason; nothing changes.
    write(
        &config_path,
        &format!("{config_text}\n[http]\nports = \"eighty\"\n"),
    );
    let out = cli(&lab, &daemon, &["service", "reload", "--json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let report = out.json();
    let error = report["config"]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{report}"));
    let line = config_text.lines().count() + 3;
    assert!(
        error.starts_with(&format!("{}:{line}:", config_path.display())),
        "{error}"
    );
    assert!(error.contains("http.ports"), "{error}");
    let logged = daemon.wait_for_log(WAIT, |l| {
        l["message"] == "configuration reload refused; the running configuration stays"
    });
    assert_eq!(logged["file"], config_path.display().to_string());
    assert_eq!(logged["line"], line);
    assert_eq!(logged["key"], "http.ports");

    // A good file with a live change (bypass CLIENT2) and a restart-only one (listen port).
    write(
        &config_path,
        &format!(
            "{}\n[sip]\nlisten_port = 25060\n",
            config_text.replace(
                "[datapath]\n",
                &format!("[datapath]\nbypass_clients = [\"{}/32\"]\n", addr::CLIENT2)
            )
        ),
    );
    let report = cli(&lab, &daemon, &["service", "reload", "--json"]).ok();
    assert_eq!(report["config"]["error"], Value::Null, "{report}");
    assert_eq!(
        report["config"]["applied"],
        serde_json::json!(["datapath.bypass_clients"])
    );
    assert_eq!(
        report["config"]["restart_required"],
        serde_json::json!(["sip.listen_port"])
    );
    let status = cli(&lab, &daemon, &["service", "status", "--json"]).ok();
    assert_eq!(
        status["restart_required"],
        serde_json::json!(["sip.listen_port"])
    );
    // The kernel map changed in place: CLIENT2's request now bypasses the daemon.
    lab.client.run_ok(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--interface",
        addr::CLIENT2,
        "-o",
        "/dev/null",
        &format!("http://{}/quick", addr::ORIGIN),
    ]);
    let stats = cli(&lab, &daemon, &["stats", "--json"]).ok();
    let http = stats["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "http")
        .unwrap()
        .clone();
    assert!(
        http["kernel"]["bypassed_client"].as_u64().unwrap_or(0) >= 1,
        "{http}"
    );

    // The download in flight all along arrives whole.
    let status = download
        .wait_timeout(Duration::from_secs(120))
        .expect("download did not finish");
    assert!(status.success(), "curl failed: {}", download.stderr());
    assert_eq!(sha256(&got), want, "the flow was disturbed by the reloads");
    let held =
        |l: &Value| l["message"] == "flow" && l["bytes_down"].as_u64().unwrap_or(0) > 1_000_000;
    daemon.wait_for_log(WAIT, held);
    // It ended after the last reload: the daemon held it through all of them.
    let logs = daemon.logs();
    let flow_at = logs.iter().position(held).unwrap();
    let last_reload = logs
        .iter()
        .rposition(|l| l["message"] == "reload done")
        .unwrap();
    assert!(
        flow_at > last_reload,
        "the held flow ended before the reloads were over: {}\n{}",
        logs[flow_at],
        logs[last_reload]
    );
    assert!(
        logs[flow_at]["bytes_down"].as_u64().unwrap() > 1_000_000,
        "{}",
        logs[flow_at]
    );
}

/// An HTTP origin on port 80 that sends a file (argv[1]) in 40 slices, 150 ms apart, for
/// `/slow`, and the file at once for anything else.
const SLOW_ORIGIN: &str = r#"
import socket, sys, time
data = open(sys.argv[1], 'rb').read()
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('0.0.0.0', 80))
srv.listen(8)
while True:
    conn, _ = srv.accept()
    req = b''
    while b'\r\n\r\n' not in req:
        chunk = conn.recv(4096)
        if not chunk:
            break
        req += chunk
    if not req:
        conn.close()
        continue
    head = b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n' % len(data)
    conn.sendall(head)
    if not req.startswith(b'GET /slow '):
        conn.sendall(data)
        conn.close()
        continue
    step = len(data) // 40 + 1
    for i in range(0, len(data), step):
        conn.sendall(data[i:i + step])
        time.sleep(0.15)
    conn.close()
"#;

#[test]
fn log_level_changes_on_reload_without_a_restart() {
    require_tools(&["curl", "python3"]);
    let lab = Lab::new();
    let www = tempfile::tempdir().unwrap();
    random_file(&www.path().join("a.bin"), 1000);
    let _origin = http_server(&lab.origin, www.path(), 80);
    // An empty RUST_LOG leaves the level to the file (a set one would override it).
    let daemon = Daemon::start_env(&lab, "[log]\nlevel = \"info\"\n", &[("RUST_LOG", "")]);
    let config_path = daemon.dir().join("velocache.toml");
    let config_text = daemon.config.clone();
    let fetch = || {
        lab.client.run_ok(&[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            &format!("http://{}/a.bin", addr::ORIGIN),
        ]);
    };
    let flow_lines = || {
        daemon
            .logs()
            .iter()
            .filter(|l| l["message"] == "flow" && l["service"] == "http")
            .count()
    };
    let set_level = |level: &str| {
        write(
            &config_path,
            &config_text.replace("level = \"info\"", &format!("level = \"{level}\"")),
        );
        let report = cli(&lab, &daemon, &["service", "reload", "--json"]).ok();
        assert_eq!(
            report["config"]["applied"],
            serde_json::json!(["log.level"]),
            "{report}"
        );
    };
    // Flows the daemon has finished (their log line, if any, is written by then).
    let finished = |n: u64| {
        for _ in 0..400 {
            let stats = cli(&lab, &daemon, &["stats", "--json"]).ok();
            let http = &stats["services"][0];
            if http["flows"] == n && http["active_sessions"] == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("flow {n} did not finish");
    };

    fetch();
    daemon.wait_for_log(WAIT, |l| l["message"] == "flow" && l["service"] == "http");
    set_level("warn");
    fetch();
    finished(2);
    assert_eq!(
        flow_lines(),
        1,
        "at `warn` the info-level flow line is not written"
    );
    set_level("info");
    fetch();
    finished(3);
    daemon.wait_for_log(WAIT, |_| flow_lines() == 2);
}
