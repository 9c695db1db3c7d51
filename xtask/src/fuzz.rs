//! `cargo xtask fuzz [--seconds N] [--commit] [target]`: run the fuzz targets (`fuzz/`, with
//! cargo-fuzz on nightly), minimise their corpora, record the campaign.
//!
//! Per target: seed an empty corpus (the RFC 4475 messages for the SIP targets), run libFuzzer
//! for N seconds at the lowest CPU priority, read its final statistics (executions, rate,
//! coverage), minimise the corpus (`cargo fuzz cmin`), and append one line to
//! `fuzz/campaign.tsv`; the table in `fuzz/README.md` is rebuilt from that file (executions
//! add up over runs). Crash inputs stay in `fuzz/artifacts/<target>/` (ignored by git): one is
//! committed only as a regression input next to its fix. With `--commit`, a run that found no
//! crash commits the corpora, the campaign file and the table.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{setup, util};

/// Every target, as `fuzz/fuzz_targets/<name>.rs`.
fn targets() -> Result<Vec<String>> {
    let dir = util::root().join("fuzz").join("fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let p = e.path();
            (p.extension()? == "rs").then(|| p.file_stem()?.to_str().map(str::to_string))?
        })
        .collect();
    names.sort();
    Ok(names)
}

/// One run's figures, from libFuzzer's final output.
#[derive(Debug, Default, Clone, PartialEq)]
struct Run {
    target: String,
    seconds: u64,
    execs: u64,
    per_sec: u64,
    cov: u64,
    ft: u64,
    corpus: u64,
    crashes: u64,
    /// CPU seconds the fuzzer used (user + system): the rate per CPU second does not depend
    /// on how busy the shared machine was.
    cpu_seconds: f64,
}

/// Run the campaign.
pub fn run(only: Option<&str>, seconds: u64, commit: bool) -> Result<()> {
    setup::ensure_cargo_fuzz()?;
    let all = targets()?;
    let chosen: Vec<String> = match only {
        Some(t) if all.iter().any(|a| a == t) => vec![t.to_string()],
        Some(t) => bail!("no fuzz target `{t}`; targets: {}", all.join(", ")),
        None => all,
    };
    let root = util::root();
    let mut runs = Vec::new();
    for target in &chosen {
        let corpus = root.join("fuzz").join("corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        seed(target, &corpus)?;
        println!("fuzz: {target} for {seconds} s (nice 19)");
        let run = fuzz_one(target, &corpus, seconds)?;
        println!(
            "fuzz: {target}: {} executions ({}/s), cov {} ft {}, {} crash(es)",
            run.execs, run.per_sec, run.cov, run.ft, run.crashes
        );
        minimise(target, &corpus)?;
        record(&run)?;
        runs.push(run);
    }
    write_table()?;
    let crashed: Vec<&str> = runs
        .iter()
        .filter(|r| r.crashes > 0)
        .map(|r| r.target.as_str())
        .collect();
    if !crashed.is_empty() {
        bail!(
            "crashes in {}: inputs in fuzz/artifacts/<target>/ — fix each with a regression \
             test before committing anything from this run",
            crashed.join(", ")
        );
    }
    if commit {
        util::run(Command::new("git").current_dir(&root).args([
            "add",
            "fuzz/corpus",
            "fuzz/campaign.tsv",
            "fuzz/README.md",
        ]))?;
        let summary: Vec<String> = runs
            .iter()
            .map(|r| format!("{} {}", r.target, r.execs))
            .collect();
        util::run(Command::new("git").current_dir(&root).args([
            "commit",
            "-m",
            &format!(
                "fuzz: {seconds} s per target, corpora minimised ({})",
                summary.join(", ")
            ),
        ]))?;
    } else {
        println!("fuzz: corpora minimised; commit fuzz/corpus, fuzz/campaign.tsv, fuzz/README.md");
    }
    Ok(())
}

/// Request heads the smuggling tests send, for `http_head` (first byte: the body size).
const HTTP_SEEDS: &[&str] = &[
    "\x00GET / HTTP/1.1\r\nHost: a\r\n\r\nHTTP/1.1 200 OK\r\nConnection: x\r\nX: y\r\n\r\n",
    "\x1fPOST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n",
    "\x01GET http://b/x HTTP/1.1\r\nHost: a\r\nHost: c\r\nExpect: 100-continue\r\n\r\n",
    "\x00GET / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n",
];

/// Start an empty corpus with inputs worth starting from: the RFC 4475 torture messages for
/// the SIP targets, the shipped configuration files, the smuggling tests' heads.
fn seed(target: &str, corpus: &Path) -> Result<()> {
    if std::fs::read_dir(corpus)?.next().is_some() {
        return Ok(());
    }
    let root = util::root();
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    let files_in = |dir: PathBuf, ext: &str| -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == ext)
                && let Some(name) = p.file_name().and_then(|n| n.to_str())
            {
                out.push((name.to_string(), std::fs::read(&p)?));
            }
        }
        Ok(out)
    };
    if target.starts_with("sip") {
        seeds = files_in(root.join("tests").join("data").join("rfc4475"), "dat")?;
        if target == "sip_tcp_framing" {
            // The first byte is the read size.
            for (_, bytes) in &mut seeds {
                bytes.insert(0, 7);
            }
        }
    } else if target == "config_files" {
        seeds = files_in(root.join("deploy"), "toml")?;
    } else if target == "http_head" {
        seeds = HTTP_SEEDS
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("seed-{i}"), s.bytes().collect()))
            .collect();
    }
    for (name, bytes) in seeds {
        std::fs::write(corpus.join(name), bytes)?;
    }
    Ok(())
}

/// `cargo +nightly fuzz …` from the workspace root, at the lowest priority.
fn cargo_fuzz(args: &[&str]) -> Command {
    let mut c = Command::new("nice");
    c.current_dir(util::root())
        .env("PATH", util::path_env())
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .args(["-n", "19", "cargo", "+nightly", "fuzz"])
        .args(args);
    c
}

/// Build flags shared by run and cmin: no sanitizer (the code is safe Rust; ASan would halve
/// the rate) but debug assertions, so integer overflow is a crash.
const BUILD: &[&str] = &["--sanitizer", "none", "--debug-assertions"];

/// CPU time of every waited-for descendant so far (`/proc/self/stat` cutime + cstime).
fn children_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // cutime and cstime are fields 16 and 17 of the whole line: 13 and 14 here.
    (ticks(13) + ticks(14)) / 100.0
}

fn fuzz_one(target: &str, corpus: &Path, seconds: u64) -> Result<Run> {
    let corpus_s = corpus.display().to_string();
    // Build first, so the run's CPU time is the fuzzer's alone.
    let mut build = vec!["build"];
    build.extend_from_slice(BUILD);
    build.push(target);
    util::run(&mut cargo_fuzz(&build)).with_context(|| format!("building {target}"))?;
    let cpu_before = children_cpu_seconds();
    let mut args = vec!["run"];
    args.extend_from_slice(BUILD);
    let time = format!("-max_total_time={seconds}");
    args.extend_from_slice(&[
        target,
        &corpus_s,
        "--",
        &time,
        "-print_final_stats=1",
        "-max_len=65536",
        "-rss_limit_mb=4096",
        "-timeout=10",
    ]);
    let out = cargo_fuzz(&args)
        .output()
        .with_context(|| format!("cannot start cargo fuzz run {target}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let log = util::root()
        .join("target")
        .join(format!("fuzz-{target}.log"));
    std::fs::write(&log, &text)?;
    let mut run = parse_stats(target, seconds, &text);
    run.cpu_seconds = children_cpu_seconds() - cpu_before;
    if !out.status.success() {
        let crashed = text.contains("Test unit written to") || text.contains("panicked at");
        if !crashed {
            bail!(
                "cargo fuzz run {target} failed ({}); log in {}",
                out.status,
                log.display()
            );
        }
        run.crashes = text.matches("Test unit written to").count().max(1) as u64;
        eprintln!(
            "fuzz: {target} CRASHED; log in {}:\n{}",
            log.display(),
            text.lines()
                .filter(|l| l.contains("panicked at") || l.contains("Test unit written"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(run)
}

/// libFuzzer's `stat::` lines and its last `#N … cov: X ft: Y corp: Z` status line.
fn parse_stats(target: &str, seconds: u64, text: &str) -> Run {
    let mut run = Run {
        target: target.to_string(),
        seconds,
        ..Run::default()
    };
    let num = |s: &str| s.trim().parse::<u64>().unwrap_or(0);
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("stat::number_of_executed_units:") {
            run.execs = num(v);
        } else if let Some(v) = line.strip_prefix("stat::average_exec_per_sec:") {
            run.per_sec = num(v);
        } else if line.starts_with('#') && line.contains(" cov: ") {
            let mut words = line.split_whitespace();
            while let Some(w) = words.next() {
                match w {
                    "cov:" => run.cov = words.next().map(num).unwrap_or(run.cov),
                    "ft:" => run.ft = words.next().map(num).unwrap_or(run.ft),
                    "corp:" => {
                        run.corpus = words
                            .next()
                            .and_then(|c| c.split('/').next())
                            .map(num)
                            .unwrap_or(run.corpus)
                    }
                    _ => {}
                }
            }
        }
    }
    run
}

fn minimise(target: &str, corpus: &Path) -> Result<()> {
    let corpus_s = corpus.display().to_string();
    let mut args = vec!["cmin"];
    args.extend_from_slice(BUILD);
    args.extend_from_slice(&[target, &corpus_s, "--", "-max_len=65536"]);
    let out = cargo_fuzz(&args)
        .output()
        .with_context(|| format!("cannot start cargo fuzz cmin {target}"))?;
    if !out.status.success() {
        bail!(
            "cargo fuzz cmin {target} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn campaign_file() -> PathBuf {
    util::root().join("fuzz").join("campaign.tsv")
}

const HEADER: &str =
    "date\ttarget\tseconds\texecutions\texec_per_sec\tcov\tft\tcorpus\tcrashes\tcpu_seconds";

fn record(run: &Run) -> Result<()> {
    let path = campaign_file();
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|_| format!("{HEADER}\n"));
    let date = util::output(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%MZ"]))?;
    let _ = writeln!(
        text,
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{:.1}",
        date.trim(),
        run.target,
        run.seconds,
        run.execs,
        run.per_sec,
        run.cov,
        run.ft,
        run.corpus,
        run.crashes,
        run.cpu_seconds
    );
    std::fs::write(&path, text)?;
    Ok(())
}

const TABLE_START: &str = "<!-- campaign table: cargo xtask fuzz rewrites from here -->";
const TABLE_END: &str = "<!-- campaign table end -->";

/// Executions needed per target before the campaign counts it as done.
const GOAL: u64 = 10_000_000;

/// Rebuild the table in fuzz/README.md from campaign.tsv: executions summed over runs, the
/// latest run's rate and coverage, crashes seen in any run.
fn write_table() -> Result<()> {
    let text = std::fs::read_to_string(campaign_file()).unwrap_or_default();
    let mut per: BTreeMap<String, Run> = BTreeMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 9 {
            continue;
        }
        let n = |i: usize| f[i].parse::<u64>().unwrap_or(0);
        let e = per.entry(f[1].to_string()).or_insert_with(|| Run {
            target: f[1].to_string(),
            ..Run::default()
        });
        e.seconds += n(2);
        e.execs += n(3);
        e.per_sec = n(4);
        e.cov = n(5);
        e.ft = n(6);
        e.corpus = n(7);
        e.crashes += n(8);
        e.cpu_seconds += f.get(9).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    }
    let mut table = String::from(
        "| target | executions (all runs) | wall time | exec/s wall (last run) | exec per CPU-s (all runs) | cov / ft (last run) | corpus | crash runs | CPU time to 10⁷ |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in per.values() {
        let per_cpu = if r.cpu_seconds > 0.0 {
            r.execs as f64 / r.cpu_seconds
        } else {
            0.0
        };
        let left = GOAL.saturating_sub(r.execs);
        let eta = if left == 0 {
            "done".to_string()
        } else if per_cpu == 0.0 {
            "?".to_string()
        } else {
            format!("{:.1} h", left as f64 / per_cpu / 3600.0)
        };
        let _ = writeln!(
            table,
            "| `{}` | {} | {} s | {} | {} | {} / {} | {} | {} | {} |",
            r.target,
            r.execs,
            r.seconds,
            r.per_sec,
            if per_cpu > 0.0 {
                format!("{per_cpu:.0}")
            } else {
                "?".to_string()
            },
            r.cov,
            r.ft,
            r.corpus,
            r.crashes,
            eta
        );
    }
    let readme = util::root().join("fuzz").join("README.md");
    let doc = std::fs::read_to_string(&readme).context("fuzz/README.md")?;
    let (Some(a), Some(b)) = (doc.find(TABLE_START), doc.find(TABLE_END)) else {
        bail!("fuzz/README.md lacks the campaign table markers");
    };
    let new = format!("{}{TABLE_START}\n{table}{}", &doc[..a], &doc[b..]);
    std::fs::write(&readme, new)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_final_statistics() {
        let text = "#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb\n\
#524288\tpulse  cov: 812 ft: 2931 corp: 402/31Kb lim: 4096 exec/s: 8738 rss: 80Mb\n\
#600123\tDONE   cov: 815 ft: 2944 corp: 405/31Kb lim: 4096 exec/s: 9837 rss: 81Mb\n\
Done 600123 runs in 61 second(s)\n\
stat::number_of_executed_units: 600123\n\
stat::average_exec_per_sec:     9837\n\
stat::new_units_added:          77\n";
        let r = parse_stats("sip_message", 61, text);
        assert_eq!(
            (r.execs, r.per_sec, r.cov, r.ft, r.corpus),
            (600_123, 9837, 815, 2944, 405)
        );
    }
}
