//! Crashes: `kill -9` during fills, a restart at once (as a supervisor does), and what the cache
//! holds and serves afterwards. The scripted origin (`tests/scripts/origin.py`) throttles the
//! objects while a round's fills run, so that the kill lands in the middle of them.
use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde_json::{Value, json};
use velocache_tests::{
    Background, Daemon, Lab, cachedir, freezer::Freezer, require_tools, velocache_bin,
};

use crate::http::{
    Origin, WAIT, count_slices, fetch_sha, url, wait_requests, with_cache_dir, write_blob,
};
use crate::util::sha256;

/// `kill -9` while a 48 MiB object is being filled, the killed process held in its exit (its
/// threads finishing I/O, as on a busy disk) while the successor starts: the successor waits,
/// says so, takes over once the old one is gone, and serves the object whole.
#[test]
fn a_daemon_started_while_a_killed_one_is_still_exiting_waits_for_it_and_serves() {
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
    let first = Daemon::start(&lab, &cfg);
    let _download = lab
        .client
        .spawn(&["curl", "-sS", "-o", "/dev/null", &url("/cut.bin")]);
    let end = std::time::Instant::now() + WAIT;
    while count_slices(cache.path()) < 3 {
        assert!(std::time::Instant::now() < end, "no slices written");
        std::thread::sleep(Duration::from_millis(50));
    }
    let freezer = Freezer::new();
    freezer.add(first.pid());
    freezer.freeze();
    first.kill9_nowait();

    // The supervisor's restart, at once.
    let mut second = Daemon::launch(&lab, &cfg);
    let waiting = second.wait_for_log(WAIT, |l| {
        l["message"].as_str().is_some_and(|m| {
            m.starts_with("a killed velocache daemon still holds the instance lock")
        })
    });
    assert_eq!(waiting["pid"], first.pid(), "{waiting}");
    assert_eq!(waiting["level"], "warn");
    assert!(second.try_wait().is_none(), "the successor gave up");
    // The old one finishes exiting.
    freezer.thaw();
    second.wait_running();
    second.wait_for_log(WAIT, |l| {
        l["message"] == "the previous daemon has exited; instance lock taken"
            && l["pid"] == first.pid()
    });
    drop(first);

    origin.route(
        "/cut.bin",
        json!({"headers": {"Cache-Control": "max-age=600"}}),
    );
    assert_eq!(
        fetch_sha(&lab, "/cut.bin"),
        want,
        "a partial object was served"
    );
    let lines = wait_requests(&second, "/cut.bin", 1);
    assert_eq!(lines[0]["complete"], true);
}

/// A small deterministic generator (xorshift64*), so a failing round can be replayed with
/// `VELOCACHE_CRASH_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const SLICE: u64 = 256 << 10;
const LARGE: u64 = 12 << 20;
const SMALL: usize = 8;
const ROUNDS: u64 = 22;

/// What the origin serves, and where each version's bytes are.
struct Objects {
    root: PathBuf,
    /// Every version `/changing.bin` had, by ETag.
    versions: std::collections::BTreeMap<String, PathBuf>,
}

impl Objects {
    /// The bytes an object on disk must hold: by its key's path, or for `/changing.bin` by the
    /// ETag it was stored with.
    fn origin_file(&self, key: &str, etag: Option<&str>) -> Option<PathBuf> {
        let path = key.split_once('/').map(|(_, p)| p)?;
        let name = path.split('?').next()?;
        if name == "changing.bin" {
            return self.versions.get(etag?).cloned();
        }
        Some(self.root.join(name))
    }
}

fn cli_json(lab: &Lab, daemon: &Daemon, args: &[&str]) -> Value {
    let config = daemon.dir().join("velocache.toml");
    let out = lab
        .gw
        .command(&velocache_bin().display().to_string())
        .args(args)
        .args(["--json", "--config", &config.display().to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "velocache {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every slice file on disk holds the origin's bytes at its offset.
fn check_disk_content(cache: &Path, objects: &Objects, round: u64) {
    use std::io::{Read as _, Seek as _};
    for o in cachedir::objects(cache) {
        let Some(key) = &o.key else { continue };
        let file = objects
            .origin_file(key, o.etag.as_deref())
            .unwrap_or_else(|| {
                panic!(
                    "round {round}: {key} (etag {:?}) is no object of the origin",
                    o.etag
                )
            });
        let mut origin = std::fs::File::open(&file).unwrap();
        for &idx in o.slices.keys() {
            let stored = std::fs::read(o.slice_path(idx)).unwrap();
            let mut want = vec![0u8; stored.len()];
            origin
                .seek(std::io::SeekFrom::Start(idx * o.slice_bytes))
                .unwrap();
            origin.read_exact(&mut want).unwrap_or_else(|e| {
                panic!("round {round}: {key} slice {idx} lies past the origin's end: {e}")
            });
            assert!(
                stored == want,
                "round {round}: {key} slice {idx} ({}) differs from the origin's bytes",
                o.slice_path(idx).display()
            );
        }
    }
}

/// Fetch `path` through the gateway; panic unless it comes whole with the origin's SHA-256.
fn fetch_whole(lab: &Lab, path: &str, want: &str, round: u64) {
    let out = lab.client.run(&[
        "bash",
        "-c",
        &format!(
            "set -o pipefail; curl -sS --fail --max-time 120 '{}' | sha256sum",
            url(path)
        ),
    ]);
    let got = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "round {round}: {path} was not served whole: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        got.split_whitespace().next().unwrap_or(""),
        want,
        "round {round}: {path} served with other bytes"
    );
}

/// Fetch `[from, to]` of `path` and compare with the origin file.
fn fetch_range(lab: &Lab, path: &str, file: &Path, from: u64, to: u64, round: u64) {
    use std::io::{Read as _, Seek as _};
    let out = lab.client.run(&[
        "curl",
        "-sS",
        "--fail",
        "--max-time",
        "120",
        "-r",
        &format!("{from}-{to}"),
        &url(path),
    ]);
    assert!(
        out.status.success(),
        "round {round}: range {from}-{to} of {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut want = vec![0u8; (to - from + 1) as usize];
    let mut f = std::fs::File::open(file).unwrap();
    f.seek(std::io::SeekFrom::Start(from)).unwrap();
    f.read_exact(&mut want).unwrap();
    assert!(
        out.stdout == want,
        "round {round}: range {from}-{to} of {path} differs ({} bytes)",
        out.stdout.len()
    );
}

/// After a restart: the index and the disk agree, every stored byte is the origin's, nothing
/// is left in `tmp/`.
fn check_store(lab: &Lab, daemon: &Daemon, cache: &Path, objects: &Objects, round: u64) {
    assert_eq!(
        cachedir::tmp_files(cache),
        0,
        "round {round}: temporary files survived the restart"
    );
    let listing = cli_json(lab, daemon, &["cache", "ls", "--limit", "100000"]);
    let problems = cachedir::disagreements(cache, &listing);
    assert!(
        problems.is_empty(),
        "round {round}: the index and the disk disagree:\n{}",
        problems.join("\n")
    );
    check_disk_content(cache, objects, round);
}

/// 22 rounds, each: a seeded mix of fills (large, Range, collapsed by several clients, small
/// objects, a replaced version), `kill -9` at a seeded moment, an immediate restart; then the
/// index and the disk must agree, every stored slice must hold the origin's bytes, and every
/// object touched so far is served whole with the origin's SHA-256 (completing what was cut).
#[test]
fn crash_consistency_kill_9_at_random_points_during_fills() {
    require_tools(&["curl", "python3", "sha256sum"]);
    let seed: u64 = std::env::var("VELOCACHE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(18);
    println!("crash consistency: seed {seed} (set VELOCACHE_CRASH_SEED to replay)");
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    let versions_dir = tempfile::tempdir().unwrap();
    let mut objects = Objects {
        root: origin.path(""),
        versions: Default::default(),
    };
    let mut sums = std::collections::BTreeMap::new();
    for i in 0..3u64 {
        let name = format!("large{i}.bin");
        write_blob(&origin.path(&name), LARGE + i * 77_777, 100 + i);
        sums.insert(name.clone(), sha256(&origin.path(&name)));
    }
    for k in 0..SMALL as u64 {
        let name = format!("small{k}.bin");
        write_blob(&origin.path(&name), 10_000 + k * 90_001, 200 + k);
        sums.insert(name.clone(), sha256(&origin.path(&name)));
    }
    let fresh = |rate: Option<u64>| match rate {
        Some(r) => json!({"headers": {"Cache-Control": "max-age=600"}, "rate": r}),
        None => json!({"headers": {"Cache-Control": "max-age=600"}}),
    };
    let set_rates = |rate_large: Option<u64>, rate_small: Option<u64>, etag: &str| {
        for i in 0..3 {
            origin.route(&format!("/large{i}.bin"), fresh(rate_large));
        }
        for k in 0..SMALL {
            origin.route(&format!("/small{k}.bin"), fresh(rate_small));
        }
        let mut changing = json!({"headers": {"Cache-Control": "max-age=0", "ETag": etag}});
        if let Some(r) = rate_large {
            changing["rate"] = json!(r);
        }
        origin.route("/changing.bin", changing);
    };

    let cache = tempfile::tempdir().unwrap();
    let cfg = with_cache_dir(
        cache.path(),
        &format!(
            "slice_bytes = {SLICE}\ncache_max_bytes = {}\nmax_object_bytes = {}\n",
            64 << 20,
            32 << 20
        ),
    );
    let mut daemon = Daemon::start(&lab, &cfg);
    // Paths served at least once: checked whole after every restart.
    let mut touched: Vec<String> = Vec::new();
    let mut kills = 0;
    for round in 0..ROUNDS {
        // This round's version of the replaced object.
        let etag = format!("\"r{round}\"");
        let version = versions_dir.path().join(format!("changing.r{round}"));
        write_blob(&version, 3 << 20, 1000 + round);
        std::fs::copy(&version, origin.path("changing.bin")).unwrap();
        objects.versions.insert(etag.clone(), version);
        sums.insert("changing.bin".into(), sha256(&origin.path("changing.bin")));
        set_rates(Some(6 << 20), Some(2 << 20), &etag);

        // The round's fills, in the background.
        let mut clients: Vec<Background> = Vec::new();
        let mut plan = Vec::new();
        let kinds = 1 + rng.below(3);
        for _ in 0..kinds {
            match rng.below(5) {
                0 => {
                    let p = format!("/large{}.bin?r={round}", rng.below(3));
                    clients.push(
                        lab.client
                            .spawn(&["curl", "-sS", "-o", "/dev/null", &url(&p)]),
                    );
                    plan.push(format!("large {p}"));
                    touched.push(p);
                }
                1 => {
                    let i = rng.below(3);
                    let p = format!("/large{i}.bin?r={round}");
                    let from = rng.below(LARGE - (4 << 20));
                    let to = from + 1 + rng.below(4 << 20);
                    clients.push(lab.client.spawn(&[
                        "curl",
                        "-sS",
                        "-o",
                        "/dev/null",
                        "-r",
                        &format!("{from}-{to}"),
                        &url(&p),
                    ]));
                    plan.push(format!("range {from}-{to} of {p}"));
                    touched.push(p);
                }
                2 => {
                    let p = format!("/large{}.bin?c={round}", rng.below(3));
                    for _ in 0..4 {
                        clients.push(lab.client.spawn(&[
                            "curl",
                            "-sS",
                            "-o",
                            "/dev/null",
                            &url(&p),
                        ]));
                    }
                    plan.push(format!("collapsed x4 {p}"));
                    touched.push(p);
                }
                3 => {
                    let mut args = vec!["curl".to_string(), "-sS".into()];
                    for k in 0..SMALL {
                        let p = format!("/small{k}.bin?r={round}");
                        args.extend(["-o".into(), "/dev/null".into(), url(&p)]);
                        touched.push(p);
                    }
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    clients.push(lab.client.spawn(&args));
                    plan.push("small objects".into());
                }
                _ => {
                    let p = "/changing.bin".to_string();
                    clients.push(
                        lab.client
                            .spawn(&["curl", "-sS", "-o", "/dev/null", &url(&p)]),
                    );
                    plan.push(format!("new version {etag} of {p}"));
                    touched.push(p);
                }
            }
        }
        let delay = 50 + rng.below(1900);
        println!(
            "round {round}: {} ; kill -9 after {delay} ms",
            plan.join(", ")
        );
        std::thread::sleep(Duration::from_millis(delay));
        daemon.kill9_nowait();
        kills += 1;
        drop(clients);
        // The restart, at once: the killed process may still be exiting.
        let mut next = Daemon::launch(&lab, &cfg);
        next.wait_running();
        drop(std::mem::replace(&mut daemon, next));
        set_rates(None, None, &etag);

        check_store(&lab, &daemon, cache.path(), &objects, round);
        touched.sort();
        touched.dedup();
        for p in &touched {
            let name = p.trim_start_matches('/').split('?').next().unwrap();
            fetch_whole(&lab, p, &sums[name], round);
        }
        let i = rng.below(3);
        let from = rng.below(LARGE - 1);
        let to = (from + rng.below(3 << 20)).min(LARGE - 1);
        fetch_range(
            &lab,
            &format!("/large{i}.bin?r={round}"),
            &origin.path(&format!("large{i}.bin")),
            from,
            to,
            round,
        );
        assert!(
            !daemon.log_text().contains("panicked"),
            "round {round}: the daemon panicked:\n{}",
            daemon.log_text()
        );
    }
    assert!(kills >= 20);
    // Settled: nothing in flight, deleted versions' slices gone (they linger 10 s for readers).
    std::thread::sleep(Duration::from_secs(11));
    let listing = cli_json(&lab, &daemon, &["cache", "ls", "--limit", "100000"]);
    let problems = cachedir::disagreements(cache.path(), &listing);
    assert!(problems.is_empty(), "at the end:\n{}", problems.join("\n"));
    assert_eq!(cachedir::tmp_files(cache.path()), 0);
    drop(daemon);
}
