//! Exhaustion: a full disk, the open-file limit, 10 000 clients at once, slowloris clients, an
//! origin that never answers, a DNS upstream that answers late. Each time the daemon must keep
//! its memory bounded, log what it gave up on, and go on serving everyone else. The peers are
//! real sockets (`tests/scripts/load.py`), curl and dig; the bounds are generous functional
//! ones, not timings.
use std::{path::PathBuf, process::Command, time::Duration};

use serde_json::{Value, json};
use velocache_tests::{Daemon, Lab, addr, require_tools, servers};

use crate::http::{Origin, WAIT, fetch_sha, url, wait_requests, with_cache_dir};
use crate::util::dns_upstream;

fn load_py() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scripts/load.py")
        .display()
        .to_string()
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }

    fn used_bytes(&self) -> u64 {
        let st = nix::sys::statvfs::statvfs(self.dir.path()).unwrap();
        (st.blocks() - st.blocks_free()) * st.fragment_size()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn cache_ls(lab: &Lab, daemon: &Daemon) -> Value {
    let config = daemon.dir().join("velocache.toml");
    let out = lab.gw.run_ok(&[
        &velocache_tests::velocache_bin().display().to_string(),
        "cache",
        "ls",
        "--json",
        "--config",
        &config.display().to_string(),
    ]);
    serde_json::from_str(&out).unwrap()
}

/// The cache directory fills up in the middle of a 24 MiB object fetched by three clients at
/// once: each client still gets every byte, the object is not stored, its space comes back,
/// and the next (small) object is cached as usual.
#[test]
fn a_full_disk_during_a_fill_relays_every_byte_stores_nothing_and_frees_the_space() {
    require_tools(&["curl", "python3", "sha256sum", "mount"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    let want = origin.file("big.bin", 24 << 20);
    origin.route(
        "/big.bin",
        json!({"headers": {"Cache-Control": "max-age=600"}, "rate": 32 << 20}),
    );
    origin.file("small.txt", 1000);
    origin.route(
        "/small.txt",
        json!({"headers": {"Cache-Control": "max-age=600"}}),
    );
    let disk = SmallDisk::new("6m");
    let daemon = Daemon::start(&lab, &with_cache_dir(disk.dir.path(), ""));
    let script = format!(
        "for i in 1 2 3; do (curl -sS --fail --max-time 120 {} | sha256sum) & done; wait",
        url("/big.bin")
    );
    let out = lab.client.run_ok(&["bash", "-c", &script]);
    let sums: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let log: Vec<String> = daemon
        .logs()
        .iter()
        .filter(|l| l["level"] != "debug" && l["message"] != "kernel counters")
        .map(|l| l.to_string())
        .collect();
    assert_eq!(
        sums,
        [want.as_str(); 3],
        "a client was cut short:\n{out}\n{}",
        log.join("\n")
    );
    let lines = wait_requests(&daemon, "/big.bin", 3);
    assert!(lines.iter().all(|l| l["complete"] == true), "{lines:?}");
    let warn = daemon.wait_for_log(WAIT, |l| {
        l["message"] == "storing the object failed; nothing partial is served"
    });
    assert!(
        warn["error"]
            .as_str()
            .is_some_and(|e| e.contains("No space left on device")),
        "{warn}"
    );
    // Not stored, and its space is given back (deleted slices linger 10 s for readers).
    let end = std::time::Instant::now() + WAIT;
    while disk.used_bytes() > 256 << 10 {
        assert!(
            std::time::Instant::now() < end,
            "{} bytes still used on the cache disk",
            disk.used_bytes()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(cache_ls(&lab, &daemon)["total"], 0);
    // The cache works on.
    fetch_sha(&lab, "/small.txt");
    fetch_sha(&lab, "/small.txt");
    let small = wait_requests(&daemon, "/small.txt", 2);
    assert_eq!(small[1]["cache"], "hit", "{small:?}");
}

/// Started with a soft open-file limit of 1024 (systemd's default), the daemon raises it to
/// the hard limit; 10 000 clients then hold a connection each at once and all get their answer,
/// with memory bounded, and a new client is served alongside.
#[test]
fn ten_thousand_concurrent_clients_are_served_in_bounded_memory() {
    require_tools(&["curl", "python3", "prlimit"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    origin.file("tiny.txt", 512);
    origin.route(
        "/tiny.txt",
        json!({"headers": {"Cache-Control": "max-age=600"}}),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = Daemon::lab_config(dir.path(), "[http]\nheader_read_timeout_ms = 120000\n");
    let daemon = Daemon::start_wrapped(
        &lab,
        dir,
        config,
        &[],
        &["prlimit", "--nofile=1024:20000", "--"],
    );
    let raised = daemon.wait_for_log(WAIT, |l| l["message"] == "open-file limit raised");
    assert_eq!(raised["to"], 20000, "{raised}");
    // Stored once, so the 10 000 are answered from the cache.
    fetch_sha(&lab, "/tiny.txt");
    let before = rss_kib(daemon.pid());
    let holder = lab.client.spawn(&[
        "bash",
        "-c",
        &format!(
            "exec python3 {} hold {} 80 10000 /tiny.txt 15",
            load_py(),
            addr::ORIGIN
        ),
    ]);
    let end = std::time::Instant::now() + Duration::from_secs(240);
    while !holder.stdout().contains("answered") {
        assert!(
            std::time::Instant::now() < end,
            "the 10 000 clients were not all answered:\n{}\n{}",
            holder.stdout(),
            holder.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let report: Value = serde_json::from_str(holder.stdout().trim()).unwrap();
    let peak = rss_kib(daemon.pid());
    // While the 10 000 are still connected, another client is served.
    assert_eq!(
        fetch_sha(&lab, "/tiny.txt"),
        crate::util::sha256(&origin.path("tiny.txt"))
    );
    println!(
        "10 000 clients: {report}; daemon RSS {} MiB before, {} MiB with them connected",
        before / 1024,
        peak / 1024
    );
    assert_eq!(report["connected"], 10000, "{report}");
    assert_eq!(report["answered"], 10000, "{report}");
    assert_eq!(report["statuses"]["200"], 10000, "{report}");
    assert!(peak < 1024 * 1024, "RSS {peak} KiB with 10 000 clients");
    assert!(
        daemon
            .logs()
            .iter()
            .all(|l| l["message"] != "accept failed")
    );
}

/// With its descriptors exhausted (a hard limit of 256, held by idle connections), the daemon
/// logs the failing accepts, does not crash or spin, and serves again once the idle
/// connections time out.
#[test]
fn the_open_file_limit_reached_is_logged_and_service_resumes() {
    require_tools(&["curl", "python3", "prlimit"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    origin.file("f.txt", 100);
    let dir = tempfile::tempdir().unwrap();
    let config = Daemon::lab_config(dir.path(), "[http]\nheader_read_timeout_ms = 3000\n");
    let mut daemon = Daemon::start_wrapped(
        &lab,
        dir,
        config,
        &[],
        &["prlimit", "--nofile=256:256", "--"],
    );
    // 600 connections that never send a request: more than the daemon has descriptors.
    let hog = lab.client.spawn(&[
        "python3",
        "-c",
        &format!(
            "import socket,time\ns=[]\nfor i in range(600):\n  try: s.append(socket.create_connection(('{}',80),timeout=5))\n  except OSError: pass\ntime.sleep(20)",
            addr::ORIGIN
        ),
    ]);
    let warn = daemon.wait_for_log(WAIT, |l| l["message"] == "accept failed");
    assert!(
        warn["error"]
            .as_str()
            .is_some_and(|e| e.contains("Too many open files")),
        "{warn}"
    );
    // A real client meanwhile gets an answer, not a hang: the object, or a 502 that says the
    // gateway has no descriptor left for the origin connection.
    let code = lab.client.run_ok(&[
        "curl",
        "-sS",
        "--max-time",
        "60",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &url("/f.txt"),
    ]);
    match code.as_str() {
        "200" => {}
        "502" => {
            let failed = daemon.wait_for_log(WAIT, |l| l["message"] == "request failed");
            assert!(
                failed["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("Too many open files")),
                "{failed}"
            );
        }
        other => panic!("answered {other} while the descriptors were exhausted"),
    }
    drop(hog);
    assert!(daemon.try_wait().is_none(), "the daemon died");
    // Bounded logging: a back-off between failed accepts, not a spin.
    let failures = daemon
        .logs()
        .iter()
        .filter(|l| l["message"] == "accept failed")
        .count();
    assert!(failures < 2000, "{failures} accept failures logged");
    assert_eq!(
        lab.client.run_ok(&[
            "curl",
            "-sS",
            "--max-time",
            "30",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url("/f.txt")
        ]),
        "200"
    );
}

/// 200 slowloris clients (a header byte a second, never finished) are cut at the header
/// timeout, and a normal client is served meanwhile.
#[test]
fn slowloris_clients_are_cut_at_the_header_timeout_and_others_are_served() {
    require_tools(&["curl", "python3"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    origin.file("ok.txt", 10);
    let daemon = Daemon::start(&lab, "[http]\nheader_read_timeout_ms = 3000\n");
    let slow = lab.client.spawn(&[
        "python3",
        &load_py(),
        "slowloris",
        addr::ORIGIN,
        "80",
        "200",
        "12",
    ]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        lab.client.run_ok(&[
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            &url("/ok.txt")
        ]),
        "10"
    );
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while !slow.stdout().contains("closed_by_peer") {
        assert!(std::time::Instant::now() < end, "slowloris did not end");
        std::thread::sleep(Duration::from_millis(200));
    }
    let report: Value = serde_json::from_str(slow.stdout().trim()).unwrap();
    assert_eq!(report["connected"], 200, "{report}");
    assert_eq!(report["closed_by_peer"], 200, "slow clients kept: {report}");
    let cut = daemon
        .logs()
        .iter()
        .filter(|l| {
            l["message"] == "client connection ended with an error"
                && l["error"].as_str().is_some_and(|e| e.contains("timeout"))
        })
        .count();
    assert!(cut >= 200, "{cut} header timeouts logged");
}

/// An origin that accepts and never answers: the client gets a 504 (or 502) at the response
/// timeout, the failure is logged with the origin's address, and other origins are served
/// meanwhile.
#[test]
fn an_origin_that_never_answers_times_out_and_others_are_served() {
    require_tools(&["curl", "python3"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    origin.file("ok.txt", 10);
    let _silent = lab.origin.spawn(&["python3", &load_py(), "silent", "8080"]);
    servers::wait_tcp(&lab.origin, "127.0.0.1", 8080);
    let daemon = Daemon::start(
        &lab,
        "[http]\nports = [80, 8080]\nresponse_timeout_ms = 3000\n",
    );
    let hung = lab.client.spawn(&[
        "curl",
        "-sS",
        "--max-time",
        "60",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{}:8080/x", addr::ORIGIN),
    ]);
    assert_eq!(
        lab.client.run_ok(&[
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            &url("/ok.txt")
        ]),
        "10"
    );
    let line = daemon.wait_for_log(WAIT, |l| l["message"] == "request" && l["path"] == "/x");
    assert!(line["status"] == 504 || line["status"] == 502, "{line}");
    let failed = daemon.wait_for_log(WAIT, |l| l["message"] == "request failed");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("no response headers within 3000 ms")),
        "{failed}"
    );
    let mut hung = hung;
    assert!(hung.wait_timeout(WAIT).is_some());
    assert!(
        matches!(hung.stdout().as_str(), "504" | "502"),
        "{}",
        hung.stdout()
    );
}

/// A DNS upstream that answers after 5 s, flooded with 3 000 queries: the daemon gives up on
/// them at its upstream timeout (logged), its memory stays bounded, and queries to a healthy
/// upstream are answered meanwhile.
#[test]
fn a_slow_dns_upstream_is_timed_out_and_a_healthy_one_is_answered() {
    require_tools(&["dig", "dnsmasq", "python3"]);
    let lab = Lab::new();
    let _good = dns_upstream(&lab.origin, addr::ORIGIN);
    let _slow = lab
        .origin
        .spawn(&["python3", &load_py(), "slowdns", addr::ORIGIN2, "5"]);
    let daemon = Daemon::start(&lab, "[dns]\nmax_pending_queries = 1000\n");
    let before = rss_kib(daemon.pid());
    let flood = lab.client.spawn(&[
        "python3",
        "-c",
        &format!(
            "import socket,struct,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor i in range(3000):\n  q=struct.pack('!HHHHHH',i,0x100,1,0,0,0)+b''.join(bytes([len(p)])+p.encode() for p in ('n%d'%i,'slow','test'))+b'\\x00'+struct.pack('!HH',1,1)\n  s.sendto(q,('{}',53))\n  if i%100==0: time.sleep(0.15)\ntime.sleep(8)",
            addr::ORIGIN2
        ),
    ]);
    std::thread::sleep(Duration::from_secs(1));
    let fast = lab.client.run(&[
        "dig",
        "+short",
        "+time=2",
        "+tries=2",
        &format!("@{}", addr::ORIGIN),
        "x.test.lab",
    ]);
    let answered: Vec<String> = daemon
        .logs()
        .iter()
        .filter(|l| l["qname"] == "x.test.lab.")
        .map(|l| l.to_string())
        .collect();
    assert_eq!(
        String::from_utf8_lossy(&fast.stdout).trim(),
        "10.9.9.9",
        "the healthy resolver's client was not answered: {}",
        answered.join("\n")
    );
    let timed_out = daemon.wait_for_log(WAIT, |l| {
        l["message"] == "query"
            && l["qname"].as_str().is_some_and(|q| q.contains("slow.test"))
            && l["rcode"] == "SERVFAIL"
    });
    println!("slow upstream: {timed_out}");
    let mut flood = flood;
    flood.wait_timeout(WAIT);
    let after = rss_kib(daemon.pid());
    println!(
        "RSS {} MiB before the flood, {} MiB after",
        before / 1024,
        after / 1024
    );
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
    // Still answering.
    let again = lab.client.run_ok(&[
        "dig",
        "+short",
        "+time=3",
        "+tries=1",
        &format!("@{}", addr::ORIGIN),
        "y.test.lab",
    ]);
    assert_eq!(again.trim(), "10.9.9.9");
}
