//! `bench plugins`: what the WebAssembly plugins cost, as ratios to the same daemon without
//! plugins in the same run.
//!
//! The daemon runs once per plugin set — none, the no-op plugin (every hook, decides nothing;
//! DNS without `see_hits`), and the examples (the DNS blocklist with 1 000 names none of the
//! queries match; the header rewriter adding a request and a response header) — in the same lab:
//! - DNS miss path: `dnsperf` from `client` over 20 000 never-asked names (unbound in `origin`
//!   answers them), one pass at full speed after a warm-up pass over 5 000 others: the plugin is
//!   called on every query.
//! - DNS hits: the same 2 000 names asked over and over (all cached) for `seconds`: a plugin that
//!   does not ask to see hits must leave the hit rate where it was.
//! - HTTP request path: `wrk` on a cached 1 KiB object for `seconds`: the request hook on every
//!   request.
//! - Per call: the plugin's own `velocache_plugin_call_seconds` (sum / count) per hook, read from
//!   `/metrics` after the runs: the time inside the call, with the request conversion.
//!
//! Kernel DNS answers are off (`kernel_answers = false`), so every hit reaches the daemon in
//! every run. The SIP INVITE rows (sipp calls through the gateway: no plugin, noop,
//! sip-screener) come from `plugins_sip`.
use std::{fmt::Write as _, path::Path};

use anyhow::{Context as _, Result};
use velocache_tests::{Daemon, Lab, addr, dns::unbound_zone, servers};

use super::{dns, print_table, wrk};

/// Names in the miss runs (each run its own, never asked before).
const MISS_NAMES: usize = 20_000;
/// Names in each setup's warm-up pass before its miss run.
const WARM_NAMES: usize = 5_000;
/// Names in the hit runs.
const HIT_NAMES: usize = 2_000;
/// Names in the blocklist (none of them asked).
const BLOCKLIST_NAMES: usize = 1_000;

/// One plugin set the daemon runs with.
struct Setup {
    name: &'static str,
    /// (built plugin, manifest) pairs to install.
    plugins: Vec<(&'static str, String)>,
}

fn setups() -> Vec<Setup> {
    let mut blocklist =
        String::from("name = \"dns-blocklist\"\nhooks = [\"dns\"]\n\n[config]\nnames = [\n");
    for i in 0..BLOCKLIST_NAMES {
        let _ = writeln!(blocklist, "  \"blocked{i}.example\",");
    }
    blocklist.push_str("]\n");
    vec![
        Setup {
            name: "no plugin",
            plugins: vec![],
        },
        Setup {
            name: "noop",
            plugins: vec![(
                "noop",
                "name = \"noop\"\nhooks = [\"dns\", \"http\"]\n".to_string(),
            )],
        },
        Setup {
            name: "dns-blocklist",
            plugins: vec![("dns-blocklist", blocklist)],
        },
        Setup {
            name: "header-rewriter",
            plugins: vec![(
                "header-rewriter",
                "name = \"header-rewriter\"\nhooks = [\"http\"]\n\n[config]\nrequest_add = [\"X-Bench: 1\"]\nresponse_add = [\"X-Rewritten: 1\"]\n".to_string(),
            )],
        },
    ]
}

/// What one plugin set measured.
struct Measured {
    name: &'static str,
    dns_miss_qps: f64,
    dns_hit_qps: f64,
    http_rps: f64,
    /// (plugin, hook, µs per call, calls).
    per_call: Vec<(String, String, f64, u64)>,
    rss_kib: Option<u64>,
}

/// Mean call time per (plugin, hook) from the OpenMetrics text.
fn per_call(metrics: &str) -> Vec<(String, String, f64, u64)> {
    let label = |line: &str, key: &str| -> Option<String> {
        let start = line.find(&format!("{key}=\""))? + key.len() + 2;
        let end = start + line[start..].find('"')?;
        Some(line[start..end].to_string())
    };
    let value = |line: &str| -> Option<f64> { line.rsplit(' ').next()?.parse().ok() };
    let mut sums = Vec::new();
    for line in metrics.lines() {
        if line.starts_with("velocache_plugin_call_seconds_sum{")
            && let (Some(p), Some(h), Some(v)) =
                (label(line, "plugin"), label(line, "hook"), value(line))
        {
            sums.push((p, h, v));
        }
    }
    sums.into_iter()
        .filter_map(|(p, h, sum)| {
            let count = metrics.lines().find_map(|l| {
                (l.starts_with("velocache_plugin_call_seconds_count{")
                    && label(l, "plugin").as_deref() == Some(&p)
                    && label(l, "hook").as_deref() == Some(&h))
                .then(|| value(l))
                .flatten()
            })?;
            (count > 0.0).then(|| (p, h, sum / count * 1e6, count as u64))
        })
        .collect()
}

fn measure(lab: &Lab, setup: &Setup, work: &Path, hits: &Path, seconds: u64) -> Result<Measured> {
    let dir = work.join(format!("plugins-{}", setup.name.replace(' ', "-")));
    std::fs::create_dir_all(&dir)?;
    for (plugin, manifest) in &setup.plugins {
        velocache_tests::plugins::install(&dir, plugin, plugin, manifest);
    }
    let config = format!(
        "[daemon]\nstats_interval_secs = 0\n[dns]\nupstreams = [\"{}:53\"]\nkernel_answers = false\n[plugins]\ndir = \"{}\"\n",
        addr::ORIGIN,
        dir.display()
    );
    let daemon = Daemon::start_env(lab, &config, &[("RUST_LOG", "warn,velocache::app=info")]);
    let tag = setup.name.replace(' ', "-");
    let misses = work.join(format!("misses-{tag}.txt"));
    dns::write_queries(&misses, &format!("{tag}-"), MISS_NAMES)?;
    let load = ["-c", "8", "-q", "400"];
    // A warm-up pass over names of its own, so every setup's measured pass starts alike (the
    // daemon's upstream sockets, the upstream's own caches, ARP).
    let warm = work.join(format!("warm-{tag}.txt"));
    dns::write_queries(&warm, &format!("warm-{tag}-"), WARM_NAMES)?;
    dns::dnsperf(
        &lab.client,
        addr::ORIGIN,
        &warm,
        &[&load[..], &["-n", "1"]].concat(),
    )?;
    let (miss, _) = dns::dnsperf(
        &lab.client,
        addr::ORIGIN,
        &misses,
        &[&load[..], &["-n", "1"]].concat(),
    )?;
    // Warm the hit names, then measure hits only.
    dns::dnsperf(
        &lab.client,
        addr::ORIGIN,
        hits,
        &["-n", "2", "-c", "8", "-q", "100"],
    )?;
    let secs = seconds.to_string();
    let (hit, _) = dns::dnsperf(
        &lab.client,
        addr::ORIGIN,
        hits,
        &[&load[..], &["-l", &secs]].concat(),
    )?;
    let url = format!("http://{}/1k.bin", addr::ORIGIN);
    for _ in 0..2 {
        lab.client
            .run_ok(&["curl", "-sS", "--fail", "-o", "/dev/null", &url]);
    }
    let http = wrk::run(&lab.client, &url, 32, seconds, &[])?;
    let metrics = String::from_utf8_lossy(&daemon.cli(lab, &["metrics"]).stdout).into_owned();
    let rss_kib = servers::peak_rss_kib(daemon.pid());
    println!(
        "  {}: DNS misses {:.0} q/s, DNS hits {:.0} q/s, HTTP {:.0} req/s",
        setup.name, miss.qps, hit.qps, http.requests_per_sec
    );
    Ok(Measured {
        name: setup.name,
        dns_miss_qps: miss.qps,
        dns_hit_qps: hit.qps,
        http_rps: http.requests_per_sec,
        per_call: per_call(&metrics),
        rss_kib,
    })
}

/// Run the benchmark.
pub fn run(seconds: u64) -> Result<()> {
    velocache_tests::require_tools(&["dnsperf", "unbound", "wrk", "nginx", "curl"]);
    crate::plugins::build().context("building the plugins")?;
    let work = tempfile::tempdir()?;
    let hits = work.path().join("hits.txt");
    dns::write_queries(&hits, "hit-", HIT_NAMES)?;
    let www = work.path().join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("1k.bin"), vec![b'x'; 1024])?;
    let lab = Lab::new();
    let _zone = unbound_zone(&lab.origin, work.path(), &[addr::ORIGIN], "");
    let _origin = super::http::origin(&lab.origin, &www, work.path())?;

    println!("bench plugins: dnsperf and wrk from `client`, {seconds} s per throughput run");
    let mut all = Vec::new();
    for setup in setups() {
        all.push(measure(&lab, &setup, work.path(), &hits, seconds)?);
    }
    let base = &all[0];
    let ratio = |ours: f64, theirs: f64| {
        if theirs > 0.0 {
            format!("{:.2}", ours / theirs)
        } else {
            "-".into()
        }
    };
    let us = |m: &Measured, hook: &str| {
        m.per_call
            .iter()
            .find(|(_, h, _, _)| h == hook)
            .map_or("-".to_string(), |(_, _, us, _)| format!("{us:.1}"))
    };
    let rss = |m: &Measured| {
        m.rss_kib
            .map_or("-".into(), |k| format!("{} MiB", k / 1024))
    };
    let mut rows = Vec::new();
    for m in &all {
        rows.push(vec![
            "DNS miss path".into(),
            m.name.into(),
            format!("{:.0} q/s", m.dns_miss_qps),
            ratio(m.dns_miss_qps, base.dns_miss_qps),
            us(m, "dns"),
            rss(m),
        ]);
    }
    for m in all.iter().take(2) {
        rows.push(vec![
            "DNS hits (plugin without see_hits)".into(),
            m.name.into(),
            format!("{:.0} q/s", m.dns_hit_qps),
            ratio(m.dns_hit_qps, base.dns_hit_qps),
            "-".into(),
            rss(m),
        ]);
    }
    for m in &all {
        rows.push(vec![
            "HTTP request path (1 KiB hits)".into(),
            m.name.into(),
            format!("{:.0} req/s", m.http_rps),
            ratio(m.http_rps, base.http_rps),
            us(m, "http"),
            rss(m),
        ]);
    }
    // SIP INVITEs (sipp, no plugin / noop / sip-screener): `plugins_sip`.
    rows.extend(super::plugins_sip::rows(
        &lab,
        work.path(),
        seconds,
        per_call,
    )?);
    println!();
    print_table(
        &[
            "path",
            "plugins",
            "throughput",
            "vs no plugin",
            "µs per call",
            "daemon peak RSS",
        ],
        &rows,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_call_time_from_the_histogram() {
        let text = "velocache_plugin_call_seconds_sum{plugin=\"noop\",hook=\"dns\"} 0.02\nvelocache_plugin_call_seconds_count{plugin=\"noop\",hook=\"dns\"} 10000\nvelocache_plugin_call_seconds_bucket{plugin=\"noop\",hook=\"dns\",le=\"0.000001\"} 0\n";
        let got = per_call(text);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "noop");
        assert!((got[0].2 - 2.0).abs() < 1e-9, "{got:?}");
        assert_eq!(got[0].3, 10_000);
    }
}
