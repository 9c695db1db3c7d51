//! Which Debian package ships each command the lab tests, the demo and the benchmarks run.
//!
//! One table, read three ways: [`require_tools`] refuses a tool that is not in it (so a new tool
//! cannot be used without saying where it comes from); `cargo xtask setup`'s unit test checks that
//! every tool named in a `require_tools` call or run by a test, bench or demo is in it and that
//! its package is one setup installs (or one every Debian system has, [`BASE_PACKAGES`]); and a
//! lab test checks on the machine that each package really ships its command
//! (`dpkg -S`).
use std::process::{Command, Stdio};

/// Command → the Debian package that ships it (as `dpkg -S` names it).
pub const TOOLS: &[(&str, &str)] = &[
    // Base system.
    ("bash", "bash"),
    ("sh", "dash"),
    ("tar", "tar"),
    ("cat", "coreutils"),
    ("sha256sum", "coreutils"),
    ("chroot", "coreutils"),
    ("chown", "coreutils"),
    ("timeout", "coreutils"),
    ("nice", "coreutils"),
    ("prlimit", "util-linux"),
    ("setpriv", "util-linux"),
    ("unshare", "util-linux"),
    ("mount", "mount"),
    ("umount", "mount"),
    ("dpkg", "dpkg"),
    ("dpkg-deb", "dpkg"),
    ("dpkg-query", "dpkg"),
    // Networking.
    ("ip", "iproute2"),
    ("tc", "iproute2"),
    ("ss", "iproute2"),
    ("nstat", "iproute2"),
    ("sysctl", "procps"),
    ("nft", "nftables"),
    ("ethtool", "ethtool"),
    ("bpftool", "bpftool"),
    ("tshark", "tshark"),
    // Clients and servers of the lab.
    ("curl", "curl"),
    ("dig", "bind9-dnsutils"),
    ("dnsmasq", "dnsmasq-base"),
    ("unbound", "unbound"),
    ("ldns-signzone", "ldnsutils"),
    ("ldns-keygen", "ldnsutils"),
    ("nginx", "nginx"),
    ("sipp", "sip-tester"),
    ("python3", "python3-minimal"),
    ("openssl", "openssl"),
    ("h2load", "nghttp2-client"),
    ("debootstrap", "debootstrap"),
    ("redis-server", "redis-server"),
    ("redis-cli", "redis-tools"),
    ("danted", "dante-server"),
    // The dashboard's browser tests (`tests/web`): node runs playwright-core, which drives
    // Debian's chromium; npm installs playwright-core (`cargo xtask setup` runs `npm ci`).
    ("node", "nodejs"),
    ("npm", "npm"),
    ("chromium", "chromium"),
    // Benchmarks only.
    ("wrk", "wrk"),
    ("dnsperf", "dnsperf"),
    ("squid", "squid"),
    ("varnishd", "varnish"),
    ("rtpengine", "rtpengine-daemon"),
    ("perf", "linux-perf"),
];

/// Packages every Debian system has (`Essential: yes` or `Priority: required`): setup need not
/// install them.
pub const BASE_PACKAGES: &[&str] = &[
    "bash",
    "dash",
    "coreutils",
    "util-linux",
    "mount",
    "tar",
    "dpkg",
];

/// The package [`TOOLS`] names for `tool` (a path is reduced to its file name).
pub fn package_of(tool: &str) -> Option<&'static str> {
    let name = tool.rsplit('/').next().unwrap_or(tool);
    TOOLS.iter().find(|(t, _)| *t == name).map(|(_, p)| *p)
}

/// Panic with a clear message unless every tool is known to [`TOOLS`] and on PATH.
pub fn require_tools(tools: &[&str]) {
    let unknown: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| package_of(t).is_none())
        .collect();
    assert!(
        unknown.is_empty(),
        "tools {unknown:?} are not in velocache_tests::tools::TOOLS: add each with its Debian \
         package, and the package to `cargo xtask setup`'s lists"
    );
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "missing tools {missing:?}: run `cargo xtask setup`"
    );
}

/// Where Debian installs commands. On a merged-/usr system `dpkg` may record a file under the
/// other name of the same directory, so both are tried.
const SYSTEM_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// The package `dpkg -S` says ships `tool` in a system directory, or why none does. PATH is
/// not used: a user's own tool (a pyenv `python3`, say) may shadow the system one, and setup is
/// about the system's.
pub fn installed_package_of(tool: &str) -> Result<String, String> {
    let mut tried = Vec::new();
    for dir in SYSTEM_DIRS {
        let path = format!("{dir}/{tool}");
        if !std::path::Path::new(&path).exists() {
            continue;
        }
        for candidate in [path.clone(), alias(&path)] {
            let out = Command::new("dpkg")
                .args(["-S", &candidate])
                .stderr(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run dpkg: {e}"))?;
            if let Some(pkg) = dpkg_owner(&String::from_utf8_lossy(&out.stdout)) {
                return Ok(pkg);
            }
            tried.push(candidate);
        }
    }
    if tried.is_empty() {
        Err(format!("{tool} is not in {SYSTEM_DIRS:?}"))
    } else {
        Err(format!("no package owns {tried:?}"))
    }
}

/// `/usr/bin/x` ↔ `/bin/x`, `/usr/sbin/x` ↔ `/sbin/x`.
pub fn alias(path: &str) -> String {
    match path.strip_prefix("/usr") {
        Some(rest) => rest.to_string(),
        None => format!("/usr{path}"),
    }
}

/// The package in `dpkg -S` output (`pkg[:arch][, pkg2]: /path`), skipping diversion lines.
pub fn dpkg_owner(out: &str) -> Option<String> {
    out.lines()
        .filter(|l| !l.starts_with("diversion by"))
        .find_map(|l| l.split_once(": ").map(|(pkgs, _)| pkgs))
        .and_then(|pkgs| pkgs.split(", ").next())
        .map(|p| p.split(':').next().unwrap_or(p).trim().to_string())
}
