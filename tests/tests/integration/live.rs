//! The dashboard's listener in the lab, as a browser would use it but with `curl`: log in,
//! drive real traffic from `client` (`curl`, `dig`), and read it back from the live feed, the
//! inspector and the charts; a read-only login cannot change anything.
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use velocache_tests::{Daemon, Lab, Ns, addr, dns::unbound_zone, require_tools};

use crate::http::{Origin, fetch_sha, wait_requests};

const WEB: &str = "127.0.0.1:9182";
pub(crate) const ADMIN: &str = "lab-admin-token-0123456789";
const READONLY: &str = "lab-readonly-token-0123456789";

/// A logged-in `curl` in the gateway's namespace (where the dashboard listens).
pub(crate) struct Browser {
    ns: Ns,
    jar: String,
    csrf: String,
    _dir: tempfile::TempDir,
}

impl Browser {
    pub(crate) fn login(lab: &Lab, token: &str) -> Browser {
        let dir = tempfile::tempdir().unwrap();
        let jar = dir.path().join("jar").display().to_string();
        let out = lab.gw.run_ok(&[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-c",
            &jar,
            "-H",
            "Content-Type: application/json",
            "-d",
            &json!({ "token": token }).to_string(),
            &format!("http://{WEB}/web/login"),
        ]);
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        let jar_text = std::fs::read_to_string(&jar).unwrap();
        assert!(
            jar_text.contains("#HttpOnly_"),
            "the session cookie must be HttpOnly:\n{jar_text}"
        );
        Browser {
            ns: lab.gw.clone(),
            jar,
            csrf: v["csrf"].as_str().unwrap_or_default().to_string(),
            _dir: dir,
        }
    }

    /// `(status, body)` of a request with the session (and its CSRF token).
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("http://{WEB}{path}");
        let csrf = format!("X-CSRF-Token: {}", self.csrf);
        let body = body.map(|b| b.to_string());
        let mut args = vec![
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-b",
            &self.jar,
            "-X",
            method,
            "-H",
            &csrf,
            "-w",
            "\n%{http_code}",
        ];
        if let Some(b) = &body {
            args.extend(["-H", "Content-Type: application/json", "-d", b]);
        }
        args.push(&url);
        let out = self.ns.run_ok(&args);
        let (text, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
        let v = serde_json::from_str(text).unwrap_or(Value::String(text.to_string()));
        (code.trim().parse().unwrap_or(0), v)
    }

    fn get(&self, path: &str) -> Value {
        let (code, v) = self.call("GET", path, None);
        assert_eq!(code, 200, "GET {path}: {v}");
        v
    }

    /// Wait until the history holds a record `pred` accepts.
    pub(crate) fn wait_record(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let h = self.get("/v1/live/history");
            if let Some(r) = h["records"]
                .as_array()
                .and_then(|r| r.iter().find(|r| pred(r)))
            {
                return r.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no such record in the live history:\n{h:#}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

pub(crate) fn web_config(dir: &std::path::Path, extra: &str) -> String {
    let admin = dir.join("admin.token");
    let readonly = dir.join("readonly.token");
    std::fs::write(&admin, ADMIN).unwrap();
    std::fs::write(&readonly, READONLY).unwrap();
    format!(
        "[admin]\nweb_listen = \"{WEB}\"\ntoken_file = \"{}\"\nreadonly_token_file = \"{}\"\n{extra}",
        admin.display(),
        readonly.display()
    )
}

#[test]
fn live_feed_shows_requests_and_queries_and_the_inspector_explains_a_hit() {
    require_tools(&["curl", "python3", "sha256sum", "dig", "unbound"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    let want = origin.file("live.bin", 20_000);
    origin.route(
        "/live.bin",
        json!({"headers": {"Cache-Control": "max-age=600", "X-Origin-Says": "hello"}}),
    );
    let zone_dir = tempfile::tempdir().unwrap();
    let _zone = unbound_zone(
        &lab.origin,
        zone_dir.path(),
        &[addr::ORIGIN, addr::ORIGIN6],
        "",
    );
    let tokens = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &lab,
        &web_config(
            tokens.path(),
            &format!("[dns]\nupstreams = [\"{}:53\"]\n", addr::ORIGIN),
        ),
    );
    let browser = Browser::login(&lab, ADMIN);

    assert_eq!(fetch_sha(&lab, "/live.bin"), want);
    assert_eq!(fetch_sha(&lab, "/live.bin"), want);
    wait_requests(&daemon, "/live.bin", 2);
    for _ in 0..3 {
        let _ = lab.client.run_ok(&[
            "dig",
            "+short",
            &format!("@{}", addr::ORIGIN),
            "www.test.lab",
        ]);
    }

    let miss = browser.wait_record(|r| r["what"] == "GET /live.bin" && r["cache"] == "miss");
    let hit = browser.wait_record(|r| r["what"] == "GET /live.bin" && r["cache"] == "hit");
    assert_eq!(hit["service"], "http");
    assert_eq!(hit["host"], addr::ORIGIN);
    assert_eq!(hit["status"], "200");
    assert_eq!(hit["bytes"], 20_000);
    assert!(
        hit["client"]
            .as_str()
            .unwrap_or("")
            .starts_with(addr::CLIENT),
        "{hit}"
    );

    // The inspector: the hit's reason, and the miss's heads on both sides.
    let id = hit["id"].as_str().unwrap_or_default();
    let ex = browser.get(&format!("/v1/live/inspect?id={id}"));
    assert_eq!(ex["cache"]["status"], "hit");
    let why = ex["cache"]["explanation"].as_str().unwrap_or("");
    assert!(why.starts_with("Fresh in the cache"), "{ex:#}");
    assert_eq!(ex["cache"]["freshness_lifetime_secs"], 600);
    assert!(
        ex["cache"]["key"]
            .as_str()
            .unwrap_or("")
            .contains("/live.bin"),
        "{ex:#}"
    );
    assert_eq!(ex["timing"]["bytes_from_cache"], 20_000);
    assert!(
        ex["client_side"]["request_line"]
            .as_str()
            .unwrap_or("")
            .starts_with("GET ")
    );
    let id = miss["id"].as_str().unwrap_or_default();
    let ex = browser.get(&format!("/v1/live/inspect?id={id}"));
    assert!(
        ex["origin_side"]["status_line"]
            .as_str()
            .unwrap_or("")
            .contains("200"),
        "{ex:#}"
    );
    let origin_headers = ex["origin_side"]["response_headers"].to_string();
    assert!(origin_headers.contains("x-origin-says"), "{ex:#}");
    let sent = ex["origin_side"]["request_headers"].to_string();
    assert!(
        sent.contains("\"via\""),
        "the request sent upstream carries Via: {ex:#}"
    );
    assert!(ex["timing"]["origin_ttfb_ms"].as_f64().is_some(), "{ex:#}");
    assert_eq!(ex["timing"]["bytes_from_origin"], 20_000);
    // The same through the CLI (the same admin API, over the root-only socket).
    let cli = daemon.cli(&lab, &["live", "--limit", "100"]);
    let text = String::from_utf8_lossy(&cli.stdout);
    assert!(
        cli.status.success() && text.contains("GET /live.bin hit 20000B"),
        "{text}"
    );
    let id = hit["id"].as_str().unwrap_or_default();
    let cli = daemon.cli(&lab, &["inspect", id]);
    let text = String::from_utf8_lossy(&cli.stdout);
    assert!(text.contains("cache: hit — Fresh in the cache"), "{text}");
    let (code, gone) = browser.call("GET", "/v1/live/inspect?id=nope", None);
    assert_eq!(code, 404, "{gone}");

    // DNS: the miss as its own record, the hits summed.
    let q = browser.wait_record(|r| {
        r["service"] == "dns" && r["host"] == "www.test.lab." && r["cache"] == "miss"
    });
    assert_eq!(q["status"], "NOERROR");
    let hits = browser.wait_record(|r| {
        r["service"] == "dns" && r["host"] == "www.test.lab." && r["cache"] == "hit"
    });
    assert!(hits["count"].as_u64().unwrap_or(0) >= 1, "{hits}");
    // The DNS inspector: what the cache holds for the name, as the page and the CLI show it.
    let shown = browser.get("/v1/dns/show?name=www.test.lab&type=A");
    let entry = &shown["entries"][0];
    assert_eq!(entry["rcode"], "NOERROR", "{shown:#}");
    assert!(entry["hits"].as_u64().unwrap_or(0) >= 1, "{shown:#}");
    assert!(
        entry["records"][0]
            .as_str()
            .unwrap_or("")
            .contains("10.9.9.9"),
        "{shown:#}"
    );
    let cli = daemon.cli(&lab, &["dns", "show", "www.test.lab", "A"]);
    let text = String::from_utf8_lossy(&cli.stdout);
    assert!(
        cli.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(
        text.contains("NOERROR (positive)") && text.contains("IN A 10.9.9.9"),
        "{text}"
    );

    // The charts close a point every 5 s.
    let deadline = Instant::now() + Duration::from_secs(15);
    let charts = loop {
        let a = browser.get("/v1/analytics");
        let requests: u64 = a["points"]
            .as_array()
            .map(|p| p.iter().filter_map(|p| p["requests"].as_u64()).sum())
            .unwrap_or(0);
        if requests >= 2 {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "no analytics point counts the requests:\n{a:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        charts["hit_ratio"].as_f64().unwrap_or(0.0) > 0.0,
        "{charts:#}"
    );
    assert!(
        charts["bytes_saved"].as_u64().unwrap_or(0) >= 20_000,
        "{charts:#}"
    );
    assert_eq!(charts["top_hosts"][0][0], addr::ORIGIN, "{charts:#}");
    drop(daemon);
}

#[test]
fn a_read_only_login_cannot_change_rules_purge_or_reload() {
    require_tools(&["curl"]);
    let lab = Lab::new();
    let tokens = tempfile::tempdir().unwrap();
    let _daemon = Daemon::start(&lab, &web_config(tokens.path(), ""));
    let ro = Browser::login(&lab, READONLY);
    assert_eq!(ro.get("/web/session")["role"], "readonly");
    assert_eq!(ro.get("/v1/status")["state"], "running");
    for (method, path, body) in [
        ("POST", "/v1/rules/reload", None),
        ("POST", "/v1/reload", None),
        ("POST", "/v1/cache/purge", Some(json!({"pattern": "*"}))),
    ] {
        let (code, v) = ro.call(method, path, body);
        assert_eq!(code, 403, "{method} {path}: {v}");
        assert_eq!(v["kind"], "forbidden", "{v}");
    }
    // Without the CSRF token even the admin's change is refused.
    let admin = Browser::login(&lab, ADMIN);
    let no_csrf = Browser {
        ns: lab.gw.clone(),
        jar: admin.jar.clone(),
        csrf: String::new(),
        _dir: tempfile::tempdir().unwrap(),
    };
    assert_eq!(no_csrf.call("POST", "/v1/rules/reload", None).0, 403);
    assert_eq!(admin.call("POST", "/v1/rules/reload", None).0, 200);
    // A wrong token gets no session.
    let out = lab.gw.run_ok(&[
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "10",
        "-d",
        "{\"token\":\"wrong-token-000000000000\"}",
        &format!("http://{WEB}/web/login"),
    ]);
    assert_eq!(out.trim(), "401");
}
