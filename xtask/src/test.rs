//! `cargo xtask test`: setup, the module-graph check, fmt, clippy (host and BPF target), unit
//! tests (the example plugins' too), then the lab integration tests; every step runs even if an
//! earlier one failed, and the last line counts passed and failed tests and checks.
use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Result, bail};

use crate::{modgraph, setup, util};

#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    failed_steps: Vec<String>,
}

impl Tally {
    fn step(&mut self, name: &str, ok: bool) {
        println!("xtask test: {name}: {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            self.failed_steps.push(name.to_string());
        }
    }
}

/// Run everything.
pub fn run(filter: Option<&str>, lint: bool) -> Result<()> {
    setup::run(setup::Profile::Test)?;
    let removed = velocache_tests::cleanup_stale();
    if removed > 0 {
        println!("xtask test: removed {removed} lab namespaces left by killed runs");
    }
    let mut tally = Tally::default();

    let graph = modgraph::check(&util::root().join("velocache").join("src"));
    if let Err(e) = &graph {
        eprintln!("{e:#}");
    }
    tally.step("velocache's top-level modules are acyclic", graph.is_ok());

    if lint {
        let ok = util::run(util::cargo().args(["fmt", "--all", "--", "--check"])).is_ok();
        tally.step("cargo fmt --check", ok);
        let ok = util::run(util::cargo().args([
            "clippy",
            "--workspace",
            "--exclude",
            "velocache-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
        .is_ok();
        tally.step("cargo clippy (host)", ok);
        let ok = bpf_clippy().is_ok();
        tally.step("cargo clippy (bpf target)", ok);
    }

    // Unit tests: every crate but the kernel programs and the lab.
    let mut unit = util::cargo();
    unit.args([
        "test",
        "--workspace",
        "--exclude",
        "velocache-ebpf",
        "--exclude",
        "velocache-tests",
    ]);
    if let Some(f) = filter {
        unit.arg(f);
    }
    let ok = counted(&mut unit, &mut tally);
    tally.step("unit tests", ok);

    // The example plugins' own logic (name matching, SIP screening, SOCKS parsing) on the
    // host: their workspace is outside the main one (its crates are built for wasm).
    let mut guests = util::cargo();
    guests
        .current_dir(util::root().join("plugins"))
        .args(["test", "--target-dir"])
        .arg(util::root().join("target").join("plugins-host"));
    if let Some(f) = filter {
        guests.arg(f);
    }
    let ok = counted(&mut guests, &mut tally);
    tally.step("plugin examples' unit tests", ok);

    // Lab integration tests against the debug daemon.
    match util::build_daemon(false) {
        Ok(bin) => {
            // The .deb of this build, checked (`cargo xtask package --debug`); the deploy lab
            // test installs and purges it in a Debian root.
            let deb = crate::package::run(true);
            tally.step("cargo xtask package --debug", deb.is_ok());
            // The plugins the plugin lab tests install.
            let plugins = crate::plugins::build();
            tally.step("cargo xtask plugins", plugins.is_ok());
            let mut lab = util::cargo();
            lab.args(["test", "-p", "velocache-tests", "--test", "integration"])
                .env("VELOCACHE_BIN", &bin);
            match plugins {
                Ok(dir) => {
                    lab.env("VELOCACHE_PLUGINS", dir);
                }
                Err(e) => eprintln!("{e:#}"),
            }
            match deb {
                Ok(deb) => {
                    lab.env("VELOCACHE_DEB", deb);
                }
                Err(e) => eprintln!("{e:#}"),
            }
            if let Some(f) = filter {
                lab.arg(f);
            }
            let ok = counted(&mut lab, &mut tally);
            tally.step("lab integration tests", ok);
        }
        Err(e) => {
            eprintln!("{e:#}");
            tally.step("building the daemon", false);
        }
    }

    println!(
        "xtask test: {} passed, {} failed{}",
        tally.passed,
        tally.failed,
        if tally.failed_steps.is_empty() {
            String::new()
        } else {
            format!("; failed steps: {}", tally.failed_steps.join(", "))
        }
    );
    if tally.failed > 0 || !tally.failed_steps.is_empty() {
        bail!("tests failed");
    }
    Ok(())
}

/// Clippy for the kernel programs, on the BPF target (aya's xtask does the same).
fn bpf_clippy() -> Result<()> {
    let dir = util::root().join("velocache-ebpf");
    let target_dir = util::root().join("target").join("bpf-clippy");
    let mut cmd = Command::new("rustup");
    cmd.current_dir(&dir)
        .env("PATH", util::path_env())
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .args([
            "run",
            "nightly",
            "cargo",
            "clippy",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--target-dir",
        ])
        .arg(&target_dir)
        .args(["--", "-D", "warnings"]);
    util::run(&mut cmd)
}

/// Run a `cargo test` command, echo its output, and add its `test result:` counts.
fn counted(cmd: &mut Command, tally: &mut Tally) -> bool {
    cmd.stdout(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot start {cmd:?}: {e}");
            return false;
        }
    };
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            println!("{line}");
            if let Some((p, f)) = parse_result(&line) {
                tally.passed += p;
                tally.failed += f;
            }
        }
    }
    child.wait().is_ok_and(|s| s.success())
}

/// `test result: ok. 8 passed; 1 failed; 0 ignored; …` → (8, 1).
fn parse_result(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let num = |word: &str| -> Option<u64> {
        rest.split(';').map(str::trim).find_map(|part| {
            let part = part.split(". ").last().unwrap_or(part);
            part.strip_suffix(word)
                .map(str::trim)
                .and_then(|n| n.parse().ok())
        })
    };
    Some((num("passed")?, num("failed")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libtest_summary_lines() {
        assert_eq!(
            parse_result(
                "test result: ok. 8 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 4.35s"
            ),
            Some((8, 0))
        );
        assert_eq!(
            parse_result("test result: FAILED. 6 passed; 2 failed; 0 ignored; 0 measured"),
            Some((6, 2))
        );
        assert_eq!(parse_result("running 8 tests"), None);
    }
}
