//! Origins that fail, in the lab: the scripted origin (`tests/scripts/origin.py`) in `origin`
//! is killed and restarted, made slow and made to answer 5xx while `curl` in `client` asks
//! through the gateway. The breaker opens and closes (seen in `velocache origins` and
//! `/metrics`), stored responses answer stale within the grace, ghost mode answers from what it
//! learned (and from the nearest learned request), a request nothing is known for gets a fast
//! 503, and must-revalidate content gets the error.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::{Value, json};
use velocache_tests::{Background, Daemon, Lab, addr, require_tools, servers::wait_tcp};

/// The scripted origin on port 80, which a test can kill and start again on the same files.
struct Origin {
    dir: tempfile::TempDir,
    server: Option<Background>,
}

impl Origin {
    fn start(lab: &Lab) -> Origin {
        let mut o = Origin {
            dir: tempfile::tempdir().unwrap(),
            server: None,
        };
        o.restart(lab);
        o
    }

    fn restart(&mut self, lab: &Lab) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/origin.py");
        self.server = Some(lab.origin.spawn(&[
            "python3",
            &script.display().to_string(),
            &self.dir.path().display().to_string(),
            "80",
        ]));
        wait_tcp(&lab.origin, "127.0.0.1", 80);
    }

    fn kill(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.kill();
        }
    }

    /// `/name` with `body` and the route `route` (headers, status, delay).
    fn file(&self, name: &str, body: &str, route: Value) {
        let path = self.dir.path().join(name.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, body).unwrap();
        let routes = self.dir.path().join(".routes.json");
        let mut all: Value = std::fs::read_to_string(&routes)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_else(|| json!({}));
        all[name] = route;
        std::fs::write(&routes, all.to_string()).unwrap();
    }
}

/// A response as `curl -i` printed it.
struct Got {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

fn get_from(lab: &Lab, host: &str, path: &str) -> Got {
    let out = lab.client.run_ok(&[
        "curl",
        "-sS",
        "-i",
        "--max-time",
        "20",
        &format!("http://{host}{path}"),
    ]);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {out}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Got {
        status,
        headers,
        body: body.to_string(),
    }
}

fn get(lab: &Lab, path: &str) -> Got {
    get_from(lab, addr::ORIGIN, path)
}

fn cli(lab: &Lab, daemon: &Daemon, args: &[&str]) -> String {
    let out = daemon.cli(lab, args);
    assert!(
        out.status.success(),
        "velocache {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `velocache origins --json`'s entry for `origin` (`Null` when not tracked).
fn origin_view(lab: &Lab, daemon: &Daemon, origin: &str) -> Value {
    let report: Value = serde_json::from_str(&cli(lab, daemon, &["origins", "--json"])).unwrap();
    report["origins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["origin"] == origin)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Poll `velocache origins` until `pred` holds for `origin` (at most `limit`).
fn wait_origin(
    lab: &Lab,
    daemon: &Daemon,
    origin: &str,
    limit: Duration,
    mut between: impl FnMut(),
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let start = std::time::Instant::now();
    loop {
        let v = origin_view(lab, daemon, origin);
        if pred(&v) {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "{origin} never reached the expected state: {v}\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
        between();
    }
}

fn rules_file(dir: &Path, text: &str) -> String {
    let f = dir.join("rules.toml");
    std::fs::write(&f, text).unwrap();
    format!("[rules]\nfile = \"{}\"\n", f.display())
}

fn transitions(daemon: &Daemon) -> Vec<String> {
    daemon
        .logs()
        .into_iter()
        .filter(|l| l["message"] == "breaker state changed")
        .map(|l| l["to"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[test]
fn a_killed_origin_opens_the_breaker_is_answered_stale_ghost_or_503_and_closes_when_back() {
    require_tools(&["curl", "python3"]);
    let lab = Lab::new();
    let mut origin = Origin::start(&lab);
    origin.file(
        "/a.txt",
        "stored a\n",
        json!({"headers": {"Cache-Control": "max-age=0"}}),
    );
    origin.file(
        "/mr.txt",
        "must revalidate\n",
        json!({"headers": {"Cache-Control": "max-age=0, must-revalidate"}}),
    );
    origin.file(
        "/api/users/1",
        "{\"user\":1}\n",
        json!({"headers": {"Cache-Control": "no-store"}}),
    );
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = rules_file(
        rules_dir.path(),
        &format!(
            "[[rule]]\nname = \"api\"\nmatch_host = \"{}\"\nmatch_path = \"/api/*\"\naction = \"cache\"\nghost = true\n",
            addr::ORIGIN
        ),
    );
    let daemon = Daemon::start(
        &lab,
        &format!(
            "{rules}\n[origins]\nconsecutive_failures = 3\nopen_ms = 2000\nhalf_open_probes = 1\n"
        ),
    );
    for p in ["/a.txt", "/mr.txt", "/api/users/1"] {
        assert_eq!(get(&lab, p).status, 200, "{p}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let origin_addr = format!("{}:80", addr::ORIGIN);
    assert_eq!(origin_view(&lab, &daemon, &origin_addr)["state"], "closed");

    origin.kill();
    // Three refused connections, each answered as well as what is known allows.
    let a = get(&lab, "/a.txt");
    assert_eq!((a.status, a.body.as_str()), (200, "stored a\n"));
    assert_eq!(
        a.headers["x-cache-status"], "stale",
        "within the default grace"
    );
    let mr = get(&lab, "/mr.txt");
    assert_eq!(
        mr.status, 502,
        "must-revalidate content gets the error: {}",
        mr.body
    );
    let ghost = get(&lab, "/api/users/1");
    assert_eq!((ghost.status, ghost.body.as_str()), (200, "{\"user\":1}\n"));
    assert_eq!(ghost.headers["x-cache-status"], "ghost");
    assert!(ghost.headers.contains_key("age"));

    let v = origin_view(&lab, &daemon, &origin_addr);
    assert_eq!(v["state"], "open", "{v}");
    assert_eq!(v["last_failure"], "connection refused", "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("3 consecutive failures"),
        "{v}"
    );
    let table = cli(&lab, &daemon, &["origins"]);
    assert!(
        table.contains(&origin_addr) && table.contains("open"),
        "{table}"
    );
    let metrics = cli(&lab, &daemon, &["metrics"]);
    let state = format!(
        "velocache_origins_state{{origin=\"{origin_addr}\",host=\"{}\"}} 2",
        addr::ORIGIN
    );
    assert!(metrics.contains(&state), "{state} missing:\n{metrics}");
    assert!(metrics.contains("velocache_origins_breaker_transitions_total{to=\"open\"} 1"));

    // While open: nothing reaches the origin.
    let nearest = get(&lab, "/api/users/77");
    assert_eq!(
        (nearest.status, nearest.body.as_str()),
        (200, "{\"user\":1}\n")
    );
    assert_eq!(nearest.headers["x-cache-status"], "ghost-nearest");
    assert_eq!(
        nearest.headers["x-ghost-source"],
        format!("http://{}/api/users/1", addr::ORIGIN)
    );
    let unknown = get(&lab, "/nothing.txt");
    assert_eq!(unknown.status, 503, "{}", unknown.body);
    assert!(unknown.body.contains(&origin_addr), "{}", unknown.body);
    assert!(
        unknown.body.contains("consecutive failures"),
        "{}",
        unknown.body
    );
    assert!(unknown.headers.contains_key("retry-after"));
    assert_eq!(get(&lab, "/mr.txt").status, 503);
    assert_eq!(get(&lab, "/a.txt").headers["x-cache-status"], "stale");
    let metrics = cli(&lab, &daemon, &["metrics"]);
    assert!(
        metrics.contains("velocache_origins_ghost_answers_total{kind=\"ghost-nearest\"} 1"),
        "{metrics}"
    );

    // Back: after the cool-down a probe goes through and closes the breaker.
    origin.restart(&lab);
    wait_origin(
        &lab,
        &daemon,
        &origin_addr,
        Duration::from_secs(30),
        || {
            get(&lab, "/a.txt");
        },
        |v| v["state"] == "closed",
    );
    assert_eq!(transitions(&daemon), ["open", "half_open", "closed"]);
    let fresh = get(&lab, "/nothing-yet.txt");
    assert_eq!(fresh.status, 404, "the origin's own answer again");
}

#[test]
fn a_slow_origin_and_one_answering_5xx_open_their_own_breakers() {
    require_tools(&["curl", "python3"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    origin.file("/slow.txt", "slow\n", json!({"delay": 3}));
    origin.file("/err.txt", "err\n", json!({"status": 503}));
    let daemon = Daemon::start(
        &lab,
        "[http]\nresponse_timeout_ms = 500\n[origins]\nconsecutive_failures = 2\nopen_ms = 60000\n",
    );
    for _ in 0..2 {
        assert_eq!(get(&lab, "/slow.txt").status, 504);
    }
    let slow = origin_view(&lab, &daemon, &format!("{}:80", addr::ORIGIN));
    assert_eq!(
        (slow["state"].as_str(), slow["last_failure"].as_str()),
        (Some("open"), Some("timed out"))
    );
    let r = get(&lab, "/slow.txt");
    assert_eq!(r.status, 503);
    assert!(r.body.contains("timed out"), "{}", r.body);

    // The second address of the origin namespace has a breaker of its own, still closed.
    for _ in 0..2 {
        let r = get_from(&lab, addr::ORIGIN2, "/err.txt");
        assert_eq!(
            (r.status, r.body.as_str()),
            (503, "err\n"),
            "the origin's own 503"
        );
    }
    let r = get_from(&lab, addr::ORIGIN2, "/err.txt");
    assert_eq!(r.status, 503);
    assert!(
        r.body.starts_with("VeloCache: origin 10.77.2.3:80"),
        "{}",
        r.body
    );
    assert!(r.body.contains("answered 503"), "{}", r.body);
    let err = origin_view(&lab, &daemon, &format!("{}:80", addr::ORIGIN2));
    assert_eq!(err["state"], "open");
    assert_eq!(err["error_ratio"], 1.0);
}

#[test]
fn active_health_checks_see_an_origin_die_and_come_back_without_any_client() {
    require_tools(&["curl", "python3"]);
    let lab = Lab::new();
    let mut origin = Origin::start(&lab);
    origin.file("/healthz", "ok\n", json!({}));
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = rules_file(
        rules_dir.path(),
        &format!(
            "[[rule]]\nname = \"checked\"\nmatch_host = \"{}\"\naction = \"cache\"\nhealth_check = {{ path = \"/healthz\", interval = \"200ms\" }}\n",
            addr::ORIGIN
        ),
    );
    let daemon = Daemon::start(
        &lab,
        &format!(
            "{rules}\n[origins]\nconsecutive_failures = 3\nopen_ms = 1000\nhalf_open_probes = 2\n"
        ),
    );
    let origin_addr = format!("{}:80", addr::ORIGIN);
    let limit = Duration::from_secs(30);
    let up = wait_origin(
        &lab,
        &daemon,
        &origin_addr,
        limit,
        || {},
        |v| v["health_check"]["up"] == true,
    );
    assert_eq!(up["health_check"]["path"], "/healthz");
    assert_eq!(up["health_check"]["rule"], "checked");
    let metrics = cli(&lab, &daemon, &["metrics"]);
    assert!(
        metrics.contains(&format!(
            "velocache_origins_health_check_up{{origin=\"{origin_addr}\",host=\"\"}} 1"
        )),
        "{metrics}"
    );

    origin.kill();
    let down = wait_origin(
        &lab,
        &daemon,
        &origin_addr,
        limit,
        || {},
        |v| v["state"] == "open",
    );
    assert_eq!(down["health_check"]["up"], false, "{down}");
    assert!(
        down["failures"].as_u64().unwrap() >= 3,
        "the checks' failures: {down}"
    );

    origin.restart(&lab);
    wait_origin(
        &lab,
        &daemon,
        &origin_addr,
        limit,
        || {},
        |v| v["state"] == "closed" && v["health_check"]["up"] == true,
    );
    assert_eq!(transitions(&daemon), ["open", "half_open", "closed"]);
}
