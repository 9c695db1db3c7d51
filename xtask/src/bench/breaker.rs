//! `bench breaker`: what a client gets from a dead origin, with the circuit breaker and without
//! (its peer: the same daemon with `[origins] breaker = false`), in one run.
//!
//! The origin (`tests/scripts/origin.py` in `origin`) first answers a ghost rule's request on
//! both of its addresses, so ghost mode has learned it; then it is killed. One address then
//! refuses connections (nothing listens), the other accepts and never answers
//! (`tests/scripts/blackhole.py`). `wrk` in `client` asks each address for a path nothing is
//! known about (breaker: the fast 503; without: the origin's failure, 502 or 504 after
//! `[http] response_timeout_ms`, set to 1 s here — the default is 60 s) and for the learned
//! path (ghost answers either way; without the breaker only after the failure). With the
//! breaker on, five failed requests open it before the measured run.
use std::path::Path;

use anyhow::{Result, bail};
use velocache_tests::{Daemon, Lab, addr, servers};

use super::{print_table, wrk};
use crate::util;

const CONNECTIONS: u32 = 32;

/// One measured load: a dead origin and what is asked of it.
struct Load {
    dead: &'static str,
    host: &'static str,
    answer: &'static str,
    path: &'static str,
}

const LOADS: &[Load] = &[
    Load {
        dead: "refuses",
        host: addr::ORIGIN,
        answer: "nothing known",
        path: "/other/x",
    },
    Load {
        dead: "refuses",
        host: addr::ORIGIN,
        answer: "ghost",
        path: "/api/item/1",
    },
    Load {
        dead: "never answers",
        host: addr::ORIGIN2,
        answer: "nothing known",
        path: "/other/x",
    },
    Load {
        dead: "never answers",
        host: addr::ORIGIN2,
        answer: "ghost",
        path: "/api/item/1",
    },
];

/// Run the benchmark.
pub fn run(seconds: u64) -> Result<()> {
    velocache_tests::require_tools(&["wrk", "python3", "curl"]);
    let lab = Lab::new();
    let www = tempfile::tempdir()?;
    std::fs::create_dir_all(www.path().join("api/item"))?;
    std::fs::write(www.path().join("api/item/1"), "{\"item\":1}\n")?;
    std::fs::write(
        www.path().join(".routes.json"),
        "{\"/api/item/1\": {\"headers\": {\"Cache-Control\": \"no-store\"}}}",
    )?;
    let rules = www.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"api\"\nmatch_path = \"/api/*\"\naction = \"cache\"\nghost = true\n",
    )?;
    let (with, with_rss) = measure(&lab, true, seconds, www.path(), &rules)?;
    let (without, without_rss) = measure(&lab, false, seconds, www.path(), &rules)?;

    println!(
        "\nbench breaker: wrk ({CONNECTIONS} connections) from `client` to a dead origin, {seconds} s per run, origin response timeout 1 s"
    );
    let rss = |k: Option<u64>| k.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    let mut rows = Vec::new();
    for (i, load) in LOADS.iter().enumerate() {
        for (mode, r, peak) in [
            ("breaker", with[i], with_rss),
            ("no breaker", without[i], without_rss),
        ] {
            rows.push(vec![
                format!("{}, {}", load.dead, load.answer),
                mode.to_string(),
                format!("{:.0}", r.requests_per_sec),
                format!("{:.2}", r.p99_ms),
                rss(peak),
                format!("{:.2}", with[i].requests_per_sec / r.requests_per_sec),
                r.errors.to_string(),
            ]);
        }
    }
    print_table(
        &[
            "origin, asked",
            "velocache",
            "req/s",
            "p99 ms",
            "peak RSS",
            "breaker / this",
            "non-2xx",
        ],
        &rows,
    );
    Ok(())
}

/// One daemon (breaker on or off): learn, kill the origin, measure every load.
fn measure(
    lab: &Lab,
    breaker: bool,
    seconds: u64,
    www: &Path,
    rules: &Path,
) -> Result<(Vec<wrk::WrkResult>, Option<u64>)> {
    let scripts = util::root().join("tests").join("scripts");
    let origin = lab.origin.spawn(&[
        "python3",
        &scripts.join("origin.py").display().to_string(),
        &www.display().to_string(),
        "80",
    ]);
    servers::wait_tcp(&lab.origin, "127.0.0.1", 80);
    let daemon = Daemon::start_env(
        lab,
        &format!(
            "[daemon]\nstats_interval_secs = 0\n[http]\nfsync = false\nresponse_timeout_ms = 1000\nconnect_timeout_ms = 1000\n[rules]\nfile = \"{}\"\n[origins]\nbreaker = {breaker}\nconsecutive_failures = 5\nopen_ms = 600000\n",
            rules.display()
        ),
        &[("RUST_LOG", "error,velocache::app=info")],
    );
    for host in [addr::ORIGIN, addr::ORIGIN2] {
        curl(lab, &format!("http://{host}/api/item/1"), true)?;
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(origin);
    let life = (seconds * LOADS.len() as u64 + 120).to_string();
    let _hole = lab.origin.spawn(&[
        "python3",
        &scripts.join("blackhole.py").display().to_string(),
        addr::ORIGIN2,
        "80",
        &life,
    ]);
    servers::wait_tcp(&lab.origin, addr::ORIGIN2, 80);
    let mut results = Vec::new();
    let mut tripped = Vec::new();
    for load in LOADS {
        if breaker && !tripped.contains(&load.host) {
            for _ in 0..5 {
                curl(lab, &format!("http://{}/trip", load.host), false)?;
            }
            tripped.push(load.host);
        }
        let url = format!("http://{}{}", load.host, load.path);
        results.push(wrk::run(
            &lab.client,
            &url,
            CONNECTIONS,
            seconds,
            &["--timeout", "5s"],
        )?);
    }
    let rss = servers::peak_rss_kib(daemon.pid());
    Ok((results, rss))
}

fn curl(lab: &Lab, url: &str, must_succeed: bool) -> Result<()> {
    let mut args = vec!["curl", "-sS", "-o", "/dev/null", "--max-time", "10"];
    if must_succeed {
        args.push("--fail");
    }
    args.push(url);
    let out = lab.client.run(&args);
    if must_succeed && !out.status.success() {
        bail!("{url}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
