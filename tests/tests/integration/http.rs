//! The HTTP cache in the lab: `curl` in `client`, a scripted origin (`tests/scripts/origin.py`)
//! in `origin` whose headers each test sets and which counts the requests it gets.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use velocache_tests::{
    Background, Daemon, Lab, Ns, addr, require_tools,
    servers::{self, wait_tcp},
};

use crate::util::sha256;

pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// The scripted origin on port 80 of `origin`.
pub(crate) struct Origin {
    dir: tempfile::TempDir,
    ns: Ns,
    _server: Background,
}

impl Origin {
    pub(crate) fn start(lab: &Lab) -> Origin {
        let dir = tempfile::tempdir().unwrap();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/origin.py");
        let server = lab.origin.spawn(&[
            "python3",
            &script.display().to_string(),
            &dir.path().display().to_string(),
            "80",
        ]);
        wait_tcp(&lab.origin, "127.0.0.1", 80);
        Origin {
            dir,
            ns: lab.origin.clone(),
            _server: server,
        }
    }

    /// Create `/name` with `len` deterministic pseudo-random bytes; returns its SHA-256.
    pub(crate) fn file(&self, name: &str, len: u64) -> String {
        write_blob(&self.dir.path().join(name), len, name.len() as u64);
        sha256(&self.dir.path().join(name))
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Set the route (headers, rate, …) of `path`.
    pub(crate) fn route(&self, path: &str, route: Value) {
        let file = self.dir.path().join(".routes.json");
        let mut all: Value = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_else(|| json!({}));
        all[path] = route;
        std::fs::write(&file, all.to_string()).unwrap();
    }

    pub(crate) fn state(&self) -> Value {
        let out = self.ns.run_ok(&[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "http://127.0.0.1/__counts",
        ]);
        serde_json::from_str(&out).unwrap()
    }

    /// Requests the origin got for `path`.
    pub(crate) fn count(&self, path: &str) -> u64 {
        self.state()["counts"][path].as_u64().unwrap_or(0)
    }

    /// Headers of the last request for `path`.
    pub(crate) fn last(&self, path: &str) -> Value {
        self.state()["last"][path].clone()
    }
}

/// Stream pseudo-random bytes to `path` (never the whole file in memory).
pub(crate) fn write_blob(path: &Path, len: u64, seed: u64) {
    use std::io::Write as _;
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0x2545_F491_4F6C_DD1D);
    let mut left = len;
    let mut buf = vec![0u8; 1 << 16];
    while left > 0 {
        for c in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
}

pub(crate) fn url(path: &str) -> String {
    format!("http://{}{}", addr::ORIGIN, path)
}

/// curl from `client`; returns stdout.
pub(crate) fn curl(lab: &Lab, args: &[&str]) -> String {
    let mut all = vec!["curl", "-sS", "--max-time", "120"];
    all.extend_from_slice(args);
    lab.client.run_ok(&all)
}

/// Download `path` in `client` and return the SHA-256 of the body.
pub(crate) fn fetch_sha(lab: &Lab, path: &str) -> String {
    let out = lab.client.run_ok(&[
        "bash",
        "-c",
        &format!(
            "set -o pipefail; curl -sS --fail --max-time 300 {} | sha256sum",
            url(path)
        ),
    ]);
    out.split_whitespace().next().unwrap_or("").to_string()
}

/// The access-log lines for `path`, in order.
pub(crate) fn requests(d: &Daemon, path: &str) -> Vec<Value> {
    d.logs()
        .into_iter()
        .filter(|l| l["message"] == "request" && l["path"] == path)
        .collect()
}

pub(crate) fn wait_requests(d: &Daemon, path: &str, n: usize) -> Vec<Value> {
    d.wait_for_log(WAIT, |l| {
        l["message"] == "request" && l["path"] == path && requests(d, path).len() >= n
    });
    requests(d, path)
}

pub(crate) fn cache_of(lines: &[Value]) -> Vec<&str> {
    lines
        .iter()
        .map(|l| l["cache"].as_str().unwrap_or("?"))
        .collect()
}

pub(crate) fn with_cache_dir(dir: &Path, extra: &str) -> String {
    format!("[http]\ncache_dir = \"{}\"\n{extra}", dir.display())
}

#[test]
fn http_miss_then_hit_with_one_log_line_each() {
    require_tools(&["curl", "python3", "sha256sum"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    let want = origin.file("a.bin", 300_000);
    origin.route(
        "/a.bin",
        json!({"headers": {"Cache-Control": "max-age=600"}}),
    );
    let daemon = Daemon::start(&lab, "");
    assert_eq!(fetch_sha(&lab, "/a.bin"), want);
    wait_requests(&daemon, "/a.bin", 1);
    assert_eq!(fetch_sha(&lab, "/a.bin"), want);
    let lines = wait_requests(&daemon, "/a.bin", 2);
    assert_eq!(cache_of(&lines), ["miss", "hit"]);
    assert_eq!(origin.count("/a.bin"), 1, "the hit went to the origin");
    let hit = &lines[1];
    for key in [
        "timestamp",
        "level",
        "service",
        "client",
        "host",
        "method",
        "path",
        "status",
        "cache",
        "bytes",
        "ttfb_ms",
        "duration_ms",
        "rule",
        "trace_id",
    ] {
        assert!(hit.get(key).is_some(), "{key} missing in {hit}");
    }
    assert_eq!(hit["service"], "http");
    assert_eq!(hit["status"], 200);
    assert_eq!(hit["bytes"], 300_000);
    assert_eq!(hit["method"], "GET");
    assert_eq!(hit["host"], addr::ORIGIN);
    assert!(hit["client"].as_str().unwrap().starts_with(addr::CLIENT));
    assert_ne!(lines[0]["trace_id"], lines[1]["trace_id"]);
    // The origin saw the proxy's Via.
    assert!(
        origin.last("/a.bin")["via"]
            .as_str()
            .unwrap()
            .contains("velocache")
    );
}

#[test]
fn http_revalidation_with_304() {
    require_tools(&["curl", "python3"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    let want = origin.file("r.txt", 5000);
    origin.route(
        "/r.txt",
        json!({"headers": {"Cache-Control": "max-age=0", "ETag": "\"v1\"", "X-Gen": "1"}}),
    );
    let daemon = Daemon::start(&lab, "");
    assert_eq!(fetch_sha(&lab, "/r.txt"), want);
    wait_requests(&daemon, "/r.txt", 1);
    origin.route(
        "/r.txt",
        json!({"headers": {"Cache-Control": "max-age=0", "ETag": "\"v1\"", "X-Gen": "2"}}),
    );
    let head = curl(&lab, &["-D", "-", "-o", "/dev/null", &url("/r.txt")]);
    let lines = wait_requests(&daemon, "/r.txt", 2);
    assert_eq!(cache_of(&lines), ["miss", "revalidated"]);
    assert_eq!(origin.count("/r.txt"), 2);
    assert_eq!(origin.last("/r.txt")["if-none-match"], "\"v1\"");
    assert!(
        head.to_ascii_lowercase().contains("x-gen: 2"),
        "304 headers not merged:\n{head}"
    );
}

#[test]
fn http_no_store_and_private_are_never_stored() {
    require_tools(&["curl", "python3"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    origin.file("ns.bin", 10_000);
    origin.file("pv.bin", 10_000);
    origin.route("/ns.bin", json!({"headers": {"Cache-Control": "no-store"}}));
    origin.route(
        "/pv.bin",
        json!({"headers": {"Cache-Control": "private, max-age=600"}}),
    );
    let daemon = Daemon::start(&lab, "");
    for p in ["/ns.bin", "/pv.bin"] {
        for _ in 0..3 {
            curl(&lab, &["-o", "/dev/null", &url(p)]);
        }
        let lines = wait_requests(&daemon, p, 3);
        assert_eq!(cache_of(&lines), ["miss", "miss", "miss"], "{p}");
        assert_eq!(origin.count(p), 3, "{p}");
    }
    let lines = requests(&daemon, "/ns.bin");
    assert_eq!(lines[0]["not_stored"], "no-store");
    assert_eq!(requests(&daemon, "/pv.bin")[0]["not_stored"], "private");
}

#[test]
fn http_vary_is_respected() {
    require_tools(&["curl", "python3"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    origin.file("v.txt", 2000);
    origin.route(
        "/v.txt",
        json!({"headers": {"Cache-Control": "max-age=600", "Vary": "Accept-Language"}}),
    );
    let daemon = Daemon::start(&lab, "");
    for lang in ["en", "en", "fr", "fr"] {
        curl(
            &lab,
            &[
                "-o",
                "/dev/null",
                "-H",
                &format!("Accept-Language: {lang}"),
                &url("/v.txt"),
            ],
        );
    }
    let lines = wait_requests(&daemon, "/v.txt", 4);
    // One stored variant at a time: en, en (hit), fr replaces it, fr (hit).
    assert_eq!(cache_of(&lines), ["miss", "hit", "miss", "hit"]);
    assert_eq!(origin.count("/v.txt"), 2);
    assert_eq!(origin.last("/v.txt")["accept-language"], "fr");
}

#[test]
fn http_range_on_a_cached_object() {
    require_tools(&["curl", "python3", "sha256sum"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    let want = origin.file("big.bin", 5 << 20);
    origin.route(
        "/big.bin",
        json!({"headers": {"Cache-Control": "max-age=600"}}),
    );
    let daemon = Daemon::start(&lab, "");
    assert_eq!(fetch_sha(&lab, "/big.bin"), want);
    wait_requests(&daemon, "/big.bin", 1);
    let out = tempfile::tempdir().unwrap();
    let part = out.path().join("part");
    let headers = curl(
        &lab,
        &[
            "-r",
            "1000000-2999999",
            "-D",
            "-",
            "-o",
            &part.display().to_string(),
            &url("/big.bin"),
        ],
    );
    let data = std::fs::read(&part).unwrap();
    let full = std::fs::read(origin.path("big.bin")).unwrap();
    assert_eq!(data.len(), 2_000_000);
    assert!(data == full[1_000_000..3_000_000], "range bytes differ");
    assert!(headers.contains("206"), "{headers}");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-range: bytes 1000000-2999999/5242880"),
        "{headers}"
    );
    let code = curl(
        &lab,
        &[
            "-r",
            "9999999-",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url("/big.bin"),
        ],
    );
    assert_eq!(code, "416");
    let lines = wait_requests(&daemon, "/big.bin", 3);
    assert_eq!(cache_of(&lines), ["miss", "hit", "hit"]);
    assert_eq!(lines[1]["status"], 206);
    assert_eq!(origin.count("/big.bin"), 1);
}

#[test]
fn http_hits_are_sent_from_the_slice_files_with_sendfile() {
    require_tools(&["curl", "python3", "sha256sum"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    let len: u64 = (5 << 20) + 12_345;
    let want = origin.file("sf.bin", len);
    origin.route(
        "/sf.bin",
        json!({"headers": {"Cache-Control": "max-age=600"}}),
    );
    let cache = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&lab, &with_cache_dir(cache.path(), ""));
    assert_eq!(fetch_sha(&lab, "/sf.bin"), want);
    wait_requests(&daemon, "/sf.bin", 1);
    // Every slice committed (the fill may end just after the client's response).
    let end = Instant::now() + WAIT;
    while count_slices(cache.path()) < 6 {
        assert!(Instant::now() < end, "the object was never stored whole");
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = || {
        let text = velocache_tests::shared::metrics(&lab, &daemon);
        velocache_tests::shared::sample(&text, "velocache_http_sendfile_bytes_total", "")
            .unwrap_or_else(|| {
                panic!("no velocache_http_sendfile_bytes_total in /metrics:\n{text}")
            }) as u64
    };

    let before = sent();
    assert_eq!(fetch_sha(&lab, "/sf.bin"), want, "the hit's bytes");
    wait_requests(&daemon, "/sf.bin", 2);
    assert_eq!(
        sent() - before,
        len,
        "the whole body went out with sendfile"
    );

    let out = tempfile::tempdir().unwrap();
    let part = out.path().join("part");
    let before = sent();
    curl(
        &lab,
        &[
            "-r",
            "1000000-3999999",
            "-o",
            &part.display().to_string(),
            &url("/sf.bin"),
        ],
    );
    let data = std::fs::read(&part).unwrap();
    let full = std::fs::read(origin.path("sf.bin")).unwrap();
    assert!(data == full[1_000_000..4_000_000], "a Range across slices");
    let lines = wait_requests(&daemon, "/sf.bin", 3);
    assert_eq!(cache_of(&lines), ["miss", "hit", "hit"]);
    assert_eq!(lines[1]["bytes"], len);
    assert_eq!(lines[2]["status"], 206);
    assert_eq!(sent() - before, 3_000_000);
    assert_eq!(origin.count("/sf.bin"), 1);
}

#[test]
fn http_deny_rule_returns_403_with_a_short_body() {
    require_tools(&["curl", "python3"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    origin.file("ok.txt", 10);
    let rules = tempfile::tempdir().unwrap();
    let file = rules.path().join("rules.toml");
    std::fs::write(
        &file,
        "[[rule]]\nname = \"no-ads\"\nmatch_path = \"/ads/*\"\naction = \"deny\"\n",
    )
    .unwrap();
    let daemon = Daemon::start(&lab, &format!("[rules]\nfile = \"{}\"\n", file.display()));
    let out = curl(&lab, &["-w", "\n%{http_code}", &url("/ads/banner.js")]);
    let (body, code) = out.rsplit_once('\n').unwrap();
    assert_eq!(code, "403");
    assert!(body.len() < 64 && body.contains("no-ads"), "{body}");
    assert_eq!(origin.count("/ads/banner.js"), 0);
    let line = daemon.wait_for_log(WAIT, |l| {
        l["message"] == "request" && l["path"] == "/ads/banner.js"
    });
    assert_eq!(line["status"], 403);
    assert_eq!(line["rule"], "no-ads");
    let size = curl(
        &lab,
        &["-o", "/dev/null", "-w", "%{size_download}", &url("/ok.txt")],
    );
    assert_eq!(size, "10");
}

#[test]
fn http_restart_keeps_the_cache() {
    require_tools(&["curl", "python3", "sha256sum"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    let want = origin.file("keep.bin", 3 << 20);
    origin.route(
        "/keep.bin",
        json!({"headers": {"Cache-Control": "max-age=600"}}),
    );
    let cache = tempfile::tempdir().unwrap();
    let cfg = with_cache_dir(cache.path(), "");
    let mut first = Daemon::start(&lab, &cfg);
    assert_eq!(fetch_sha(&lab, "/keep.bin"), want);
    wait_requests(&first, "/keep.bin", 1);
    assert!(first.stop().success());
    let second = Daemon::start(&lab, &cfg);
    second.wait_for_log(WAIT, |l| {
        l["message"] == "disk cache index rebuilt" && l["objects"] == 1
    });
    assert_eq!(fetch_sha(&lab, "/keep.bin"), want);
    assert_eq!(cache_of(&wait_requests(&second, "/keep.bin", 1)), ["hit"]);
    assert_eq!(origin.count("/keep.bin"), 1);
}

#[test]
fn http_kill_mid_download_never_serves_the_partial_object() {
    require_tools(&["curl", "python3", "sha256sum"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    let want = origin.file("cut.bin", 48 << 20);
    origin.route(
        "/cut.bin",
        json!({"headers": {"Cache-Control": "max-age=600"}, "rate": 8 << 20}),
    );
    let cache = tempfile::tempdir().unwrap();
    let cfg = with_cache_dir(cache.path(), "");
    let mut first = Daemon::start(&lab, &cfg);
    let _download = lab
        .client
        .spawn(&["curl", "-sS", "-o", "/dev/null", &url("/cut.bin")]);
    // Wait until a few slices are on disk, then kill the daemon mid-download.
    let end = Instant::now() + WAIT;
    while count_slices(cache.path()) < 3 {
        assert!(Instant::now() < end, "no slices written");
        std::thread::sleep(Duration::from_millis(50));
    }
    first.kill9();
    let before = count_slices(cache.path());
    assert!(before < 48, "the download finished before the kill");

    // Fast origin from now on.
    origin.route(
        "/cut.bin",
        json!({"headers": {"Cache-Control": "max-age=600"}}),
    );
    let second = Daemon::start(&lab, &cfg);
    assert_eq!(
        fetch_sha(&lab, "/cut.bin"),
        want,
        "a partial object was served"
    );
    let lines = wait_requests(&second, "/cut.bin", 1);
    assert_eq!(lines[0]["complete"], true);
    // What was complete was kept; only the rest was fetched, as a range.
    let range = origin.last("/cut.bin")["range"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        range.starts_with("bytes=") && !range.starts_with("bytes=0-"),
        "refetched everything: {range:?}"
    );
    assert_eq!(origin.count("/cut.bin"), 2);
    assert!(std::fs::read_dir(cache.path().join("tmp")).unwrap().count() <= 1);
    drop(second);
}

pub(crate) fn count_slices(cache: &Path) -> usize {
    let Ok(prefixes) = std::fs::read_dir(cache.join("objects")) else {
        return 0;
    };
    prefixes
        .flatten()
        .flat_map(|p| std::fs::read_dir(p.path()).into_iter().flatten().flatten())
        .flat_map(|o| std::fs::read_dir(o.path()).into_iter().flatten().flatten())
        .filter(|f| f.file_name() != "meta")
        .count()
}

#[test]
fn http_twenty_concurrent_clients_cause_exactly_one_origin_fetch() {
    require_tools(&["curl", "python3", "sha256sum"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    let want = origin.file("popular.bin", 200 << 20);
    origin.route(
        "/popular.bin",
        json!({"headers": {"Cache-Control": "max-age=600"}, "rate": 100 << 20}),
    );
    let daemon = Daemon::start(&lab, "");
    let script = format!(
        "for i in $(seq 20); do (curl -sS --fail --max-time 300 {} | sha256sum) & done; wait",
        url("/popular.bin")
    );
    let out = lab.client.run_ok(&["bash", "-c", &script]);
    let sums: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(sums.len(), 20, "{out}");
    assert!(
        sums.iter().all(|s| *s == want),
        "a client got other bytes:\n{out}"
    );
    assert_eq!(
        origin.count("/popular.bin"),
        1,
        "more than one origin fetch"
    );
    let lines = wait_requests(&daemon, "/popular.bin", 20);
    assert!(
        lines
            .iter()
            .all(|l| l["complete"] == true && l["bytes"] == 200 << 20)
    );
    assert_eq!(lines.iter().filter(|l| l["cache"] == "miss").count(), 1);
}

#[test]
fn http_an_object_over_1_gib_fills_the_cache_in_bounded_memory() {
    require_tools(&["curl", "python3", "sha256sum"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    let len: u64 = (1 << 30) + (64 << 20);
    let want = origin.file("huge.bin", len);
    origin.route(
        "/huge.bin",
        json!({"headers": {"Cache-Control": "max-age=600"}}),
    );
    let daemon = Daemon::start(&lab, "");
    assert_eq!(fetch_sha(&lab, "/huge.bin"), want);
    wait_requests(&daemon, "/huge.bin", 1);
    // Stored whole: the second download is a hit.
    assert_eq!(fetch_sha(&lab, "/huge.bin"), want);
    let lines = wait_requests(&daemon, "/huge.bin", 2);
    assert_eq!(cache_of(&lines), ["miss", "hit"]);
    assert_eq!(origin.count("/huge.bin"), 1);
    let rss = servers::peak_rss_kib(daemon.pid()).unwrap();
    println!(
        "daemon peak RSS after a {len}-byte object in and out: {} MiB",
        rss / 1024
    );
    assert!(rss < 100 * 1024, "peak RSS {rss} KiB");
}

#[test]
fn http_a_host_that_names_another_server_is_logged_and_sent_to_the_original_destination() {
    require_tools(&["curl", "python3"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    origin.file("h.txt", 100);
    let daemon = Daemon::start(&lab, "");
    let size = curl(
        &lab,
        &[
            "-H",
            &format!("Host: {}", addr::ORIGIN2),
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            &url("/h.txt"),
        ],
    );
    assert_eq!(size, "100");
    let warn = daemon.wait_for_log(WAIT, |l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Host does not match the original destination"))
    });
    assert_eq!(warn["host"], addr::ORIGIN2);
    assert_eq!(warn["orig_dst"], format!("{}:80", addr::ORIGIN));
    // The origin got it on the address the client connected to, not the one Host names.
    let local = origin.last("/h.txt")["__local"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(local.ends_with(addr::ORIGIN), "{local}");
}

#[test]
fn http_a_cache_directory_removed_under_the_daemon_heals() {
    require_tools(&["curl", "python3", "sha256sum"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    let want = origin.file("heal.bin", 2 << 20);
    origin.route(
        "/heal.bin",
        json!({"headers": {"Cache-Control": "max-age=600"}}),
    );
    let cache = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&lab, &with_cache_dir(cache.path(), ""));
    assert_eq!(fetch_sha(&lab, "/heal.bin"), want);
    wait_requests(&daemon, "/heal.bin", 1);
    std::fs::remove_dir_all(cache.path()).unwrap();
    // The index still lists the object; its files are gone: fetched again, stored again.
    assert_eq!(fetch_sha(&lab, "/heal.bin"), want);
    let lines = wait_requests(&daemon, "/heal.bin", 2);
    assert_eq!(lines[1]["complete"], true);
    // One range request per vanished slice.
    let fetched = origin.count("/heal.bin");
    assert!(fetched >= 2, "{fetched}");
    assert_eq!(fetch_sha(&lab, "/heal.bin"), want);
    assert_eq!(cache_of(&wait_requests(&daemon, "/heal.bin", 3))[2], "hit");
    assert_eq!(origin.count("/heal.bin"), fetched);
}

#[test]
fn http_a_download_continues_into_the_cache_when_its_client_goes_away() {
    require_tools(&["curl", "python3", "sha256sum"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    let want = origin.file("left.bin", 16 << 20);
    origin.route(
        "/left.bin",
        json!({"headers": {"Cache-Control": "max-age=600"}, "rate": 8 << 20}),
    );
    let cache = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&lab, &with_cache_dir(cache.path(), ""));
    // The client gives up after a second, long before the 2 s download ends.
    let out = lab.client.run(&[
        "curl",
        "-sS",
        "--max-time",
        "1",
        "-o",
        "/dev/null",
        &url("/left.bin"),
    ]);
    assert!(!out.status.success(), "the download was expected to be cut");
    let line = wait_requests(&daemon, "/left.bin", 1);
    assert_eq!(line[0]["complete"], false);
    let end = Instant::now() + WAIT;
    while count_slices(cache.path()) < 16 {
        assert!(
            Instant::now() < end,
            "the download did not go on into the cache"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(fetch_sha(&lab, "/left.bin"), want);
    assert_eq!(cache_of(&wait_requests(&daemon, "/left.bin", 2))[1], "hit");
    assert_eq!(origin.count("/left.bin"), 1);
}

#[test]
fn http_size_limits_evict_least_recently_used_and_skip_oversized_objects() {
    require_tools(&["curl", "python3", "sha256sum"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    for name in ["o1.bin", "o2.bin", "o3.bin"] {
        origin.file(name, 1_500_000);
        origin.route(
            &format!("/{name}"),
            json!({"headers": {"Cache-Control": "max-age=600"}}),
        );
    }
    let big = origin.file("big.bin", 3 << 20);
    origin.route(
        "/big.bin",
        json!({"headers": {"Cache-Control": "max-age=600"}}),
    );
    let daemon = Daemon::start(
        &lab,
        "[http]\ncache_max_bytes = 4194304\nmax_object_bytes = 2097152\n",
    );
    // Larger than max_object_bytes: relayed, never stored.
    for _ in 0..2 {
        assert_eq!(fetch_sha(&lab, "/big.bin"), big);
    }
    let lines = wait_requests(&daemon, "/big.bin", 2);
    assert_eq!(cache_of(&lines), ["miss", "miss"]);
    assert_eq!(lines[0]["not_stored"], "larger than max_object_bytes");
    // Three 1.5 MB objects do not fit in 4 MiB: o1, used least recently, is evicted.
    for p in ["/o1.bin", "/o2.bin", "/o3.bin"] {
        curl(&lab, &["-o", "/dev/null", &url(p)]);
        wait_requests(&daemon, p, 1);
    }
    for p in ["/o3.bin", "/o1.bin"] {
        curl(&lab, &["-o", "/dev/null", &url(p)]);
    }
    assert_eq!(cache_of(&wait_requests(&daemon, "/o3.bin", 2))[1], "hit");
    assert_eq!(cache_of(&wait_requests(&daemon, "/o1.bin", 2))[1], "miss");
    assert_eq!(origin.count("/o1.bin"), 2);
    assert_eq!(origin.count("/o3.bin"), 1);
}
