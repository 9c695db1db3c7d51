//! `bench rtp`: RTP relaying, four ways in one run, for N concurrent streams of 20 ms packets
//! from `client` to `origin` through `gw`:
//!
//! 1. plain kernel forwarding (no VeloCache) — the floor;
//! 2. VeloCache's XDP fast path, the calls set up through the daemon over SIP (observation:
//!    the same 5-tuples, forwarded by the XDP program instead of the stack);
//! 3. VeloCache with media anchoring (the kernel rewrites to the real peer);
//! 4. rtpengine in userspace mode (`--table=-1`: this kernel cannot load its module), calls
//!    created over its ng protocol — the job anchoring does, done in userspace.
//!
//! The load is `rtp-load` (the tests crate's lab tool): one socket per stream, each packet
//! carrying its send time, so the receiver in `origin` measures one-way latency on the shared
//! monotonic clock. Reported per path: offered and delivered packets/s, loss, latency p50/p99,
//! the CPU it took to move the load (generator, receiver, relay process and softirq time —
//! kernel forwarding and XDP run there or inline in the sender's system calls; the shared
//! machine's other processes do not count), and the relay's peak RSS; then the ratios.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use velocache_tests::{Background, Daemon, Lab, Ns, addr, servers, xdp};

use super::print_table;
use crate::util;

const STREAM_COUNTS: [usize; 2] = [100, 1000];
const RECEIVER: &str = "10.77.2.2:7000";
const BASE_PORT: &str = "20000";

#[derive(Debug, Clone, Default)]
struct Measure {
    offered_pps: f64,
    delivered_pps: f64,
    loss_pct: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_cores: f64,
    rss_kib: Option<u64>,
}

/// Build `rtp-load` and return its path.
fn build_tool() -> Result<PathBuf> {
    util::run(util::cargo().args([
        "build",
        "--release",
        "-p",
        "velocache-tests",
        "--bin",
        "rtp-load",
    ]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::root().join("target"));
    Ok(target.join("release/rtp-load"))
}

/// Softirq time of all CPUs, in clock ticks (where forwarding, XDP and veth delivery run).
fn softirq_ticks() -> u64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    text.lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .nth(7)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0)
}

/// User + system time of a process (all threads), in clock ticks.
fn process_ticks(pid: Option<u32>) -> u64 {
    let Some(pid) = pid else { return 0 };
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at `state`.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    f.iter().sum()
}

fn json(text: &str) -> Result<Value> {
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("no JSON in `{text}`"))?;
    Ok(serde_json::from_str(line)?)
}

/// Run one load through whatever is set up in `lab` and measure it. `relay` is the relaying
/// process (daemon, rtpengine) whose CPU time counts along with the machine's softirq time.
fn measure(
    lab: &Lab,
    tool: &Path,
    streams: usize,
    seconds: u64,
    target: &str,
    relay: Option<u32>,
) -> Result<Measure> {
    let tool = tool.display().to_string();
    let mut receiver = lab
        .origin
        .spawn(&[&tool, "recv", RECEIVER, &(seconds + 60).to_string()]);
    std::thread::sleep(Duration::from_millis(300));
    // CPU use is measured from the first packet to the last (call setup excluded).
    let mut sender = lab.client.spawn(&[
        &tool,
        "send",
        addr::CLIENT,
        BASE_PORT,
        &streams.to_string(),
        &seconds.to_string(),
        target,
    ]);
    let started = Instant::now();
    while !sender.stdout().contains("\"sending\"") {
        if sender.try_wait().is_some() || started.elapsed() > Duration::from_secs(120) {
            bail!(
                "rtp-load send did not start sending: {}{}",
                sender.stdout(),
                sender.stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // The whole cost of moving the load: sender, receiver, relay process, and softirq time
    // (forwarding and XDP run there or inline in the sender's system calls). Generator and
    // receiver cost the same on every path; other processes on the shared machine do not count.
    let procs = [Some(sender.pid()), Some(receiver.pid()), relay];
    let cpu = |procs: &[Option<u32>]| {
        softirq_ticks() + procs.iter().map(|p| process_ticks(*p)).sum::<u64>()
    };
    let t0 = Instant::now();
    let cpu0 = cpu(&procs);
    while !sender.stdout().contains("\"sent\"") {
        if sender.try_wait().is_some() || t0.elapsed() > Duration::from_secs(seconds + 60) {
            bail!(
                "rtp-load send ended without a report: {}{}",
                sender.stdout(),
                sender.stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let cpu1 = cpu(&procs);
    let ticks_per_sec = 100.0; // USER_HZ
    let cpu_cores = (cpu1.saturating_sub(cpu0)) as f64 / ticks_per_sec / t0.elapsed().as_secs_f64();
    let status = sender
        .wait_timeout(Duration::from_secs(10))
        .context("rtp-load send did not exit")?;
    let sent_text = sender.stdout();
    if !status.success() {
        bail!("rtp-load send failed: {sent_text}{}", sender.stderr());
    }
    let sent = json(&sent_text)?;
    if receiver
        .wait_timeout(Duration::from_secs(seconds + 70))
        .is_none()
    {
        bail!("the receiver did not finish");
    }
    let got = json(&receiver.stdout()).with_context(|| receiver.stderr())?;
    let n_sent = sent["sent"].as_f64().unwrap_or(0.0);
    let n_got = got["received"].as_f64().unwrap_or(0.0);
    let secs = sent["secs"].as_f64().unwrap_or(1.0).max(0.001);
    Ok(Measure {
        offered_pps: n_sent / secs,
        delivered_pps: n_got / secs,
        loss_pct: if n_sent > 0.0 {
            (1.0 - n_got / n_sent).max(0.0) * 100.0
        } else {
            100.0
        },
        p50_us: got["latency_us_p50"].as_f64().unwrap_or(0.0),
        p99_us: got["latency_us_p99"].as_f64().unwrap_or(0.0),
        cpu_cores,
        rss_kib: None,
    })
}

fn wait_udp(ns: &Ns, port: u16) -> Result<()> {
    for _ in 0..200 {
        if ns.run_ok(&["ss", "-uln"]).contains(&format!(":{port} ")) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on UDP {port} in {}", ns.name())
}

fn uas(lab: &Lab, tool: &Path) -> Result<Background> {
    let uas = lab.origin.spawn(&[
        &tool.display().to_string(),
        "uas",
        &format!("{}:5060", addr::ORIGIN),
        RECEIVER,
    ]);
    wait_udp(&lab.origin, 5060)?;
    Ok(uas)
}

fn velocache(
    lab: &Lab,
    tool: &Path,
    streams: usize,
    seconds: u64,
    anchor: bool,
) -> Result<Measure> {
    let daemon = Daemon::start_env(
        lab,
        &format!(
            "[daemon]\nstats_interval_secs = 0\n[sip]\nmedia_interfaces = [\"{}\", \"{}\"]\nanchor_media = {anchor}\nrtp_idle_timeout_secs = 60\n",
            addr::LAN_IF,
            addr::WAN_IF
        ),
        &[("RUST_LOG", "warn,velocache::app=info")],
    );
    let _uas = uas(lab, tool)?;
    let mut m = measure(
        lab,
        tool,
        streams,
        seconds,
        &format!("sip:{}:5060", addr::ORIGIN),
        Some(daemon.pid()),
    )?;
    m.rss_kib = servers::peak_rss_kib(daemon.pid());
    Ok(m)
}

fn rtpengine(lab: &Lab, tool: &Path, streams: usize, seconds: u64, dir: &Path) -> Result<Measure> {
    let engine = lab.gw.spawn(&[
        "rtpengine",
        "--foreground",
        "--log-stderr",
        "--log-level=4",
        "--table=-1",
        &format!("--interface={}", addr::GW_WAN),
        "--listen-ng=127.0.0.1:2223",
        "--port-min=40000",
        "--port-max=49999",
    ]);
    wait_udp(&lab.gw, 2223).with_context(|| engine.stderr())?;
    let file = dir.join(format!("rtpengine-{streams}.txt"));
    let out = lab.gw.run(&[
        &tool.display().to_string(),
        "rtpengine",
        "127.0.0.1:2223",
        &streams.to_string(),
        addr::CLIENT,
        BASE_PORT,
        RECEIVER,
        &file.display().to_string(),
    ]);
    if !out.status.success() {
        bail!(
            "creating rtpengine calls failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            engine.stderr()
        );
    }
    let mut m = measure(
        lab,
        tool,
        streams,
        seconds,
        &format!("file:{}", file.display()),
        Some(engine.pid()),
    )?;
    m.rss_kib = servers::peak_rss_kib(engine.pid());
    Ok(m)
}

/// Run the benchmark.
pub fn run(seconds: u64) -> Result<()> {
    velocache_tests::require_tools(&["rtpengine", "ethtool", "ss", "sipp"]);
    let tool = build_tool()?;
    let dir = tempfile::tempdir()?;
    let lab = Lab::new();
    xdp::prepare_for_xdp(&lab);

    let mut rows = Vec::new();
    let mut summary = Vec::new();
    for streams in STREAM_COUNTS {
        let kernel = measure(
            &lab,
            &tool,
            streams,
            seconds,
            &format!("dst:{RECEIVER}"),
            None,
        )?;
        let xdp = velocache(&lab, &tool, streams, seconds, false)?;
        let anchored = velocache(&lab, &tool, streams, seconds, true)?;
        let engine = rtpengine(&lab, &tool, streams, seconds, dir.path())?;
        for (path, m) in [
            ("kernel forwarding", &kernel),
            ("VeloCache XDP fast path", &xdp),
            ("VeloCache XDP, anchored", &anchored),
            ("rtpengine (userspace)", &engine),
        ] {
            rows.push(vec![
                streams.to_string(),
                path.to_string(),
                format!("{:.0}", m.offered_pps),
                format!("{:.0}", m.delivered_pps),
                format!("{:.2}", m.loss_pct),
                format!("{:.0}", m.p50_us),
                format!("{:.0}", m.p99_us),
                format!("{:+.0}", m.p50_us - kernel.p50_us),
                format!("{:.2}", m.cpu_cores),
                m.rss_kib
                    .map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
            ]);
        }
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        summary.push(format!(
            "{streams} streams: anchored XDP vs rtpengine — delivered {:.2}x, p99 latency {:.2}x, CPU {:.2}x, RSS {:.2}x; XDP vs kernel forwarding — delivered {:.2}x, p50 latency {:+.0} us",
            ratio(anchored.delivered_pps, engine.delivered_pps),
            ratio(anchored.p99_us, engine.p99_us),
            ratio(anchored.cpu_cores, engine.cpu_cores),
            ratio(
                anchored.rss_kib.unwrap_or(0) as f64,
                engine.rss_kib.unwrap_or(0) as f64
            ),
            ratio(xdp.delivered_pps, kernel.delivered_pps),
            xdp.p50_us - kernel.p50_us,
        ));
    }
    println!(
        "\nbench rtp: N streams of 20 ms RTP (172-byte packets) client -> origin through gw, {seconds} s per run"
    );
    print_table(
        &[
            "streams",
            "path",
            "offered pps",
            "delivered pps",
            "loss %",
            "p50 us",
            "p99 us",
            "p50 added us",
            "CPU (cores)",
            "relay peak RSS",
        ],
        &rows,
    );
    println!();
    for s in summary {
        println!("{s}");
    }
    Ok(())
}
