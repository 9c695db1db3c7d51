//! `bench datapath`: what the datapath costs a connection that crosses the gateway, from one
//! run, as ratios to direct forwarding (no VeloCache) measured in the same run:
//!
//! - **observed**: HTTPS that no rule names, with the daemon running — forwarded by the kernel,
//!   its ClientHello read and its bytes counted, never steered;
//! - **steered and spliced**: HTTPS to a destination in `[tls] steer_prefixes` that no rule
//!   decrypts — steered to the daemon, which reads the ClientHello and moves the bytes with
//!   `splice(2)` (the default); and the same with `[tls] kernel_relay = true`, where the two
//!   sockets are joined in the kernel (sockmap);
//! - **intercepted plain HTTP**: port 80 through the daemon's HTTP proxy.
//!
//! Each is measured with `wrk` from `client` against nginx in `origin` (TLS with a certificate
//! from a test CA for `bench.lab`, which the client's hosts file names): new connections per
//! second (1 KiB, `Connection: close`: a TCP and, for HTTPS, a TLS handshake each), a 64 MiB
//! transfer (4 connections, MB/s) and the p99 latency of a 1 KiB request on kept-alive
//! connections. Throughput ratios are scenario / direct, latency ratios direct / scenario, so
//! 1.00 means "as if VeloCache were not there" and smaller is worse everywhere. The TLS rows
//! compare with direct HTTPS, the HTTP row with direct HTTP.
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use velocache_tests::{Daemon, Lab, addr, servers};

use super::{print_table, wrk};

const HOST: &str = "bench.lab";

/// One load.
struct Load {
    name: &'static str,
    path: &'static str,
    connections: u32,
    extra: &'static [&'static str],
}

const NEW_CONNECTIONS: Load = Load {
    name: "new connections/s",
    path: "/1k.bin",
    connections: 32,
    extra: &["-H", "Connection: close"],
};
const BULK: Load = Load {
    name: "64 MiB MB/s",
    path: "/64m.bin",
    connections: 4,
    extra: &[],
};
const SMALL: Load = Load {
    name: "1 KiB p99 ms",
    path: "/1k.bin",
    connections: 32,
    extra: &[],
};

/// The three figures of one scenario.
#[derive(Clone, Copy)]
struct Figures {
    new_per_sec: f64,
    bulk_mb_per_sec: f64,
    p99_ms: f64,
    errors: u64,
}

fn write_file(path: &Path, len: usize) -> Result<()> {
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

fn measure(lab: &Lab, scheme: &str, seconds: u64) -> Result<Figures> {
    let url = |l: &Load| format!("{scheme}://{HOST}{}", l.path);
    let run = |l: &Load| wrk::run(&lab.client, &url(l), l.connections, seconds, l.extra);
    let new = run(&NEW_CONNECTIONS)?;
    let bulk = run(&BULK)?;
    let small = run(&SMALL)?;
    Ok(Figures {
        new_per_sec: new.requests_per_sec,
        bulk_mb_per_sec: bulk.mb_per_sec,
        p99_ms: small.p99_ms,
        errors: new.errors + bulk.errors + small.errors,
    })
}

/// Run the benchmark.
pub fn run(seconds: u64) -> Result<()> {
    velocache_tests::require_tools(&["wrk", "nginx"]);
    let www = tempfile::tempdir()?;
    write_file(&www.path().join("1k.bin"), 1024)?;
    write_file(&www.path().join("64m.bin"), 64 << 20)?;
    let work = tempfile::tempdir()?;
    let pki = servers::TestPki::new(work.path(), "bench CA");
    let (cert, key) = pki.server("bench", &[HOST, addr::ORIGIN]);
    let lab = Lab::new();
    lab.client.set_hosts(&[(HOST, addr::ORIGIN)]);
    let server = format!(
        "  server {{\n    listen 80 reuseport;\n    listen 443 ssl reuseport;\n    ssl_certificate {cert};\n    ssl_certificate_key {key};\n    root {root};\n  }}\n",
        cert = cert.display(),
        key = key.display(),
        root = www.path().display(),
    );
    let _origin = servers::run_nginx(&lab.origin, work.path(), "bench-datapath", &server, 443);

    let direct_https = measure(&lab, "https", seconds)?;
    let (observed, observed_rss) = with_daemon(&lab, "", || measure(&lab, "https", seconds))?;
    let steer = format!("[tls]\nsteer_prefixes = [\"{}/32\"]\n", addr::ORIGIN);
    let (spliced, spliced_rss) = with_daemon(&lab, &steer, || measure(&lab, "https", seconds))?;
    let relay = format!("{steer}kernel_relay = true\n");
    let (relayed, relayed_rss) = with_daemon(&lab, &relay, || measure(&lab, "https", seconds))?;
    let direct_http = measure(&lab, "http", seconds)?;
    let (intercepted, intercepted_rss) = with_daemon(&lab, "", || measure(&lab, "http", seconds))?;

    let mut rows = Vec::new();
    for (scenario, f, base, rss) in [
        (
            "direct forwarding (HTTPS)",
            direct_https,
            direct_https,
            None,
        ),
        (
            "observed, not steered (SNI logged)",
            observed,
            direct_https,
            observed_rss,
        ),
        (
            "steered and spliced (splice(2), default)",
            spliced,
            direct_https,
            spliced_rss,
        ),
        (
            "steered and spliced (kernel relay)",
            relayed,
            direct_https,
            relayed_rss,
        ),
        ("direct forwarding (HTTP)", direct_http, direct_http, None),
        (
            "intercepted plain HTTP",
            intercepted,
            direct_http,
            intercepted_rss,
        ),
    ] {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        rows.push(vec![
            scenario.to_string(),
            format!(
                "{:.0} ({:.2})",
                f.new_per_sec,
                ratio(f.new_per_sec, base.new_per_sec)
            ),
            format!(
                "{:.0} ({:.2})",
                f.bulk_mb_per_sec,
                ratio(f.bulk_mb_per_sec, base.bulk_mb_per_sec)
            ),
            format!("{:.2} ({:.2})", f.p99_ms, ratio(base.p99_ms, f.p99_ms)),
            rss.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
            f.errors.to_string(),
        ]);
    }
    println!(
        "\nbench datapath: wrk from `client` to nginx in `origin` ({HOST}), {seconds} s per run; \
         (ratio to direct: throughput scenario/direct, latency direct/scenario)"
    );
    print_table(
        &[
            "path",
            NEW_CONNECTIONS.name,
            BULK.name,
            SMALL.name,
            "daemon peak RSS",
            "errors",
        ],
        &rows,
    );
    if [
        observed,
        spliced,
        relayed,
        intercepted,
        direct_http,
        direct_https,
    ]
    .iter()
    .any(|f| f.errors > 0)
    {
        println!("warning: some runs had errors (see the last column)");
    }
    Ok(())
}

/// Run `f` with a daemon in `gw` configured with `extra`; return its result and the daemon's
/// peak RSS in KiB.
fn with_daemon<T>(
    lab: &Lab,
    extra: &str,
    f: impl FnOnce() -> Result<T>,
) -> Result<(T, Option<u64>)> {
    // Bench the datapath, not logging: flow lines are `info`, left out like every other row's.
    let daemon = Daemon::start_env(
        lab,
        &format!("[daemon]\nstats_interval_secs = 0\n[http]\nfsync = false\n{extra}"),
        &[("RUST_LOG", "warn,velocache::app=info")],
    );
    let result = f()?;
    let rss = servers::peak_rss_kib(daemon.pid());
    let mut daemon = daemon;
    if daemon.try_wait().is_some() {
        bail!("the daemon exited during the run:\n{}", daemon.log_text());
    }
    drop(daemon);
    Ok((result, rss))
}
