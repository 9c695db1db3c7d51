//! `cargo xtask package`: build the `.deb` with cargo-deb (from `[package.metadata.deb]` in
//! `velocache/Cargo.toml`) and check what is in it before calling it done: the binary, the
//! systemd unit (identical to `deploy/velocache.service`), both configuration files as
//! conffiles, the maintainer scripts.
//!
//! `--debug` packages the debug build (what the lab tests use; quicker than a release build),
//! for tests of the packaging itself. Releases use the default.
use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::util;

/// Where the package lands.
fn output(debug: bool) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::root().join("target"));
    let name = if debug {
        "velocache-debug.deb"
    } else {
        "velocache.deb"
    };
    target.join("debian").join(name)
}

/// Build and check the package; returns its path.
pub fn run(debug: bool) -> Result<PathBuf> {
    crate::setup::ensure_cargo_deb()?;
    util::build_daemon(!debug)?;
    let deb = output(debug);
    let mut cmd = util::cargo();
    cmd.current_dir(util::root())
        .args(["deb", "-p", "velocache", "--no-build", "--output"]);
    cmd.arg(&deb);
    if debug {
        // cargo-deb warns about the dev profile: this package is for tests, not for release.
        cmd.args(["--profile", "dev", "--fast"]);
    }
    util::run(&mut cmd).context("cargo deb failed")?;
    check(&deb)?;
    println!("package: {} (checked)", deb.display());
    Ok(deb)
}

/// What `dpkg-deb` says is in the package, checked against what must be.
pub fn check(deb: &std::path::Path) -> Result<()> {
    let info = util::output(Command::new("dpkg-deb").arg("--info").arg(deb))?;
    let contents = util::output(Command::new("dpkg-deb").arg("--contents").arg(deb))?;
    let conffiles = util::output(
        Command::new("dpkg-deb")
            .arg("--info")
            .arg(deb)
            .arg("conffiles"),
    )?;
    let mut missing = Vec::new();
    for want in [
        "Package: velocache",
        "conffiles",
        "postinst",
        "prerm",
        "postrm",
    ] {
        if !info.contains(want) {
            missing.push(format!("`{want}` in dpkg-deb --info"));
        }
    }
    for want in [
        "./usr/bin/velocache",
        "/systemd/system/velocache.service",
        "./etc/velocache/velocache.toml",
        "./etc/velocache/rules.toml",
    ] {
        if !contents.lines().any(|l| l.ends_with(want)) {
            missing.push(format!("{want} in dpkg-deb --contents"));
        }
    }
    for want in ["/etc/velocache/velocache.toml", "/etc/velocache/rules.toml"] {
        if !conffiles.lines().any(|l| l.trim() == want) {
            missing.push(format!("{want} as a conffile"));
        }
    }
    if !missing.is_empty() {
        bail!(
            "{} lacks: {}\n{info}\n{contents}",
            deb.display(),
            missing.join(", ")
        );
    }
    // The unit in the package is the one in deploy/, byte for byte.
    let dir = tempfile::tempdir()?;
    util::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir.path()))?;
    let unit = ["usr/lib/systemd/system", "lib/systemd/system"]
        .iter()
        .map(|d| dir.path().join(d).join("velocache.service"))
        .find(|p| p.exists())
        .context("no velocache.service in the package")?;
    let shipped = std::fs::read(util::root().join("deploy/velocache.service"))?;
    if std::fs::read(&unit)? != shipped {
        bail!("the packaged unit differs from deploy/velocache.service");
    }
    Ok(())
}
