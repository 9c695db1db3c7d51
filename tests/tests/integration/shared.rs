//! The shared cache tier (`[shared]`, issue 17) in the lab: two gateways, each with its own
//! client, one scripted origin (`tests/scripts/origin.py`, which counts the requests it gets),
//! and a three-master Redis Cluster behind both gateways (`velocache_tests::SharedLab`).
//! Clients run real `curl`; what the tier holds is read with `redis-cli` in the cluster's
//! namespace; the gateways' view comes from `velocache stats`, `velocache metrics` and the log.
use std::time::{Duration, Instant};

use serde_json::json;
use velocache_tests::{
    Daemon, Lab, SharedLab, require_tools,
    shared::{metrics, sample, wait_metric},
};

use crate::http::{Origin, WAIT, fetch_sha, url};

/// `[shared] timeout_ms` in these tests (the default).
const TIMEOUT_MS: u64 = 250;
/// Slice size (`[http] slice_bytes`, the default): objects larger than this span several keys.
const SLICE: u64 = 1 << 20;

/// A running shared-tier lab: the daemons first, so they stop before their namespaces go.
struct Tier {
    d1: Daemon,
    d2: Daemon,
    origin: Origin,
    s: SharedLab,
}

/// Which gateway.
#[derive(Clone, Copy, Debug)]
enum Gw {
    One,
    Two,
}

impl Tier {
    /// The lab, the origin, and a daemon on each gateway with `[shared]` on and `http` as its
    /// `[http]` table's extra lines.
    fn start(http: &str) -> Tier {
        Tier::start_with(http, "")
    }

    /// As [`Tier::start`], with `more` (whole TOML tables) added to both daemons' configs.
    fn start_with(http: &str, more: &str) -> Tier {
        require_tools(&["curl", "python3", "sha256sum", "redis-server", "redis-cli"]);
        let s = SharedLab::new();
        let origin = Origin::start(&s.lab1);
        let extra = format!("{}[http]\n{http}\n{more}", s.shared_toml(TIMEOUT_MS));
        let d1 = Daemon::start(&s.lab1, &extra);
        let d2 = Daemon::start(&s.lab2, &extra);
        // Until a gateway has connected, it runs as if there were no tier (and uploads nothing).
        wait_metric(&s.lab1, &d1, "velocache_shared_up", 1.0);
        wait_metric(&s.lab2, &d2, "velocache_shared_up", 1.0);
        Tier { d1, d2, origin, s }
    }

    fn lab(&self, gw: Gw) -> &Lab {
        match gw {
            Gw::One => &self.s.lab1,
            Gw::Two => &self.s.lab2,
        }
    }

    fn daemon(&self, gw: Gw) -> &Daemon {
        match gw {
            Gw::One => &self.d1,
            Gw::Two => &self.d2,
        }
    }

    /// A cacheable object at the origin: `len` pseudo-random bytes, fresh for ten minutes.
    fn object(&self, path: &str, len: u64) -> String {
        let sha = self.origin.file(&path[1..], len);
        self.origin
            .route(path, json!({"headers": {"Cache-Control": "max-age=600"}}));
        sha
    }

    /// The body's SHA-256 as `gw`'s client gets it (curl fails the test on any error).
    fn get(&self, gw: Gw, path: &str) -> String {
        fetch_sha(self.lab(gw), path)
    }

    /// `velocache ARGS` against `gw`'s daemon: (exit code, stdout, stderr).
    fn cli(&self, gw: Gw, args: &[&str]) -> (i32, String, String) {
        let out = self.daemon(gw).cli(self.lab(gw), args);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The sum of the samples of `name` in `gw`'s `/metrics` whose labels contain `labels`.
    fn metric(&self, gw: Gw, name: &str, labels: &str) -> f64 {
        let text = metrics(self.lab(gw), self.daemon(gw));
        sample(&text, name, labels)
            .unwrap_or_else(|| panic!("{name}{{{labels}}} is not in /metrics:\n{text}"))
    }

    /// The state word of the `shared tier:` line of `velocache stats` (`up`, `down`, …).
    fn stats_state(&self, gw: Gw) -> String {
        let (code, text, err) = self.cli(gw, &["stats"]);
        assert_eq!(code, 0, "velocache stats: {err}");
        let line = text
            .lines()
            .find_map(|l| l.trim_start().strip_prefix("shared tier:"))
            .unwrap_or_else(|| panic!("no `shared tier:` line in velocache stats:\n{text}"));
        line.split(|c: char| !c.is_ascii_alphanumeric())
            .find(|w| !w.is_empty())
            .unwrap_or("")
            .to_string()
    }

    /// Wait until `gw` has written `slices` slices to the tier in all (uploads run behind the
    /// client; a slice counts once its digest is in the object's record) and the tier holds at
    /// least `records` object records.
    fn wait_uploaded(&self, gw: Gw, records: usize, slices: usize) {
        wait_metric(
            self.lab(gw),
            self.daemon(gw),
            "velocache_shared_uploads_total",
            slices as f64,
        );
        self.s.redis.wait_keys("vc:{*}:o", records);
    }

    /// How many log lines of `gw` contain `text` in their message.
    fn log_count(&self, gw: Gw, text: &str) -> usize {
        self.daemon(gw)
            .logs()
            .iter()
            .filter(|l| l["message"].as_str().is_some_and(|m| m.contains(text)))
            .count()
    }

    /// Poll `pred` (up to [`WAIT`]) and panic with `what` and both logs if it never holds.
    fn wait_until(&self, what: &str, pred: impl Fn() -> bool) {
        let end = Instant::now() + WAIT;
        while !pred() {
            assert!(
                Instant::now() < end,
                "{what}: not within {WAIT:?}\n--- gw1 log\n{}\n--- gw2 log\n{}",
                self.d1.log_text(),
                self.d2.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether `gw`'s own cache holds `path` (`velocache cache show`).
    fn stored_locally(&self, gw: Gw, path: &str) -> bool {
        let (code, _, _) = self.cli(gw, &["cache", "show", &url(path), "--json"]);
        code == 0
    }

    /// Fetch `path` through `gw`, check the body against `sha` and say how long it took (for
    /// the reader of the test's output; no assertion is made on it).
    fn get_checked(&self, gw: Gw, path: &str, sha: &str) {
        let t = Instant::now();
        assert_eq!(self.get(gw, path), sha, "{path} through {gw:?}");
        println!("{path} through {gw:?}: {:?}", t.elapsed());
    }
}

/// Slices an object of `len` bytes takes in the tier.
fn slices(len: u64) -> usize {
    len.div_ceil(SLICE) as usize
}

#[test]
fn the_shared_lab_wires_both_gateways_to_every_redis_node_and_both_clients_to_one_origin() {
    require_tools(&["curl", "python3", "redis-server", "redis-cli", "nft"]);
    let mut s = SharedLab::new();
    let origin = Origin::start(&s.lab1);
    origin.file("probe", 100);
    s.check(80);
    // Plain forwarding (no daemon yet): each client's request reaches the one origin.
    for lab in [&s.lab1, &s.lab2] {
        lab.client.run_ok(&[
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            &url("/probe"),
        ]);
    }
    assert_eq!(origin.count("/probe"), 2);
    // The cluster takes writes from either gateway, and a node killed and restarted rejoins.
    s.lab2.gw.run_ok(&[
        "redis-cli",
        "-c",
        "-h",
        velocache_tests::redis::CLUSTER_IP,
        "-p",
        "7001",
        "set",
        "lab:probe",
        "1",
    ]);
    assert_eq!(s.redis.keys("lab:*"), ["lab:probe"]);
    s.redis.kill_node(2);
    s.redis.wait_fail();
    s.redis.start_node(2);
    s.redis.wait_ok();
    s.redis.stop();
    s.redis.start();
    assert!(
        s.redis.keys("*").is_empty(),
        "no persistence: a restart starts empty"
    );
}

#[test]
fn an_object_fetched_through_one_gateway_is_a_hit_at_the_other_without_the_origin() {
    let t = Tier::start("");
    let big_len = 3 * SLICE + 300_000;
    let big = t.object("/big.bin", big_len);
    let small = t.object("/small.txt", 10_000);
    t.get_checked(Gw::One, "/big.bin", &big);
    t.get_checked(Gw::One, "/small.txt", &small);
    assert_eq!(t.origin.count("/big.bin"), 1);
    assert_eq!(t.origin.count("/small.txt"), 1);
    t.wait_uploaded(Gw::One, 2, slices(big_len) + 1);

    t.get_checked(Gw::Two, "/big.bin", &big);
    t.get_checked(Gw::Two, "/small.txt", &small);
    assert_eq!(
        t.origin.count("/big.bin"),
        1,
        "gateway 2 went to the origin"
    );
    assert_eq!(
        t.origin.count("/small.txt"),
        1,
        "gateway 2 went to the origin"
    );
    assert!(t.metric(Gw::Two, "velocache_shared_hits_total", "") >= 2.0);
    assert!(
        t.metric(
            Gw::Two,
            "velocache_shared_bytes_total",
            "direction=\"read\""
        ) >= (big_len + 10_000) as f64
    );
    // The tier's hit was written to gateway 2's own disk: the next request is local.
    t.wait_until("gateway 2 stored the tier's copy", || {
        t.stored_locally(Gw::Two, "/big.bin")
    });
    let hits = t.metric(Gw::Two, "velocache_shared_hits_total", "");
    t.get_checked(Gw::Two, "/big.bin", &big);
    assert_eq!(t.metric(Gw::Two, "velocache_shared_hits_total", ""), hits);
    assert_eq!(t.origin.count("/big.bin"), 1);
}

#[test]
fn a_range_at_the_second_gateway_comes_from_the_tier_without_the_origin() {
    let t = Tier::start("");
    let len = 5 * SLICE;
    let sha = t.object("/iso.img", len);
    t.get_checked(Gw::One, "/iso.img", &sha);
    t.wait_uploaded(Gw::One, 1, slices(len));

    // A range in the middle: from inside slice 1 to inside slice 3.
    let (from, to) = (SLICE + 123_456, 3 * SLICE + 4_321);
    let out = tempfile::tempdir().unwrap();
    let part = out.path().join("part");
    let head = t.s.lab2.client.run_ok(&[
        "curl",
        "-sS",
        "--fail",
        "--max-time",
        "60",
        "-r",
        &format!("{from}-{to}"),
        "-D",
        "-",
        "-o",
        &part.display().to_string(),
        &url("/iso.img"),
    ]);
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    let want = std::fs::read(t.origin.path("iso.img")).unwrap();
    let got = std::fs::read(&part).unwrap();
    assert_eq!(got.len() as u64, to - from + 1, "{head}");
    assert!(
        got == want[from as usize..=to as usize],
        "the range's bytes differ"
    );
    assert_eq!(
        t.origin.count("/iso.img"),
        1,
        "the range went to the origin"
    );
    assert!(t.metric(Gw::Two, "velocache_shared_hits_total", "") >= 1.0);
}

#[test]
fn concurrent_misses_at_both_gateways_make_one_origin_fetch() {
    let t = Tier::start("lock_wait_ms = 20000");
    let len = 2 * SLICE + 77_777;
    let sha = t.object("/slow.bin", len);
    // Both requests are in flight while the origin thinks.
    t.origin.route(
        "/slow.bin",
        json!({"headers": {"Cache-Control": "max-age=600"}, "delay": 2}),
    );
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| t.get(Gw::One, "/slow.bin"));
        let b = scope.spawn(|| t.get(Gw::Two, "/slow.bin"));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(a, sha, "client 1's body");
    assert_eq!(b, sha, "client 2's body");
    assert_eq!(
        t.origin.count("/slow.bin"),
        1,
        "both gateways fetched from the origin"
    );
}

#[test]
fn a_corrupted_slice_in_the_tier_is_detected_and_refetched() {
    let t = Tier::start("");
    let len = 3 * SLICE + 5_000;
    let sha = t.object("/pkg.deb", len);
    t.get_checked(Gw::One, "/pkg.deb", &sha);
    t.wait_uploaded(Gw::One, 1, slices(len));
    let keys = t.s.redis.keys("vc:s:*");
    // A slice in the middle, so part of the body may already be on its way to the client.
    let victim = keys.iter().find(|k| k.ends_with(":2")).unwrap_or(&keys[0]);
    t.s.redis.corrupt(victim);

    t.get_checked(Gw::Two, "/pkg.deb", &sha);
    assert!(
        t.metric(Gw::Two, "velocache_shared_digest_mismatches_total", "") >= 1.0,
        "the corrupted slice {victim} was not counted"
    );
    assert_eq!(
        t.origin.count("/pkg.deb"),
        2,
        "the corrupted slice was not refetched from the origin"
    );
}

#[test]
fn a_dead_redis_node_or_cluster_never_fails_a_request_and_shows_in_stats_metrics_and_log() {
    let mut t = Tier::start("");
    let warm = t.object("/warm.bin", SLICE + 1_000);
    t.get_checked(Gw::One, "/warm.bin", &warm);
    t.wait_uploaded(Gw::One, 1, 2);
    t.get_checked(Gw::Two, "/warm.bin", &warm);
    assert_eq!(t.origin.count("/warm.bin"), 1);
    for gw in [Gw::One, Gw::Two] {
        assert_eq!(t.stats_state(gw), "up");
        assert_eq!(t.metric(gw, "velocache_shared_up", ""), 1.0);
    }
    let errors = |t: &Tier| {
        t.metric(Gw::One, "velocache_shared_errors_total", "")
            + t.metric(Gw::Two, "velocache_shared_errors_total", "")
    };
    let errors_before = errors(&t);

    // Each phase: requests for new objects (local misses, so the tier is asked) through both
    // gateways succeed with the right body, the tier shows down, and comes back.
    // `downs` is counted by the caller before the tier goes: a gateway may notice (and log)
    // before the phase starts.
    let down_lines = |t: &Tier| -> Vec<usize> {
        [Gw::One, Gw::Two]
            .iter()
            .map(|&gw| t.log_count(gw, "shared tier down"))
            .collect()
    };
    let phase = |t: &mut Tier, name: &str, len: u64, downs: Vec<usize>| {
        let ups: Vec<usize> = [Gw::One, Gw::Two]
            .iter()
            .map(|&gw| t.log_count(gw, "shared tier up"))
            .collect();
        for i in 0..4 {
            let path = format!("/{name}-{i}.bin");
            let sha = t.object(&path, len + i);
            t.get_checked(Gw::One, &path, &sha);
            t.get_checked(Gw::Two, &path, &sha);
        }
        for (n, gw) in [Gw::One, Gw::Two].into_iter().enumerate() {
            t.wait_until(&format!("{gw:?} reports the tier down ({name})"), || {
                t.metric(gw, "velocache_shared_up", "") == 0.0
            });
            assert_eq!(t.stats_state(gw), "down", "{gw:?} ({name})");
            // The gauge flips before the log line reaches the file: wait for the line.
            t.wait_until(
                &format!("{gw:?} logs a `shared tier down` warning ({name})"),
                || {
                    let warned = t.daemon(gw).logs().into_iter().filter(|l| {
                        l["level"]
                            .as_str()
                            .is_some_and(|v| v.eq_ignore_ascii_case("warn"))
                            && l["message"]
                                .as_str()
                                .is_some_and(|m| m.contains("shared tier down"))
                    });
                    warned.count() > downs[n]
                },
            );
        }
        ups
    };

    // One master dies: its slots are gone and the others refuse (cluster_state:fail).
    let downs = down_lines(&t);
    t.s.redis.kill_node(1);
    t.s.redis.wait_fail();
    let ups = phase(&mut t, "node-down", 200_000, downs);
    assert!(
        errors(&t) > errors_before,
        "a dead node cost no tier error at either gateway"
    );
    t.s.redis.start_node(1);
    t.s.redis.wait_ok();
    for (n, gw) in [Gw::One, Gw::Two].into_iter().enumerate() {
        t.wait_until(&format!("{gw:?} reconnects after the node"), || {
            t.metric(gw, "velocache_shared_up", "") == 1.0
                && t.log_count(gw, "shared tier up") > ups[n]
        });
    }

    // The whole cluster goes.
    let downs = down_lines(&t);
    t.s.redis.stop();
    let ups = phase(&mut t, "cluster-down", SLICE + 300_000, downs);

    // Back: the gateways reconnect (and say so) and the tier is used again.
    t.s.redis.start();
    for (n, gw) in [Gw::One, Gw::Two].into_iter().enumerate() {
        t.wait_until(&format!("{gw:?} reports the tier up again"), || {
            t.metric(gw, "velocache_shared_up", "") == 1.0
                && t.log_count(gw, "shared tier up") > ups[n]
        });
        assert_eq!(t.stats_state(gw), "up");
    }
    let uploaded = t.metric(Gw::One, "velocache_shared_uploads_total", "");
    let back = t.object("/back.bin", 2 * SLICE);
    t.get_checked(Gw::One, "/back.bin", &back);
    t.wait_uploaded(Gw::One, 1, uploaded as usize + 2);
    t.get_checked(Gw::Two, "/back.bin", &back);
    assert_eq!(
        t.origin.count("/back.bin"),
        1,
        "after the cluster came back, gateway 2 did not use it"
    );
}

#[test]
fn a_redis_node_that_stops_answering_never_fails_a_request() {
    let t = Tier::start("");
    let warm = t.object("/warm.bin", 2 * SLICE);
    t.get_checked(Gw::One, "/warm.bin", &warm);
    t.wait_uploaded(Gw::One, 1, 2);
    // Frozen, not dead: connections to it stay open and every operation there hangs, so the
    // gateways' only way out is `timeout_ms` (the other masters declare it failed later).
    t.s.redis.freeze_node(0);
    for i in 0..6 {
        let path = format!("/frozen-{i}.bin");
        let sha = t.object(&path, SLICE + 100_000 * i);
        t.get_checked(Gw::One, &path, &sha);
        t.get_checked(Gw::Two, &path, &sha);
    }
    // The object gateway 1 put in the tier before: gateway 2 answers it, tier or not.
    t.get_checked(Gw::Two, "/warm.bin", &warm);
    for gw in [Gw::One, Gw::Two] {
        t.wait_until(&format!("{gw:?} reports the tier down"), || {
            t.metric(gw, "velocache_shared_up", "") == 0.0
        });
        assert!(t.metric(gw, "velocache_shared_errors_total", "") >= 1.0);
    }
    t.s.redis.thaw_node(0);
    t.s.redis.wait_ok();
    for gw in [Gw::One, Gw::Two] {
        t.wait_until(&format!("{gw:?} reports the tier up again"), || {
            t.metric(gw, "velocache_shared_up", "") == 1.0
        });
    }
}

#[test]
fn a_shared_purge_at_one_gateway_reaches_the_other() {
    let t = Tier::start("");
    let sha = t.object("/release.tar", SLICE + 40_000);
    t.get_checked(Gw::One, "/release.tar", &sha);
    t.wait_uploaded(Gw::One, 1, 2);
    t.get_checked(Gw::Two, "/release.tar", &sha);
    assert_eq!(t.origin.count("/release.tar"), 1);
    t.wait_until("gateway 2 stored the tier's copy", || {
        t.stored_locally(Gw::Two, "/release.tar")
    });

    let (code, out, err) = t.cli(
        Gw::One,
        &["cache", "purge", "--shared", &url("/release.tar")],
    );
    assert_eq!(code, 0, "purge --shared: {out}{err}");
    assert!(!t.stored_locally(Gw::One, "/release.tar"));
    t.wait_until("the tier dropped the object record", || {
        t.s.redis.keys("vc:{*}:o").is_empty()
    });
    t.wait_until("gateway 2 dropped its copy", || {
        !t.stored_locally(Gw::Two, "/release.tar")
    });

    t.get_checked(Gw::Two, "/release.tar", &sha);
    assert_eq!(
        t.origin.count("/release.tar"),
        2,
        "gateway 2 answered the purged URL without the origin"
    );
}

#[test]
fn a_content_addressed_blob_stored_by_one_gateway_is_a_hit_at_the_other_under_another_url() {
    // Container layers are keyed by their digest (the shipped rules' `container-layers` rule):
    // the same blob under another repository's URL is the same object, in the tier too.
    let rules = tempfile::tempdir().unwrap();
    let rules_file = rules.path().join("rules.toml");
    std::fs::write(
        &rules_file,
        "[[rule]]\nname = \"layers\"\nmatch_path = \"/v2/*/blobs/sha256:*\"\naction = \"cache\"\n\
         ttl_override = \"365d\"\ncache_key = { content_addressed = \"sha256\" }\n",
    )
    .unwrap();
    let t = Tier::start_with(
        "",
        &format!("[rules]\nfile = \"{}\"\n", rules_file.display()),
    );
    let len = SLICE + 123_456;
    let sha = t.origin.file("layer.tmp", len);
    for repo in ["team-a/app", "team-b/base"] {
        let dir = t.origin.path(&format!("v2/{repo}/blobs"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(
            t.origin.path("layer.tmp"),
            dir.join(format!("sha256:{sha}")),
        )
        .unwrap();
    }
    let at = |repo: &str| format!("/v2/{repo}/blobs/sha256:{sha}");

    t.get_checked(Gw::One, &at("team-a/app"), &sha);
    t.wait_uploaded(Gw::One, 1, slices(len));
    // The record is marked verified at the end of the fill, before gateway 1 frees its lock.
    t.wait_until("gateway 1 freed its fill lock", || {
        t.s.redis.keys("vc:{*}:l").is_empty()
    });
    t.get_checked(Gw::Two, &at("team-b/base"), &sha);
    assert_eq!(t.origin.count(&at("team-a/app")), 1);
    assert_eq!(
        t.origin.count(&at("team-b/base")),
        0,
        "gateway 2 fetched a blob the tier had under its digest"
    );
    assert!(t.metric(Gw::Two, "velocache_shared_hits_total", "") >= 1.0);
}
