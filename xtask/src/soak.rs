//! `cargo xtask soak --minutes N`: the release daemon under mixed load for N minutes, with
//! reloads and one restart, and whether what it holds stays flat.
//!
//! In the lab: nginx (HTTP, and TLS for `secure.lab` from a test CA) and dnsmasq in `origin`,
//! sipp answering calls there; in `client`, one thread per kind of traffic in a loop — DNS
//! queries (`dig`, names that hit and miss), HTTP GETs of a rotating set of URLs larger than
//! the cache (fills, hits, evictions), HTTPS spliced (`curl -k` to the origin's address, no
//! rule), HTTPS intercepted (a `cache` rule for `secure.lab`, the client trusting the daemon's
//! CA) — the origin is in `[tls] steer_prefixes`, so both are steered rather than observed —
//! and SIP calls with RTP through the fast path. A SIGHUP reload every fifth of the run;
//! a restart (SIGINT, start again on the same state) at the middle.
//!
//! The release daemon is built unless `VELOCACHE_BIN` names one. Every `--sample-secs` a row: RSS, open descriptors, entries in the daemon's BPF hash maps,
//! files in the cache's `tmp/`, warnings and errors the daemon logged and requests the clients
//! saw fail since the last row, and requests done. At the end each series is called flat or
//! not. **Flat**: after warm-up (the first 10 % of the samples, at least one), the last third's
//! maximum is at most the first third's maximum plus 5 % plus a small absolute slack (RSS
//! 4 MiB, descriptors 16, map entries 64, temporary files 4); for the error series, the last
//! third's rate is at most the first third's plus one per sample. The restart resets RSS and
//! descriptors, so the series are compared on the second daemon's samples. Finally the logs
//! and every admin API answer are searched for the CA's private key.
use std::{
    collections::BTreeMap,
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use velocache_tests::{
    Daemon, Lab, Ns, addr, servers,
    sipp::{self, Answer, PCAP_DIR},
    xdp,
};

use crate::{setup, util};

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// One kind of client traffic: run request `i`, say whether it succeeded.
type Load = Box<dyn Fn(&Ns, u64) -> bool + Send>;

/// One row of the table.
#[derive(Clone, Debug)]
struct Sample {
    minute: f64,
    rss_kib: u64,
    fds: u64,
    map_entries: u64,
    tmp_files: u64,
    daemon_warnings: u64,
    client_failures: u64,
    requests: u64,
    generation: u32,
}

/// Run the soak.
pub fn run(minutes: u64, sample_secs: u64) -> Result<()> {
    util::require_root("soak")?;
    setup::run(setup::Profile::Test)?;
    // `VELOCACHE_BIN` soaks a given build (e.g. a debug one); else the release daemon.
    let bin = match std::env::var_os("VELOCACHE_BIN") {
        Some(p) => std::path::PathBuf::from(p),
        None => util::build_daemon(true)?,
    };
    println!("soak: daemon {}", bin.display());
    velocache_tests::set_velocache_bin(bin);
    velocache_tests::require_tools(&["curl", "dig", "dnsmasq", "nginx", "sipp", "bpftool"]);

    let lab = Lab::new();
    xdp::prepare_for_xdp(&lab);
    let work = tempfile::tempdir()?;
    let www = work.path().join("www");
    std::fs::create_dir_all(&www)?;
    for i in 0..40u64 {
        write_blob(&www.join(format!("o{i}.bin")), 2_000 + i * 97_531, i);
    }
    write_blob(&www.join("big.bin"), 6 << 20, 99);
    let pki = servers::TestPki::new(work.path(), "soak CA");
    let (cert, key) = pki.server("secure", &["secure.lab", addr::ORIGIN]);
    let nginx_work = work.path().join("nginx");
    std::fs::create_dir_all(&nginx_work)?;
    let _http = servers::nginx_static(&lab.origin, &www, 80, &nginx_work);
    let _https = servers::nginx_tls(&lab.origin, &www, 443, &cert, &key, &nginx_work);
    let _dns = lab.origin.spawn(&[
        "dnsmasq",
        "--no-daemon",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--port=53",
        &format!("--listen-address={}", addr::ORIGIN),
        "--address=/test.lab/10.9.9.9",
        "--pid-file=",
    ]);
    let scen = work.path().join("sip");
    std::fs::create_dir_all(&scen)?;
    let uas_xml = sipp::write_scenario(&scen, "uas.xml", &sipp::uas_scenario(Answer::Accept));
    let uac_xml = sipp::write_scenario(
        &scen,
        "uac.xml",
        &sipp::uac_scenario(&format!("{PCAP_DIR}/g711a.pcap"), None, 3000, false),
    );
    // sipp's UAS as the tests start it, but with no global `-timeout`: it must outlive the run.
    let _uas = lab.origin.spawn(&[
        "sipp",
        "-sf",
        &uas_xml.display().to_string(),
        "-i",
        addr::ORIGIN,
        "-p",
        "5060",
        "-t",
        "u1",
        "-mi",
        addr::ORIGIN,
        "-mp",
        "7000",
        "-rtp_echo",
        "-nostdin",
    ]);

    let state = tempfile::tempdir()?;
    let cache_dir = state.path().join("cache");
    let rules = state.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"secure\"\nmatch_host = \"secure.lab\"\naction = \"cache\"\nttl_override = 30\n",
    )?;
    let extra = format!(
        "[log]\nlevel = \"info\"\n[http]\ncache_dir = \"{}\"\ncache_max_bytes = 33554432\nmax_object_bytes = 16777216\n[tls]\nextra_roots = [\"{}\"]\nsteer_prefixes = [\"{}/32\"]\n[rules]\nfile = \"{}\"\n[sip]\nmedia_interfaces = [\"{}\", \"{}\"]\n",
        cache_dir.display(),
        pki.ca_cert().display(),
        addr::ORIGIN,
        rules.display(),
        addr::LAN_IF,
        addr::WAN_IF,
    );
    let config = Daemon::lab_config(state.path(), &extra);
    let start = |config: &str| -> Result<Daemon> {
        let dir = tempfile::tempdir()?;
        let mut d =
            Daemon::launch_wrapped(&lab, dir, config.to_string(), &[("RUST_LOG", "info")], &[]);
        d.wait_running();
        Ok(d)
    };
    let mut daemon = start(&config)?;
    let ca_cert = state.path().join("state/ca/ca.crt");
    let ca_key = state.path().join("state/ca/ca.key");
    // The client resolves `secure.lab` by its hosts file, not through the gateway's DNS: the
    // origin is in `steer_prefixes`, so its TLS is steered (spliced, or decrypted by the rule)
    // rather than only observed.
    lab.client.set_hosts(&[("secure.lab", addr::ORIGIN)]);

    let stop = Arc::new(AtomicBool::new(false));
    let mut counts: BTreeMap<&'static str, Arc<Counts>> = BTreeMap::new();
    let mut threads = Vec::new();
    let loops: Vec<(&'static str, Load)> = vec![
        (
            "dns",
            Box::new(|ns: &Ns, i: u64| {
                let name = format!("n{}.test.lab", i % 500);
                let out = ns.run(&[
                    "dig",
                    "+short",
                    "+time=2",
                    "+tries=1",
                    &format!("@{}", addr::ORIGIN),
                    &name,
                ]);
                String::from_utf8_lossy(&out.stdout).trim() == "10.9.9.9"
            }),
        ),
        (
            "http",
            Box::new(|ns: &Ns, i: u64| {
                let url = if i.is_multiple_of(50) {
                    format!("http://{}/big.bin?v={}", addr::ORIGIN, i % 7)
                } else {
                    format!(
                        "http://{}/o{}.bin?v={}",
                        addr::ORIGIN,
                        i % 40,
                        (i / 40) % 13
                    )
                };
                curl_ok(ns, &["-o", "/dev/null", &url])
            }),
        ),
        (
            "https-spliced",
            Box::new(|ns: &Ns, i: u64| {
                let url = format!("https://{}/o{}.bin", addr::ORIGIN, i % 40);
                curl_ok(ns, &["-k", "-o", "/dev/null", &url])
            }),
        ),
        (
            "https-intercepted",
            Box::new(move |ns: &Ns, i: u64| {
                let url = format!("https://secure.lab/o{}.bin", i % 40);
                let ca = ca_cert.display().to_string();
                curl_ok(ns, &["--cacert", &ca, "-o", "/dev/null", &url])
            }),
        ),
        (
            "sip",
            Box::new(move |ns: &Ns, _i: u64| {
                let (_, ok) =
                    sipp::run_uac(ns, addr::CLIENT, addr::ORIGIN, &uac_xml, 6000, 1, "u1");
                ok
            }),
        ),
    ];
    for (name, f) in loops {
        let c = Arc::new(Counts::default());
        counts.insert(name, c.clone());
        let (stop, ns) = (stop.clone(), lab.client.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if f(&ns, i) {
                    c.ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    c.failed.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }

    let total = Duration::from_secs(minutes * 60);
    let every = Duration::from_secs(sample_secs.max(1));
    let began = Instant::now();
    let mut next_sample = began + every;
    let mut reloads_done = 0u32;
    let mut restarted = false;
    let mut generation = 1u32;
    let mut logs: Vec<String> = Vec::new();
    let mut samples: Vec<Sample> = Vec::new();
    let (mut last_warn, mut last_fail) = (0u64, 0u64);
    println!(
        "soak: {minutes} min, a row every {} s; reloads every {} s, one restart at the middle",
        every.as_secs(),
        total.as_secs() / 5
    );
    let header =
        "minute  daemon  rss_MiB  fds  bpf_entries  tmp_files  warn+err  client_fail  requests";
    println!("{header}");
    while began.elapsed() < total {
        std::thread::sleep(Duration::from_millis(250));
        let elapsed = began.elapsed();
        if reloads_done < 4 && elapsed >= total / 5 * (reloads_done + 1) {
            reloads_done += 1;
            daemon.reload();
            println!("  (reload {reloads_done}: SIGHUP)");
        }
        if !restarted && elapsed >= total / 2 {
            restarted = true;
            logs.push(daemon.log_text());
            let status = daemon.stop();
            daemon = start(&config)?;
            generation += 1;
            last_warn = 0;
            println!("  (restart: the first daemon stopped with {status}; a new one is running)");
        }
        if Instant::now() >= next_sample {
            next_sample += every;
            let warn = daemon
                .logs()
                .iter()
                .filter(|l| l["level"] == "warn" || l["level"] == "error")
                .count() as u64;
            let fail: u64 = counts
                .values()
                .map(|c| c.failed.load(Ordering::Relaxed))
                .sum();
            let ok: u64 = counts.values().map(|c| c.ok.load(Ordering::Relaxed)).sum();
            let s = Sample {
                minute: elapsed.as_secs_f64() / 60.0,
                rss_kib: proc_status(daemon.pid(), "VmRSS:"),
                fds: std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
                    .map(|d| d.count() as u64)
                    .unwrap_or(0),
                map_entries: bpf_entries(daemon.pid()),
                tmp_files: std::fs::read_dir(cache_dir.join("tmp"))
                    .map(|d| d.count() as u64)
                    .unwrap_or(0),
                daemon_warnings: warn.saturating_sub(last_warn),
                client_failures: fail - last_fail,
                requests: ok + fail,
                generation,
            };
            (last_warn, last_fail) = (warn, fail);
            println!(
                "{:>6.1}  {:>6}  {:>7.1}  {:>3}  {:>11}  {:>9}  {:>8}  {:>11}  {:>8}",
                s.minute,
                s.generation,
                s.rss_kib as f64 / 1024.0,
                s.fds,
                s.map_entries,
                s.tmp_files,
                s.daemon_warnings,
                s.client_failures,
                s.requests
            );
            samples.push(s);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }

    // The CA key must appear in no log line and no API answer.
    let key_text = std::fs::read_to_string(&ca_key).context("reading the CA key")?;
    let mut answers = String::new();
    for args in [
        &["stats"][..],
        &["service", "status"],
        &["cache", "ls"],
        &["calls"],
        &["ca", "export"],
        &["rules", "show"],
        &["metrics"],
    ] {
        let out = lab
            .gw
            .command(&velocache_tests::velocache_bin().display().to_string())
            .args(args)
            .args(["--json", "--config"])
            .arg(daemon.dir().join("velocache.toml"))
            .output()?;
        answers.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    logs.push(daemon.log_text());
    let leaks = key_leaks(&key_text, &logs.join("\n"), &answers);
    drop(daemon);

    println!();
    for (name, c) in &counts {
        println!(
            "  {name:<18} {:>7} ok {:>5} failed",
            c.ok.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed)
        );
    }
    let verdicts = flatness(&samples);
    for (series, flat, detail) in &verdicts {
        println!(
            "  {series:<16} {}  ({detail})",
            if *flat { "flat" } else { "NOT FLAT" }
        );
    }
    println!(
        "  CA private key in logs or API answers: {}",
        if leaks == 0 {
            "never".to_string()
        } else {
            format!("{leaks} times")
        }
    );
    if leaks > 0 || verdicts.iter().any(|(_, flat, _)| !flat) {
        bail!("the soak found a series that is not flat, or a leaked key");
    }
    Ok(())
}

fn curl_ok(ns: &Ns, args: &[&str]) -> bool {
    let mut all = vec!["curl", "-sS", "--fail", "--max-time", "30"];
    all.extend_from_slice(args);
    ns.run(&all).status.success()
}

fn proc_status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Entries in the daemon's hash-type BPF maps (arrays are always full and say nothing).
fn bpf_entries(pid: u32) -> u64 {
    let mut total = 0;
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0;
    };
    let mut ids = std::collections::BTreeSet::new();
    for f in fds.flatten() {
        let info = std::fs::read_to_string(f.path()).unwrap_or_default();
        let ty = info
            .lines()
            .find_map(|l| l.strip_prefix("map_type:"))
            .and_then(|t| t.trim().parse::<u32>().ok());
        let id = info
            .lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .and_then(|t| t.trim().parse::<u32>().ok());
        // 1 hash, 5 percpu hash, 9 lru hash, 10 lru percpu hash, 11 lpm trie.
        if let (Some(ty), Some(id)) = (ty, id)
            && matches!(ty, 1 | 5 | 9 | 10 | 11)
        {
            ids.insert(id);
        }
    }
    for id in ids {
        let out = Command::new("bpftool")
            .args(["-j", "map", "dump", "id", &id.to_string()])
            .output();
        if let Ok(out) = out
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout)
        {
            total += v.as_array().map_or(0, |a| a.len() as u64);
        }
    }
    total
}

/// How many times a line of the key's PEM body occurs in the logs or the answers.
fn key_leaks(key_pem: &str, logs: &str, answers: &str) -> usize {
    key_pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(|l| logs.matches(l).count() + answers.matches(l).count())
        .sum()
}

/// (series, flat, detail) for each series, per the module's definition.
fn flatness(samples: &[Sample]) -> Vec<(&'static str, bool, String)> {
    // RSS and descriptors restart with the daemon: judge the last daemon's samples.
    let last_gen = samples.iter().map(|s| s.generation).max().unwrap_or(1);
    let last: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.generation == last_gen)
        .collect();
    let all: Vec<&Sample> = samples.iter().collect();
    type Get = fn(&Sample) -> u64;
    let series: [(&'static str, Get, u64, bool); 6] = [
        ("rss", |s| s.rss_kib, 4096, true),
        ("fds", |s| s.fds, 16, true),
        ("bpf_map_entries", |s| s.map_entries, 64, true),
        ("tmp_files", |s| s.tmp_files, 4, false),
        ("daemon_warnings", |s| s.daemon_warnings, 1, false),
        ("client_failures", |s| s.client_failures, 1, false),
    ];
    series
        .iter()
        .map(|(name, get, slack, per_daemon)| {
            let set = if *per_daemon { &last } else { &all };
            let warm = (set.len() / 10).max(1);
            let rest: Vec<u64> = set.iter().skip(warm).map(|s| get(s)).collect();
            if rest.len() < 3 {
                return (*name, false, format!("too few samples ({})", rest.len()));
            }
            let third = rest.len() / 3;
            let first = &rest[..third];
            let last = &rest[rest.len() - third..];
            let (f, l) = if name.ends_with("warnings") || name.ends_with("failures") {
                // Rates: mean per sample.
                let mean = |x: &[u64]| x.iter().sum::<u64>() as f64 / x.len().max(1) as f64;
                (mean(first), mean(last))
            } else {
                let max = |x: &[u64]| x.iter().copied().max().unwrap_or(0) as f64;
                (max(first), max(last))
            };
            let bound = f * 1.05 + *slack as f64;
            (
                *name,
                l <= bound,
                format!("first third {f:.1}, last third {l:.1}, bound {bound:.1}"),
            )
        })
        .collect()
}

/// Deterministic pseudo-random bytes, streamed.
fn write_blob(path: &Path, len: u64, seed: u64) {
    use std::io::Write as _;
    let Ok(file) = std::fs::File::create(path) else {
        return;
    };
    let mut f = std::io::BufWriter::new(file);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    let mut left = len;
    while left > 0 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        let n = left.min(8) as usize;
        let _ = f.write_all(&b[..n]);
        left -= n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(minute: f64, rss: u64, warn: u64) -> Sample {
        Sample {
            minute,
            rss_kib: rss,
            fds: 40,
            map_entries: 10,
            tmp_files: 0,
            daemon_warnings: warn,
            client_failures: 0,
            requests: 0,
            generation: 1,
        }
    }

    #[test]
    fn a_series_that_keeps_growing_is_not_flat_and_a_steady_one_is() {
        let growing: Vec<Sample> = (0..30)
            .map(|i| s(i as f64, 30_000 + i * 2_000, 0))
            .collect();
        let v = flatness(&growing);
        assert!(!v.iter().find(|x| x.0 == "rss").unwrap().1);
        let steady: Vec<Sample> = (0..30)
            .map(|i| s(i as f64, 30_000 + (i % 3) * 500, i % 2))
            .collect();
        assert!(
            flatness(&steady).iter().all(|x| x.1),
            "{:?}",
            flatness(&steady)
        );
    }

    #[test]
    fn a_leaked_key_line_is_found() {
        let key = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";
        assert_eq!(key_leaks(key, "nothing here", "{}"), 0);
        assert_eq!(
            key_leaks(
                key,
                "x MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg y",
                ""
            ),
            1
        );
    }
}
