//! `cargo xtask setup`: install what a fresh machine lacks, say what was already there.
//!
//! Idempotent. Everything comes from the registries this project may use: rustup's nightly
//! with `rust-src`, Debian packages (LLVM 22 for bpf-linker, and the real tools the tests and
//! benchmarks drive), and `bpf-linker` from crates.io built against Debian's LLVM 22.
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

use crate::util::{self, have};

/// What to install.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Build + test tools.
    Test,
    /// Also the peers the benchmarks compare against.
    Bench,
}

/// Debian packages needed to build and test. Every command a lab test or the demo runs is
/// shipped by one of these or by a base package: `velocache_tests::tools::TOOLS` says which,
/// and this module's test checks it against the sources.
const TEST_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "iproute2",
    "procps",
    "nftables",
    "ethtool",
    "curl",
    "bind9-dnsutils",
    "dnsmasq-base",
    "unbound",
    "ldnsutils",
    "nginx",
    "sip-tester",
    "tshark",
    "python3",
    "python3-minimal",
    "openssl",
    "nghttp2-client",
    "debootstrap",
    // The SIP lab tests read the RTP fast path's maps with bpftool.
    "bpftool",
    // The Prometheus project's own OpenMetrics parser checks `/metrics` in the lab tests.
    "python3-prometheus-client",
    // The shared cache tier's lab runs a Redis Cluster (`redis-server` brings `redis-tools`,
    // whose `redis-cli` forms the cluster and reads it back).
    "redis-server",
    "redis-tools",
    // cargo-deb computes the .deb's library dependencies with dpkg-shlibdeps.
    "dpkg-dev",
    // The SOCKS5 observer plugin's lab test puts a real SOCKS server (danted) in `origin`.
    "dante-server",
    // The web dashboard's browser tests: playwright-core (from npm, `npm ci` in tests/web) on
    // node drives Debian's chromium.
    "chromium",
    "nodejs",
    "npm",
];

/// Debian packages the benchmarks add (`linux-perf`: profiling the datapath under a bench load).
const BENCH_PACKAGES: &[&str] = &[
    "dnsperf",
    "wrk",
    "squid",
    "varnish",
    "rtpengine-daemon",
    "linux-perf",
];

/// The bpf-linker that builds against LLVM 22 (see DESIGN.md).
const BPF_LINKER_VERSION: &str = "^0.13";

/// Install what is missing for `profile`.
pub fn run(profile: Profile) -> Result<()> {
    util::require_root("setup")?;
    let mut installed = Vec::new();
    let mut present = Vec::new();

    // Debian packages first: bpf-linker is built against llvm-22-dev.
    let mut wanted: Vec<&str> = TEST_PACKAGES.to_vec();
    if profile == Profile::Bench {
        wanted.extend_from_slice(BENCH_PACKAGES);
    }
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p) && !provided(p))
        .collect();
    present.extend(
        wanted
            .iter()
            .filter(|p| !missing.contains(p))
            .map(|p| p.to_string()),
    );
    if !missing.is_empty() {
        apt_install(&missing)?;
        installed.extend(missing.iter().map(|p| p.to_string()));
        disable_services(&missing);
    }

    // The browser tests' one npm package, exactly as tests/web/package-lock.json pins it.
    if web_packages_installed() {
        present.push("tests/web node_modules".into());
    } else {
        npm_ci()?;
        installed.push("tests/web node_modules (npm ci)".into());
    }

    // Nightly with rust-src (kernel programs use -Z build-std=core).
    let toolchains = util::output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is required (the machine's toolchain comes from rustup)")?;
    if toolchains.lines().any(|l| l.starts_with("nightly")) {
        present.push("rust nightly".into());
    } else {
        util::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))
        .context("cannot install the nightly toolchain")?;
        installed.push("rust nightly".into());
    }
    let components = util::output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if components.lines().any(|l| l.trim() == "rust-src") {
        present.push("nightly rust-src".into());
    } else {
        util::run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))
        .context("cannot add rust-src to nightly")?;
        installed.push("nightly rust-src".into());
    }

    // The plugin guests (`plugins/`, `cargo xtask plugins`) build for wasm32-unknown-unknown with
    // the toolchain that builds the daemon.
    let targets = util::output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if targets.lines().any(|l| l.trim() == crate::plugins::TARGET) {
        present.push(format!("rust target {}", crate::plugins::TARGET));
    } else {
        util::run(Command::new("rustup").args(["target", "add", crate::plugins::TARGET]))
            .with_context(|| format!("cannot add the {} target", crate::plugins::TARGET))?;
        installed.push(format!("rust target {}", crate::plugins::TARGET));
    }

    if have("bpf-linker") {
        present.push("bpf-linker".into());
    } else {
        println!("setup: building bpf-linker against LLVM 22 (a few minutes)");
        util::run(util::cargo().args([
            "install",
            "bpf-linker",
            "--locked",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            "llvm-22",
        ]))
        .context("cannot build bpf-linker (needs llvm-22-dev, libpolly-22-dev, libzstd-dev)")?;
        installed.push("bpf-linker".into());
    }

    if have("cargo-deb") {
        present.push("cargo-deb".into());
    } else {
        ensure_cargo_deb()?;
        installed.push("cargo-deb".into());
    }

    if have("cargo-fuzz") {
        present.push("cargo-fuzz".into());
    } else {
        ensure_cargo_fuzz()?;
        installed.push("cargo-fuzz".into());
    }

    println!("setup: already present: {}", present.join(", "));
    if installed.is_empty() {
        println!("setup: nothing to install");
    } else {
        println!("setup: installed: {}", installed.join(", "));
    }
    Ok(())
}

/// cargo-deb builds the `.deb` (`cargo xtask package`).
const CARGO_DEB_VERSION: &str = "^3";

/// Install cargo-deb unless it is there.
pub fn ensure_cargo_deb() -> Result<()> {
    if have("cargo-deb") {
        return Ok(());
    }
    println!("setup: installing cargo-deb");
    util::run(util::cargo().args([
        "install",
        "cargo-deb",
        "--locked",
        "--version",
        CARGO_DEB_VERSION,
    ]))
    .context("cannot install cargo-deb")
}

/// cargo-fuzz runs the fuzz targets (`cargo xtask fuzz`, on nightly).
const CARGO_FUZZ_VERSION: &str = "^0.13";

/// Install cargo-fuzz unless it is there.
pub fn ensure_cargo_fuzz() -> Result<()> {
    if have("cargo-fuzz") {
        return Ok(());
    }
    println!("setup: installing cargo-fuzz");
    util::run(util::cargo().args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
    .context("cannot install cargo-fuzz")
}

/// Packages whose service unit Debian enables on install, for tests that run their own copies:
/// setup turns the unit off when it installed the package (policy-rc.d kept it from starting
/// now; this keeps it from starting at the next boot). A unit the machine had before is left
/// alone.
const SERVICES_OFF: &[(&str, &str)] = &[
    ("redis-server", "redis-server.service"),
    ("dante-server", "danted.service"),
];

fn disable_services(just_installed: &[&str]) {
    for (package, unit) in SERVICES_OFF {
        if !just_installed.contains(package) {
            continue;
        }
        // Without systemd (a container) there is nothing to disable; say so and go on.
        match Command::new("systemctl")
            .args(["disable", "--now", unit])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Ok(s) if s.success() => println!("setup: disabled {unit} (the lab starts its own)"),
            _ => println!("setup: could not disable {unit} (no systemd?); the lab starts its own"),
        }
    }
}

/// Where the browser tests live (package.json, package-lock.json, e2e.mjs).
fn web_tests_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/web")
}

/// Whether `npm ci` already installed what tests/web/package-lock.json pins (the version in
/// node_modules matches the lock file's).
fn web_packages_installed() -> bool {
    let dir = web_tests_dir();
    let version = |path: std::path::PathBuf, pointer: &str| -> Option<String> {
        let text = std::fs::read_to_string(path).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v.pointer(pointer)?.as_str().map(str::to_string)
    };
    let locked = version(
        dir.join("package-lock.json"),
        "/packages/node_modules~1playwright-core/version",
    );
    let present = version(
        dir.join("node_modules/playwright-core/package.json"),
        "/version",
    );
    locked.is_some() && locked == present
}

/// `npm ci` in tests/web: the registry's playwright-core at the locked version and hash.
fn npm_ci() -> Result<()> {
    println!("setup: npm ci in tests/web (playwright-core for the browser tests)");
    util::run(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(web_tests_dir()),
    )
    .context("npm ci in tests/web failed")
}

/// A package another installed one provides: NodeSource's `nodejs` ships npm, declares
/// `Provides: npm` and conflicts with Debian's `npm`, so asking apt for `npm` would fail.
fn provided(package: &str) -> bool {
    package == "npm" && have("npm")
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// `apt-get install` without starting the services the packages ship (dnsmasq, nginx, unbound,
/// squid would otherwise start on the machine itself; the lab runs its own copies).
fn apt_install(packages: &[&str]) -> Result<()> {
    println!("setup: installing {}", packages.join(" "));
    let policy = std::path::Path::new("/usr/sbin/policy-rc.d");
    let placed = if policy.exists() {
        false
    } else {
        std::fs::write(
            policy,
            "#!/bin/sh\n# placed by cargo xtask setup\nexit 101\n",
        )
        .context("writing policy-rc.d")?;
        std::fs::set_permissions(policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        true
    };
    let result = (|| -> Result<()> {
        util::run(
            Command::new("apt-get")
                .args(["update", "-q"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .context("apt-get update failed")?;
        util::run(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(packages)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .with_context(|| format!("cannot install Debian packages {}", packages.join(" ")))
    })();
    if placed {
        let _ = std::fs::remove_file(policy);
    }
    result?;
    for p in packages {
        if !dpkg_installed(p) {
            bail!("Debian package {p} is still not installed after apt-get install");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use velocache_tests::tools::{BASE_PACKAGES, TOOLS, package_of};

    use super::{BENCH_PACKAGES, TEST_PACKAGES};

    /// A command found in the sources, and where.
    struct Use {
        tool: String,
        at: String,
        bench: bool,
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push(path);
            }
        }
    }

    /// The string literals of the list that starts right after each `open` in `text`
    /// (`require_tools(&[` → every name) — or, with `first_only`, the first literal right after
    /// `open` (`Command::new(` → the program).
    fn literals_after(text: &str, open: &str, first_only: bool) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        let mut from = 0;
        while let Some(i) = text[from..].find(open) {
            let start = from + i + open.len();
            from = start;
            let line = text[..start].matches('\n').count() + 1;
            let rest = text[start..].trim_start();
            if first_only {
                if let Some(lit) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
                    out.push((line, lit.to_string()));
                }
                continue;
            }
            let list = rest.split(']').next().unwrap_or("");
            for (n, lit) in list.split('"').enumerate() {
                if n % 2 == 1 {
                    out.push((line, lit.to_string()));
                }
            }
        }
        out
    }

    /// Every command named in a `require_tools` call, or run directly (`Command::new("x")`,
    /// `ns.run(&["x", …])`, …), by the lab tests and their harness, the demo and the benches.
    fn uses() -> Vec<Use> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = Vec::new();
        for dir in ["tests", "xtask/src/bench", "xtask/src/demo"] {
            rust_files(&root.join(dir), &mut files);
        }
        files.push(root.join("xtask/src/lab.rs"));
        let mut found = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let rel = file
                .strip_prefix(&root)
                .unwrap_or(&file)
                .display()
                .to_string();
            let bench = rel.starts_with("xtask/src/bench");
            let mut all = literals_after(&text, "require_tools(&[", false);
            for open in [
                "Command::new(",
                ".command(",
                ".run(&[",
                ".run_ok(&[",
                ".spawn(&[",
            ] {
                all.extend(literals_after(&text, open, true));
            }
            for (line, tool) in all {
                if tool.is_empty() || tool.contains(' ') || tool.starts_with('-') {
                    continue;
                }
                found.push(Use {
                    tool,
                    at: format!("{rel}:{line}"),
                    bench,
                });
            }
        }
        found
    }

    #[test]
    fn every_tool_the_tests_demo_and_benches_run_is_installed_by_setup() {
        let uses = uses();
        assert!(
            uses.iter().any(|u| u.tool == "curl") && uses.iter().any(|u| u.tool == "wrk"),
            "the scan found too little; did the sources move?"
        );
        let mut problems = Vec::new();
        for u in &uses {
            let Some(package) = package_of(&u.tool) else {
                problems.push(format!(
                    "{}: `{}` is not in velocache_tests::tools::TOOLS",
                    u.at, u.tool
                ));
                continue;
            };
            let installed = BASE_PACKAGES.contains(&package)
                || TEST_PACKAGES.contains(&package)
                || (u.bench && BENCH_PACKAGES.contains(&package));
            if !installed {
                problems.push(format!(
                    "{}: `{}` comes from Debian package `{package}`, which setup does not install{}",
                    u.at,
                    u.tool,
                    if BENCH_PACKAGES.contains(&package) {
                        " for tests (only for benches)"
                    } else {
                        ""
                    }
                ));
            }
        }
        for (tool, package) in TOOLS {
            if !(BASE_PACKAGES.contains(package)
                || TEST_PACKAGES.contains(package)
                || BENCH_PACKAGES.contains(package))
            {
                problems.push(format!(
                    "TOOLS maps `{tool}` to `{package}`, which is in no setup list"
                ));
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn the_scanner_reads_lists_and_first_arguments() {
        let text = "x\nrequire_tools(&[\"curl\",\n \"dig\"]);\nns.run_ok(&[\n    \"ip\", \"-n\"]);\nCommand::new(bin)";
        let req = literals_after(text, "require_tools(&[", false);
        assert_eq!(req, vec![(2, "curl".to_string()), (2, "dig".to_string())]);
        let run = literals_after(text, ".run_ok(&[", true);
        assert_eq!(run, vec![(4, "ip".to_string())]);
        assert!(literals_after(text, "Command::new(", true).is_empty());
    }
}
