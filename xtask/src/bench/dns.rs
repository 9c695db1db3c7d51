//! `bench dns`: VeloCache against dnsmasq and unbound, each a caching forwarder in `gw` to the
//! same upstream (unbound serving the test zones in `origin`), loaded by `dnsperf` in `client`.
//!
//! One run measures every server the same way, one after the other in the same lab:
//! 1. warm-up: two passes over the query file, so every answer is cached;
//! 2. throughput: `dnsperf` for `seconds` at full speed — cache hits only (queries/s);
//! 3. latency: `dnsperf -v` at a fixed 5 000 q/s for 3 s, every answer's latency recorded —
//!    p50 and p99 of a server that is not saturated (at saturation latency is just queueing);
//! 4. misses: one pass over names never asked before, at full speed (every query goes
//!    upstream; this measures the forwarding path, bounded by the upstream's own speed).
//!
//! VeloCache is reached the way it is deployed: clients ask the upstream's address and the
//! classifier steers the query to the daemon. It runs twice: with `[dns] kernel_answers` (hot
//! entries answered by the XDP program on the LAN interface, `XDP_TX`) and without (every query
//! answered by the daemon). dnsmasq and unbound listen on the gateway's LAN address, the way they
//! are deployed. Peak RSS is each server's VmHWM after its runs. The lab's veths are prepared for
//! XDP (GRO on the receiving ends) for every server alike.
//!
//! The XDP programs' own cost per frame is measured too, from the kernel's BPF statistics
//! during the XDP runs: what the kernel path could answer if the generator were not the limit
//! (it leaves out the driver's and the stack's share of a frame).
//!
//! On two cores the load generator is often the limit, so the hit run also reports CPU time:
//! dnsperf's own (its rusage as our child), the server process's (`/proc/PID/stat`), and the
//! machine's softirq time (`/proc/stat`), where XDP and the kernel's UDP receive path run — each
//! in percent of one core over the run.
use std::{fmt::Write as _, path::Path};

use anyhow::{Context as _, Result, bail};
use velocache_tests::{
    Background, Daemon, Lab, Ns, addr,
    dns::{dnsmasq_forwarder, unbound_forwarder, unbound_zone},
    servers,
};

use super::print_table;

/// Names in the hit mix: A for `h<i>.bench.lab` (70%), AAAA (20%), NXDOMAIN in test.lab (10%).
const HIT_NAMES: usize = 2_000;
/// Fresh names for the miss run.
const MISS_NAMES: usize = 20_000;
/// Rate of the latency run.
const LATENCY_QPS: u32 = 5_000;

/// What one dnsperf run reported.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Perf {
    pub(super) qps: f64,
    lost: u64,
    p50_us: f64,
    p99_us: f64,
}

pub(super) fn write_queries(path: &Path, prefix: &str, n: usize) -> Result<()> {
    let mut text = String::new();
    for i in 0..n {
        match i % 10 {
            0 => writeln!(text, "{prefix}nx{i}.test.lab A")?,
            1 | 2 => writeln!(text, "{prefix}h{i}.bench.lab AAAA")?,
            _ => writeln!(text, "{prefix}h{i}.bench.lab A")?,
        }
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

pub(super) fn dnsperf(
    ns: &Ns,
    server: &str,
    file: &Path,
    extra: &[&str],
) -> Result<(Perf, String)> {
    let file = file.display().to_string();
    let mut args = vec!["dnsperf", "-s", server, "-d", &file, "-t", "2"];
    args.extend_from_slice(extra);
    let out = ns.run(&args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "dnsperf failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut p = Perf::default();
    let mut latencies = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Queries per second:") {
            p.qps = v.trim().parse().context("queries per second")?;
        } else if let Some(v) = l.strip_prefix("Queries lost:") {
            p.lost = v
                .split_whitespace()
                .next()
                .unwrap_or("0")
                .parse()
                .unwrap_or(0);
        } else if let Some(Some(Ok(s))) = l
            .strip_prefix("> ")
            .map(|v| v.split_whitespace().last().map(str::parse::<f64>))
        {
            latencies.push(s * 1e6);
        }
    }
    if !latencies.is_empty() {
        latencies.sort_by(f64::total_cmp);
        let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
        p.p50_us = at(0.50);
        p.p99_us = at(0.99);
    }
    Ok((p, text))
}

/// CPU time used during one run, in percent of one core.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    generator: f64,
    server: f64,
    softirq: f64,
}

/// Clock ticks (USER_HZ) the machine spent in softirq, from `/proc/stat`.
fn softirq_ticks() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().next()?.split_whitespace().nth(7)?.parse().ok())
        .unwrap_or(0)
}

/// Ticks `pid` spent in user and system mode.
fn process_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            Some(after.get(11)?.parse::<u64>().ok()? + after.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// CPU seconds of the children this process has waited for (dnsperf runs as one).
fn children_cpu_secs() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN);
    usage.map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

struct Measured {
    name: &'static str,
    hits: Perf,
    cpu: Cpu,
    latency: Perf,
    misses: Perf,
    rss_kib: Option<u64>,
}

/// Run the same four steps against `server` (the address dnsperf asks); `pid` is the server
/// process whose peak RSS is read afterwards.
fn measure(
    lab: &Lab,
    name: &'static str,
    server: &str,
    pid: u32,
    files: &Files<'_>,
    seconds: u64,
) -> Result<Measured> {
    let secs = seconds.to_string();
    let load = ["-c", "8", "-q", "400"];
    dnsperf(
        &lab.client,
        server,
        files.hits,
        &["-n", "2", "-c", "8", "-q", "100"],
    )?;
    let hz = 100.0; // USER_HZ on Linux
    let before = (
        children_cpu_secs(),
        process_ticks(pid),
        softirq_ticks(),
        std::time::Instant::now(),
    );
    let (hits, _) = dnsperf(
        &lab.client,
        server,
        files.hits,
        &[&load[..], &["-l", &secs]].concat(),
    )?;
    let wall = before.3.elapsed().as_secs_f64().max(1e-3);
    let cpu = Cpu {
        generator: (children_cpu_secs() - before.0) / wall * 100.0,
        server: process_ticks(pid).saturating_sub(before.1) as f64 / hz / wall * 100.0,
        softirq: softirq_ticks().saturating_sub(before.2) as f64 / hz / wall * 100.0,
    };
    let qps = LATENCY_QPS.to_string();
    let (latency, _) = dnsperf(
        &lab.client,
        server,
        files.hits,
        &["-l", "3", "-Q", &qps, "-v"],
    )?;
    let (misses, _) = dnsperf(
        &lab.client,
        server,
        files.misses,
        &[&load[..], &["-n", "1"]].concat(),
    )?;
    let rss_kib = servers::peak_rss_kib(pid);
    println!(
        "  {name}: {:.0} q/s on hits (CPU: dnsperf {:.0}%, server {:.0}%, softirq {:.0}%), p50 {:.0} µs, p99 {:.0} µs, {:.0} q/s on misses",
        hits.qps,
        cpu.generator,
        cpu.server,
        cpu.softirq,
        latency.p50_us,
        latency.p99_us,
        misses.qps
    );
    Ok(Measured {
        name,
        hits,
        cpu,
        latency,
        misses,
        rss_kib,
    })
}

/// Nanoseconds per frame the XDP dispatcher (and the slot programs it tail-calls) spent, from
/// the kernel's own BPF statistics (`kernel.bpf_stats_enabled`, switched on by the caller for
/// the runs to count): `run_time_ns / run_cnt` of the newest `velocache_xdp` program.
fn xdp_ns_per_frame() -> Option<f64> {
    let shown = std::process::Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .ok()?;
    let progs: serde_json::Value = serde_json::from_slice(&shown.stdout).ok()?;
    let prog = progs
        .as_array()?
        .iter()
        .filter(|p| p["name"] == "velocache_xdp")
        .max_by_key(|p| p["id"].as_u64())?;
    let (ns, runs) = (prog["run_time_ns"].as_f64()?, prog["run_cnt"].as_f64()?);
    (runs > 0.0).then(|| ns / runs)
}

/// Turn the kernel's per-program run-time statistics on or off.
fn bpf_stats(on: bool) {
    let _ = std::fs::write(
        "/proc/sys/kernel/bpf_stats_enabled",
        if on { "1" } else { "0" },
    );
}

struct Files<'a> {
    hits: &'a Path,
    misses: &'a Path,
}

/// Run the benchmark.
pub fn run(seconds: u64) -> Result<()> {
    velocache_tests::require_tools(&["dnsperf", "dnsmasq", "unbound", "dig"]);
    let work = tempfile::tempdir()?;
    let hit_file = work.path().join("hits.txt");
    write_queries(&hit_file, "", HIT_NAMES)?;
    let lab = Lab::new();
    velocache_tests::xdp::prepare_for_xdp(&lab);
    let _zone = unbound_zone(&lab.origin, work.path(), &[addr::ORIGIN], "");
    let mut results = Vec::new();

    // Each server gets its own never-asked names for the miss run.
    let miss_file = |tag: &str| -> Result<std::path::PathBuf> {
        let p = work.path().join(format!("misses-{tag}.txt"));
        write_queries(&p, &format!("{tag}-"), MISS_NAMES)?;
        Ok(p)
    };

    println!("bench dns: dnsperf from `client`, {seconds} s per throughput run");
    let mut program_ns: Option<f64> = None;
    for (name, tag, kernel) in [
        ("VeloCache (XDP)", "velocache-xdp", true),
        ("VeloCache (daemon)", "velocache", false),
    ] {
        let misses = miss_file(tag)?;
        let config = format!(
            "[daemon]\nstats_interval_secs = 0\n[dns]\nupstreams = [\"{}:53\"]\nkernel_answers = {kernel}\n",
            addr::ORIGIN
        );
        let daemon = Daemon::start_env(&lab, &config, &[("RUST_LOG", "warn,velocache::app=info")]);
        let files = Files {
            hits: &hit_file,
            misses: &misses,
        };
        if kernel {
            bpf_stats(true);
        }
        let measured = measure(&lab, name, addr::ORIGIN, daemon.pid(), &files, seconds);
        if kernel {
            program_ns = xdp_ns_per_frame();
            bpf_stats(false);
        }
        results.push(measured?);
    }
    {
        let misses = miss_file("dnsmasq")?;
        let server: Background = dnsmasq_forwarder(&lab.gw, addr::GW_LAN, addr::ORIGIN, 10_000);
        let files = Files {
            hits: &hit_file,
            misses: &misses,
        };
        results.push(measure(
            &lab,
            "dnsmasq",
            addr::GW_LAN,
            server.pid(),
            &files,
            seconds,
        )?);
    }
    {
        let misses = miss_file("unbound")?;
        let dir = work.path().join("unbound-fwd");
        std::fs::create_dir_all(&dir)?;
        let server = unbound_forwarder(&lab.gw, &dir, addr::GW_LAN, addr::ORIGIN);
        let files = Files {
            hits: &hit_file,
            misses: &misses,
        };
        results.push(measure(
            &lab,
            "unbound",
            addr::GW_LAN,
            server.pid(),
            &files,
            seconds,
        )?);
    }

    let ours = &results[0];
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2}", a / b)
        } else {
            "-".into()
        }
    };
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.name.to_string(),
                format!("{:.0}", r.hits.qps),
                if std::ptr::eq(r, ours) {
                    "-".into()
                } else {
                    ratio(ours.hits.qps, r.hits.qps)
                },
                format!("{:.0}", r.latency.p50_us),
                format!("{:.0}", r.latency.p99_us),
                format!("{:.0}", r.misses.qps),
                if std::ptr::eq(r, ours) {
                    "-".into()
                } else {
                    ratio(ours.misses.qps, r.misses.qps)
                },
                r.rss_kib
                    .map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
                format!(
                    "{:.0} / {:.0} / {:.0}",
                    r.cpu.generator, r.cpu.server, r.cpu.softirq
                ),
                (r.hits.lost + r.misses.lost).to_string(),
            ]
        })
        .collect();
    println!(
        "\nbench dns: {HIT_NAMES} names (70% A, 20% AAAA, 10% NXDOMAIN) cached; latency at {LATENCY_QPS} q/s; misses: {MISS_NAMES} new names; CPU in % of one core (2 cores)"
    );
    print_table(
        &[
            "server",
            "hits q/s",
            "VeloCache ×",
            "p50 µs",
            "p99 µs",
            "misses q/s",
            "VeloCache ×",
            "peak RSS",
            "CPU % on hits (dnsperf / server / softirq)",
            "lost",
        ],
        &rows,
    );
    match program_ns {
        Some(ns) => println!(
            "XDP programs (kernel.bpf_stats_enabled, every frame of the XDP runs): {ns:.0} ns per frame = {:.1} M frames/s per core of program time, {:.0}× unbound's hit rate above",
            1e3 / ns,
            1e9 / ns
                / results
                    .iter()
                    .find(|r| r.name == "unbound")
                    .map_or(f64::NAN, |r| r.hits.qps)
        ),
        None => println!(
            "XDP programs: run time not measured (bpftool or kernel statistics unavailable)"
        ),
    }
    Ok(())
}
