//! `velocache cache …` and warm-up against a daemon in the lab, checked where it matters: at
//! the origin (Python's access log counts the requests it got) and at the client
//! (`X-Cache-Status`, the body's digest). Clients and the gateway know the origin by name
//! (`mirror.lab`, from each namespace's own `/etc/hosts`), so the cache keys, the listings and
//! the warm-up's name resolution are what a real network gives.
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;
use velocache_tests::{Background, Daemon, Lab, addr, require_tools};

use super::{WAIT, cli, fails, write};
use crate::util::{http_server, random_file, sha256};

const HOST: &str = "mirror.lab";
const A: &str = "/pool/a.deb";
const B: &str = "/pool/b.deb";
const INDEX: &str = "/index.html";

/// An origin with three files, published two days ago (so the heuristic keeps them fresh for
/// hours), and a daemon in front of it.
struct Mirror {
    lab: Lab,
    origin: Background,
    www: TempDir,
    daemon: Daemon,
    _files: TempDir,
}

impl Mirror {
    fn start(rules: Option<&str>) -> Mirror {
        require_tools(&["curl", "python3"]);
        let lab = Lab::new();
        lab.client.set_hosts(&[(HOST, addr::ORIGIN)]);
        lab.gw.set_hosts(&[(HOST, addr::ORIGIN)]);
        let www = tempfile::tempdir().unwrap();
        std::fs::create_dir(www.path().join("pool")).unwrap();
        for (path, len) in [(A, 300_000), (B, 5_000), (INDEX, 100)] {
            let file = www.path().join(&path[1..]);
            random_file(&file, len);
            std::fs::File::options()
                .write(true)
                .open(&file)
                .unwrap()
                .set_modified(std::time::SystemTime::now() - Duration::from_secs(2 * 86_400))
                .unwrap();
        }
        let origin = http_server(&lab.origin, www.path(), 80);
        let files = tempfile::tempdir().unwrap();
        let extra = match rules {
            Some(text) => format!(
                "[rules]\nfile = \"{}\"\n",
                write(&files.path().join("rules.toml"), text).display()
            ),
            None => String::new(),
        };
        let daemon = Daemon::start(&lab, &extra);
        Mirror {
            lab,
            origin,
            www,
            daemon,
            _files: files,
        }
    }

    fn cli(&self, args: &[&str]) -> super::Cli {
        cli(&self.lab, &self.daemon, args)
    }

    /// Requests for `path` the origin has answered.
    fn origin_requests(&self, path: &str) -> usize {
        self.origin
            .stderr()
            .matches(&format!("\"GET {path} HTTP/1.1\""))
            .count()
    }

    /// Wait until the origin has answered `n` requests for `path` (it logs once the body is
    /// sent), then check it stays at `n`.
    fn expect_origin_requests(&self, path: &str, n: usize) {
        let started = std::time::Instant::now();
        while self.origin_requests(path) < n && started.elapsed() < WAIT {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            self.origin_requests(path),
            n,
            "origin requests for {path}:\n{}",
            self.origin.stderr()
        );
    }

    /// A client's GET of `http://mirror.lab<path>`: its `X-Cache-Status`, after checking the
    /// body is the origin's file.
    fn get(&self, path: &str) -> String {
        let out = self.www.path().join("got");
        let head = self.lab.client.run_ok(&[
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "20",
            "-o",
            &out.display().to_string(),
            "-D",
            "-",
            &format!("http://{HOST}{path}"),
        ]);
        assert_eq!(sha256(&out), sha256(&self.www.path().join(&path[1..])));
        head.lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("x-cache-status:")
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_default()
    }
}

fn url(path: &str) -> String {
    format!("http://{HOST}{path}")
}

fn entry<'a>(listing: &'a Value, path: &str) -> &'a Value {
    listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == url(path).as_str())
        .unwrap_or_else(|| panic!("{path} not listed: {listing}"))
}

#[test]
fn cache_ls_shows_what_clients_fetched_and_purge_sends_the_next_request_to_the_origin() {
    let m = Mirror::start(None);
    for path in [A, B, INDEX] {
        assert_eq!(m.get(path), "miss", "{path}");
    }
    assert_eq!(m.get(A), "hit");
    assert_eq!(m.get(A), "hit");
    m.expect_origin_requests(A, 1);

    let listing = m.cli(&["cache", "ls", "--json"]).ok();
    assert_eq!(listing["total"], 3, "{listing}");
    let a = entry(&listing, A);
    assert_eq!(a["status"], 200, "{a}");
    assert_eq!(a["size_bytes"], 300_000, "{a}");
    assert_eq!(a["hits"], 2, "{a}");
    assert_eq!(entry(&listing, B)["hits"], 0, "{listing}");
    assert_eq!(
        a["key"],
        format!("url:{HOST}@{}{A}", addr::ORIGIN),
        "keyed by name and original destination: {a}"
    );
    assert_eq!(a["details"]["complete"], "true", "{a}");
    let stored = a["stored_at"].as_u64().unwrap();
    assert!(a["fresh_until"].as_u64().unwrap() > stored, "{a}");
    let pool = m
        .cli(&["cache", "ls", &format!("http://{HOST}/pool/*"), "--json"])
        .ok();
    assert_eq!(pool["total"], 2, "{pool}");
    let shown = m.cli(&["cache", "show", &url(A), "--json"]).ok();
    assert_eq!(shown["size_bytes"], 300_000, "{shown}");
    assert_eq!(shown["hits"], 2, "{shown}");
    let human = m.cli(&["cache", "ls"]);
    assert_eq!(human.code, 0, "{}", human.stderr);
    assert!(
        human.stdout.starts_with("STATUS  SIZE       HITS  FRESH"),
        "{}",
        human.stdout
    );
    assert!(human.stdout.contains(&url(A)), "{}", human.stdout);
    assert!(
        human.stdout.ends_with("3 of 3 objects\n"),
        "{}",
        human.stdout
    );

    // One URL: gone from the listing, and the next client's request goes to the origin.
    let purged = m.cli(&["cache", "purge", &url(A), "--json"]).ok();
    assert_eq!(purged["purged"], 1, "{purged}");
    assert_eq!(purged["bytes"], 300_000, "{purged}");
    fails(
        &m.lab,
        &m.daemon,
        &["cache", "show", &url(A), "--json"],
        4,
        "not_found",
    );
    assert_eq!(m.get(A), "miss");
    m.expect_origin_requests(A, 2);
    assert_eq!(m.get(A), "hit");
    m.expect_origin_requests(A, 2);

    // A glob, given with the other scheme (keys have none): both packages, not the index.
    let purged = m
        .cli(&[
            "cache",
            "purge",
            &format!("https://{HOST}/pool/*.deb"),
            "--json",
        ])
        .ok();
    assert_eq!(purged["purged"], 2, "{purged}");
    assert_eq!(purged["bytes"], 305_000, "{purged}");
    assert_eq!(m.get(B), "miss");
    m.expect_origin_requests(B, 2);
    assert_eq!(m.get(INDEX), "hit");
    m.expect_origin_requests(INDEX, 1);

    // Everything, RAM tier included: the small index was served from memory.
    let purged = m.cli(&["cache", "purge", "*", "--json"]).ok();
    assert_eq!(purged["purged"], 2, "{purged}");
    let listing = m.cli(&["cache", "ls", "--json"]).ok();
    assert_eq!(listing["total"], 0, "{listing}");
    assert_eq!(m.get(INDEX), "miss");
    m.expect_origin_requests(INDEX, 2);
    m.daemon.wait_for_log(WAIT, |l| {
        l["message"] == "cache purged" && l["pattern"] == "*" && l["purged"] == 2
    });
}

#[test]
fn warm_up_fills_the_cache_before_any_client_asks() {
    let m = Mirror::start(Some(&format!("warmup_urls = [\"{}\"]\n", url(A))));
    // At start, through the gateway's resolver: the origin sees the request, no client asked.
    m.daemon.wait_for_log(WAIT, |l| {
        l["message"] == "cache warm-up finished" && l["ok"] == 1 && l["failed"] == 0
    });
    m.expect_origin_requests(A, 1);
    let progress = m.cli(&["stats", "--json"]).ok();
    assert_eq!(progress["warmup"]["state"], "done", "{progress}");
    assert_eq!(progress["warmup"]["bytes"], 300_000, "{progress}");
    // The first client gets a hit, and the origin sees nothing more.
    assert_eq!(m.get(A), "hit");
    m.daemon.wait_for_log(WAIT, |l| {
        l["message"] == "request"
            && l["path"] == A
            && l["cache"] == "hit"
            && l["client"]
                .as_str()
                .is_some_and(|c| c.starts_with(addr::CLIENT))
    });
    m.expect_origin_requests(A, 1);

    // On demand: the same, and the answer says what happened.
    let warm = m.cli(&["cache", "warm", &url(B), "--json"]).ok();
    let r = &warm["results"][0];
    assert_eq!(
        (&r["ok"], &r["outcome"], &r["status"], &r["bytes"]),
        (
            &Value::Bool(true),
            &Value::from("stored"),
            &Value::from(200),
            &Value::from(5_000)
        ),
        "{warm}"
    );
    m.expect_origin_requests(B, 1);
    assert_eq!(m.get(B), "hit");
    m.expect_origin_requests(B, 1);
    // Warming what is fresh costs the origin nothing; no URLs: the rules' warmup_urls.
    let again = m.cli(&["cache", "warm", &url(B), "--json"]).ok();
    assert_eq!(again["results"][0]["outcome"], "fresh", "{again}");
    let rules = m.cli(&["cache", "warm", "--json"]).ok();
    assert_eq!(rules["results"][0]["url"], url(A).as_str(), "{rules}");
    assert_eq!(rules["results"][0]["outcome"], "fresh", "{rules}");
    m.expect_origin_requests(B, 1);
    m.expect_origin_requests(A, 1);
    let listing = m.cli(&["cache", "ls", "--json"]).ok();
    assert_eq!(listing["total"], 2, "{listing}");

    // Failures say whose they are: the origin's 404, the gateway's failed connection.
    let refused = format!("http://{}:81/x", addr::ORIGIN);
    let failed = m.cli(&["cache", "warm", &url("/missing.bin"), &refused, "--json"]);
    assert_eq!(failed.code, 1, "{}", failed.stdout);
    let failed = failed.json();
    let result = |u: &str| {
        failed["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["url"] == u)
            .unwrap()
            .clone()
    };
    let missing = result(&url("/missing.bin"));
    assert_eq!(missing["ok"], false, "{failed}");
    assert_eq!(missing["error"], "the origin answered 404", "{failed}");
    let gateway = result(&refused);
    assert_eq!(gateway["status"], 502, "{failed}");
    let error = gateway["error"].as_str().unwrap();
    assert!(
        error.starts_with("the gateway answered 502: origin 10.77.2.2:81")
            && error.contains("refused"),
        "{failed}"
    );
    let progress = m.cli(&["stats", "--json"]).ok();
    assert_eq!(progress["warmup"]["failed"], 2, "{progress}");
}
