//! `cargo xtask setup` and the tools: each command the tests, demo and benches run is shipped by
//! the Debian package `velocache_tests::tools::TOOLS` names (the unit test in `xtask/src/setup.rs`
//! checks that setup installs those packages; this one checks, on a machine where setup ran,
//! that the packages really ship the commands).
use std::process::Command;

use velocache_tests::tools::{TOOLS, alias, dpkg_owner, installed_package_of};

/// Whether installed package `owner` declares `Provides: package` (NodeSource's `nodejs` ships
/// npm itself, provides `npm` and conflicts with Debian's).
fn provides(owner: &str, package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Provides}", owner])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split(',')
                .any(|p| p.split_whitespace().next() == Some(package))
        })
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

#[test]
fn each_tool_is_shipped_by_the_package_setup_is_told_about() {
    // Benchmark peers are installed by `setup --bench` only; the rest must all be there.
    const BENCH_ONLY: &[&str] = &["wrk", "dnsperf", "squid", "rtpengine-daemon", "linux-perf"];
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (tool, package) in TOOLS {
        if BENCH_ONLY.contains(package) && !installed(package) {
            println!("{tool}: {package} not installed (bench only), not checked");
            continue;
        }
        match installed_package_of(tool) {
            Ok(owner) if owner == *package => checked += 1,
            Ok(owner) if provides(&owner, package) => checked += 1,
            Ok(owner) => wrong.push(format!("{tool}: TOOLS says {package}, dpkg says {owner}")),
            Err(why) => wrong.push(format!("{tool} ({package}): {why}")),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(checked > 20, "only {checked} tools checked");
}

#[test]
fn dpkg_owner_lines_are_read_past_diversions_and_architectures() {
    assert_eq!(
        dpkg_owner(
            "diversion by linux-perf from: /usr/bin/perf\ndiversion by linux-perf to: /usr/bin/perf.wrapper\nlinux-perf: /usr/bin/perf\n"
        )
        .as_deref(),
        Some("linux-perf")
    );
    assert_eq!(
        dpkg_owner("libc-bin:amd64, foo: /usr/bin/x\n").as_deref(),
        Some("libc-bin")
    );
    assert_eq!(dpkg_owner(""), None);
    assert_eq!(alias("/usr/sbin/ip"), "/sbin/ip");
    assert_eq!(alias("/bin/tar"), "/usr/bin/tar");
}
