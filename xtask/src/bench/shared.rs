//! `bench shared`: what the shared tier (`[shared]` on a Redis Cluster) saves a second gateway,
//! in one run of the shared-tier lab (`velocache_tests::SharedLab`: two gateways with their
//! clients, one origin — `tests/scripts/origin.py` — and a three-master Redis Cluster).
//!
//! - 100 MiB: gateway 2's first request for an object gateway 1 has already fetched (so the
//!   tier holds it), against its first request for another 100 MiB object from the origin,
//!   throttled to a WAN-like 25 MB/s (≈ 200 Mbit/s) by the origin's route `rate`. One `curl`
//!   in client 2; MB/s and seconds.
//! - 1 KiB: N distinct objects fetched through gateway 1, then each once through gateway 2 (tier
//!   hits), against N other objects gateway 2 fetches from the origin, which waits 10 ms before
//!   each answer (route `delay`: this kernel has no netem). `curl --parallel` (16 transfers at a
//!   time, keep-alive) in client 2; requests/s. N grows with `--seconds` (100 per second, 200
//!   to 2000).
//!
//! Both gateways run with the tier on, so the origin side is what a tiered gateway's miss
//! really costs (tier lookup, then the origin). Peak RSS of both daemons and of the Redis nodes.
use std::{path::Path, time::Instant};

use anyhow::{Context as _, Result, bail};
use velocache_tests::{Daemon, Lab, Ns, SharedLab, addr, servers, shared::wait_metric};

use super::print_table;
use crate::util;

const BIG: usize = 100 << 20;
const SMALL: usize = 1024;
/// The origin's WAN-like rate for the 100 MiB object, bytes/s.
const WAN_RATE: u64 = 25_000_000;
/// The origin's WAN-like delay before each small answer, seconds.
const WAN_DELAY: f64 = 0.01;
const PARALLEL: u32 = 16;
const SLICE: usize = 1 << 20;
/// Slices a gateway has written to the tier (with their digests).
const UPLOADS: &str = "velocache_shared_uploads_total";

/// Run the benchmark.
pub fn run(seconds: u64) -> Result<()> {
    velocache_tests::require_tools(&["curl", "python3", "redis-server", "redis-cli"]);
    let n = (seconds * 100).clamp(200, 2000) as usize;
    let www = tempfile::tempdir()?;
    let work = tempfile::tempdir()?;
    write_objects(www.path(), n)?;

    let s = SharedLab::new();
    let _origin = s.lab1.origin.spawn(&[
        "python3",
        &util::root()
            .join("tests/scripts/origin.py")
            .display()
            .to_string(),
        &www.path().display().to_string(),
        "80",
    ]);
    servers::wait_tcp(&s.lab1.origin, "127.0.0.1", 80);
    let extra = format!(
        "{}[daemon]\nstats_interval_secs = 0\n[http]\nfsync = false\n",
        s.shared_toml(250)
    );
    let env = [("RUST_LOG", "error,velocache::app=info")];
    let d1 = Daemon::start_env(&s.lab1, &extra, &env);
    let d2 = Daemon::start_env(&s.lab2, &extra, &env);
    for (lab, d) in [(&s.lab1, &d1), (&s.lab2, &d2)] {
        wait_metric(lab, d, "velocache_shared_up", 1.0);
    }
    let big_slices = BIG.div_ceil(SLICE) as f64;

    // 100 MiB: into the tier through gateway 1, then gateway 2's first request for it.
    let (_, bytes) = curl_one(&s.lab1.client, "/big/a.bin")?;
    check_len(bytes, BIG)?;
    wait_metric(&s.lab1, &d1, UPLOADS, big_slices);
    let (tier_secs, bytes) = curl_one(&s.lab2.client, "/big/a.bin")?;
    check_len(bytes, BIG)?;
    let (origin_secs, bytes) = curl_one(&s.lab2.client, "/wan/big/b.bin")?;
    check_len(bytes, BIG)?;
    // Gateway 2 uploads that one behind its client: let it finish before the next load.
    wait_metric(&s.lab2, &d2, UPLOADS, big_slices);

    // 1 KiB: N objects into the tier through gateway 1, then once each through gateway 2.
    let tier_paths: Vec<String> = (0..n).map(|i| format!("/t/{i}")).collect();
    let wan_paths: Vec<String> = (0..n).map(|i| format!("/wan/k/{i}")).collect();
    curl_many(&s.lab1, &tier_paths, work.path(), "warm")?;
    wait_metric(&s.lab1, &d1, UPLOADS, big_slices + n as f64);
    let tier_rps = n as f64 / curl_many(&s.lab2, &tier_paths, work.path(), "tier")?;
    let origin_rps = n as f64 / curl_many(&s.lab2, &wan_paths, work.path(), "wan")?;

    let mib = |k: Option<u64>| k.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    let redis_rss: Option<u64> = s.redis.pids().into_iter().map(servers::peak_rss_kib).sum();
    let (rss1, rss2) = (
        servers::peak_rss_kib(d1.pid()),
        servers::peak_rss_kib(d2.pid()),
    );
    let mb = |secs: f64| BIG as f64 / 1e6 / secs;
    println!(
        "\nbench shared: gateway 2's first requests (client 2, curl), tier = a three-master Redis Cluster in the lab; origin at {} MB/s and {} ms per small answer",
        WAN_RATE / 1_000_000,
        WAN_DELAY * 1000.0
    );
    print_table(
        &[
            "load",
            "source",
            "MB/s",
            "seconds",
            "req/s",
            "tier / origin",
        ],
        &[
            vec![
                "100 MiB, first request".into(),
                "tier".into(),
                format!("{:.1}", mb(tier_secs)),
                format!("{tier_secs:.2}"),
                "-".into(),
                format!("{:.2}", mb(tier_secs) / mb(origin_secs)),
            ],
            vec![
                "100 MiB, first request".into(),
                "origin (WAN)".into(),
                format!("{:.1}", mb(origin_secs)),
                format!("{origin_secs:.2}"),
                "-".into(),
                "1.00".into(),
            ],
            vec![
                format!("1 KiB x {n}, {PARALLEL} parallel"),
                "tier".into(),
                "-".into(),
                "-".into(),
                format!("{tier_rps:.0}"),
                format!("{:.2}", tier_rps / origin_rps),
            ],
            vec![
                format!("1 KiB x {n}, {PARALLEL} parallel"),
                "origin (WAN)".into(),
                "-".into(),
                "-".into(),
                format!("{origin_rps:.0}"),
                "1.00".into(),
            ],
        ],
    );
    println!(
        "peak RSS: gateway 1 {}, gateway 2 {}, Redis (3 nodes) {}",
        mib(rss1),
        mib(rss2),
        mib(redis_rss)
    );
    drop((d1, d2));
    Ok(())
}

/// The origin's files and routes: `/big/a.bin` (tier side) and `/wan/big/b.bin` (throttled),
/// `n` small objects under `/t/` (tier side) and `/wan/k/` (delayed). Everything is cacheable
/// for an hour.
fn write_objects(root: &Path, n: usize) -> Result<()> {
    for dir in ["big", "wan/big", "t", "wan/k"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    write_pattern(&root.join("big/a.bin"), BIG, 1)?;
    write_pattern(&root.join("wan/big/b.bin"), BIG, 2)?;
    for i in 0..n {
        for dir in ["t", "wan/k"] {
            let mut body = format!("{dir}/{i}\n").into_bytes();
            body.resize(SMALL, b'.');
            std::fs::write(root.join(dir).join(i.to_string()), body)
                .with_context(|| format!("writing {dir}/{i}"))?;
        }
    }
    let cc = serde_json::json!({"Cache-Control": "max-age=3600"});
    let routes = serde_json::json!({
        "/big/*": {"headers": cc},
        "/t/*": {"headers": cc},
        "/wan/big/*": {"headers": cc, "rate": WAN_RATE},
        "/wan/k/*": {"headers": cc, "delay": WAN_DELAY},
    });
    std::fs::write(root.join(".routes.json"), routes.to_string())?;
    Ok(())
}

/// `len` bytes of a pattern that differs with `seed` (the two big objects must not be equal).
fn write_pattern(path: &Path, len: usize, seed: usize) -> Result<()> {
    let data: Vec<u8> = (0..len)
        .map(|i| (i.wrapping_mul(7 + seed) + i / 251 + seed) as u8)
        .collect();
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

fn check_len(got: usize, want: usize) -> Result<()> {
    if got != want {
        bail!("got {got} bytes, wanted {want}");
    }
    Ok(())
}

/// One `curl` for `path` at the origin's address from `ns`: (seconds, bytes).
fn curl_one(ns: &Ns, path: &str) -> Result<(f64, usize)> {
    let out = ns.run(&[
        "curl",
        "-sS",
        "--fail",
        "--max-time",
        "120",
        "-o",
        "/dev/null",
        "-w",
        "%{time_total} %{size_download}",
        &format!("http://{}{path}", addr::ORIGIN),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "curl {path}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut words = text.split_whitespace();
    let secs = words.next().and_then(|w| w.parse().ok());
    let bytes = words.next().and_then(|w| w.parse().ok());
    match (secs, bytes) {
        (Some(s), Some(b)) => Ok((s, b)),
        _ => bail!("cannot read curl's -w output: {text}"),
    }
}

/// Fetch every path once from `lab`'s client with `curl --parallel`; the elapsed seconds.
/// Every transfer must answer 200.
fn curl_many(lab: &Lab, paths: &[String], work: &Path, tag: &str) -> Result<f64> {
    let config = work.join(format!("curl-{tag}.conf"));
    let mut text = String::new();
    for p in paths {
        text.push_str(&format!(
            "url = \"http://{}{p}\"\noutput = \"/dev/null\"\n",
            addr::ORIGIN
        ));
    }
    std::fs::write(&config, text)?;
    let started = Instant::now();
    let out = lab.client.run(&[
        "curl",
        "--parallel",
        "--parallel-max",
        &PARALLEL.to_string(),
        "-sS",
        "--max-time",
        "60",
        "-w",
        "%{http_code}\\n",
        "-K",
        &config.display().to_string(),
    ]);
    let secs = started.elapsed().as_secs_f64();
    let codes = String::from_utf8_lossy(&out.stdout).into_owned();
    let ok = codes.lines().filter(|l| *l == "200").count();
    if !out.status.success() || ok != paths.len() {
        bail!(
            "curl --parallel ({tag}): {ok} of {} answered 200 ({}): {}",
            paths.len(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(secs)
}
