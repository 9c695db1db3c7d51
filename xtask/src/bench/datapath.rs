//! `bench datapath`: what the datapath costs. The same HTTP loads from `client` to an nginx
//! origin, three ways in one run: forwarded with no VeloCache, with the classifier attached but
//! the client bypassed (the per-packet lookup cost), and intercepted and spliced by the daemon.
use std::path::Path;

use anyhow::{Context as _, Result};
use velocache_tests::{Daemon, Lab, addr, servers};

use super::{print_table, wrk};

struct Workload {
    name: &'static str,
    path: &'static str,
    connections: u32,
    extra: &'static [&'static str],
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "1 KiB, keep-alive",
        path: "/1k.bin",
        connections: 32,
        extra: &[],
    },
    Workload {
        name: "1 KiB, new connection each",
        path: "/1k.bin",
        connections: 32,
        extra: &["-H", "Connection: close"],
    },
    Workload {
        name: "64 MiB bulk",
        path: "/64m.bin",
        connections: 4,
        extra: &[],
    },
];

fn write_file(path: &Path, len: usize) -> Result<()> {
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

/// Run the benchmark.
pub fn run(seconds: u64) -> Result<()> {
    velocache_tests::require_tools(&["wrk", "nginx"]);
    let www = tempfile::tempdir()?;
    write_file(&www.path().join("1k.bin"), 1024)?;
    write_file(&www.path().join("64m.bin"), 64 << 20)?;
    let work = tempfile::tempdir()?;
    let lab = Lab::new();
    let _origin = servers::nginx_static(&lab.origin, www.path(), 80, work.path());

    let mut rows = Vec::new();
    for w in WORKLOADS {
        let url = format!("http://{}{}", addr::ORIGIN, w.path);
        let direct = wrk::run(&lab.client, &url, w.connections, seconds, w.extra)?;

        let bypass_cfg = format!("[datapath]\nbypass_clients = [\"{}/24\"]\n", addr::CLIENT);
        let (bypassed, _) = with_daemon(&lab, &bypass_cfg, || {
            wrk::run(&lab.client, &url, w.connections, seconds, w.extra)
        })?;
        let (intercepted, rss) = with_daemon(&lab, "", || {
            wrk::run(&lab.client, &url, w.connections, seconds, w.extra)
        })?;

        for (scenario, r, rss) in [
            ("direct forwarding", direct, None),
            ("classifier, bypassed", bypassed, None),
            ("intercepted pass-through", intercepted, rss),
        ] {
            rows.push(vec![
                w.name.to_string(),
                scenario.to_string(),
                format!("{:.0}", r.requests_per_sec),
                format!("{:.1}", r.mb_per_sec),
                format!("{:.2}", r.p99_ms),
                format!("{:.2}", r.requests_per_sec / direct.requests_per_sec),
                rss.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
                r.errors.to_string(),
            ]);
        }
    }
    println!("\nbench datapath: wrk from `client` to nginx in `origin`, {seconds} s per run");
    print_table(
        &[
            "workload",
            "path",
            "req/s",
            "MB/s",
            "p99 ms",
            "ratio vs direct",
            "daemon peak RSS",
            "errors",
        ],
        &rows,
    );
    Ok(())
}

/// Run `f` with a daemon in `gw` configured with `extra`; return its result and the daemon's
/// peak RSS in KiB.
fn with_daemon<T>(
    lab: &Lab,
    extra: &str,
    f: impl FnOnce() -> Result<T>,
) -> Result<(T, Option<u64>)> {
    // Bench the datapath, not logging.
    let daemon = Daemon::start_env(
        lab,
        &format!("[daemon]\nstats_interval_secs = 0\n{extra}"),
        &[("RUST_LOG", "warn,velocache::app=info")],
    );
    let result = f()?;
    let rss = servers::peak_rss_kib(daemon.pid());
    drop(daemon);
    Ok((result, rss))
}
