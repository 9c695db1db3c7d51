//! Deployment on a gateway: the systemd unit's capabilities are enough (and each is needed);
//! `install.sh` then `uninstall.sh`, and the `.deb` installed then purged, leave a Debian root
//! exactly as they found it.
//!
//! The Debian root is made by `debootstrap` (minbase, plus systemd and iproute2) once and kept
//! as a tarball under `target/deploy-root/`, so later runs only unpack it. Scripts run in it by
//! `chroot`, inside a private mount namespace (`unshare --mount`) that holds its `/proc`: the
//! machine's own `/etc` and systemd are never touched.
use std::{
    collections::BTreeMap,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use velocache_tests::{
    Daemon, Lab, addr,
    dns::{dig, unbound_zone},
    require_tools, velocache_bin,
};

use crate::util::{http_server, random_file};

const WAIT: Duration = Duration::from_secs(20);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The capabilities `deploy/velocache.service` keeps, lower-case without `cap_`.
fn unit_capabilities() -> Vec<String> {
    let unit = std::fs::read_to_string(workspace().join("deploy/velocache.service")).unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .unwrap_or_else(|| panic!("the unit sets no CapabilityBoundingSet"));
    line.split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect()
}

/// Start the daemon in a lab with only `caps` in its bounding set — what systemd's
/// `CapabilityBoundingSet=` leaves a root service — and see whether it intercepts HTTP and
/// answers DNS (whose replies leave from a transparent socket bound to the resolver's port 53).
fn intercepts_with(caps: &[String]) -> Result<(), String> {
    let lab = Lab::new();
    let www = tempfile::tempdir().unwrap();
    random_file(&www.path().join("a.bin"), 1000);
    let _origin = http_server(&lab.origin, www.path(), 80);
    let zone_dir = tempfile::tempdir().unwrap();
    let _zone = unbound_zone(&lab.origin, zone_dir.path(), &[addr::ORIGIN], "");
    let dir = tempfile::tempdir().unwrap();
    let dns = format!("[dns]\nupstreams = [\"{}:53\"]\n", addr::ORIGIN);
    let config = Daemon::lab_config(dir.path(), &dns);
    let keep: Vec<String> = caps.iter().map(|c| format!("+{c}")).collect();
    let bounding = format!("--bounding-set=-all,{}", keep.join(","));
    let wrapper = ["setpriv", bounding.as_str(), "--inh-caps=-all", "--"];
    let daemon = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Daemon::start_wrapped(&lab, dir, config, &[], &wrapper)
    }))
    .map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "start-up failed".into())
    })?;
    lab.client.run_ok(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-o",
        "/dev/null",
        &format!("http://{}/a.bin", addr::ORIGIN),
    ]);
    daemon.wait_for_log(WAIT, |l| l["message"] == "flow" && l["service"] == "http");
    let answer = dig(
        &lab.client,
        &[&format!("@{}", addr::ORIGIN), "www.test.lab"],
    );
    if answer.status != "NOERROR" {
        return Err(format!(
            "no DNS answer through the daemon:\n{}",
            answer.text
        ));
    }
    Ok(())
}

#[test]
fn the_units_capabilities_are_enough_and_each_is_needed() {
    require_tools(&["setpriv", "curl", "python3", "dig", "unbound"]);
    let caps = unit_capabilities();
    assert_eq!(
        caps,
        ["bpf", "perfmon", "net_admin", "net_bind_service"],
        "update this test and the unit's comment"
    );
    intercepts_with(&caps).unwrap_or_else(|e| panic!("with {caps:?} only: {e}"));
    for dropped in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != dropped).cloned().collect();
        let result = intercepts_with(&fewer);
        assert!(
            result.is_err(),
            "the daemon runs without CAP_{}: drop it from the unit",
            dropped.to_ascii_uppercase()
        );
    }
}

/// Run `cmd` and panic with its output unless it succeeds; returns stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A throwaway Debian root, unpacked from the cached debootstrap tarball (made on first use).
struct DebianRoot {
    dir: tempfile::TempDir,
}

impl DebianRoot {
    fn new() -> DebianRoot {
        let cache = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join("target"))
            .join("deploy-root");
        let tarball = cache.join("bookworm-minbase.tar");
        if !tarball.exists() {
            std::fs::create_dir_all(&cache).unwrap();
            let build = tempfile::tempdir_in(&cache).unwrap();
            let root = build.path().join("root");
            run(Command::new("debootstrap").args([
                "--variant=minbase",
                "--include=systemd,iproute2",
                "bookworm",
                &root.display().to_string(),
                "http://deb.debian.org/debian",
            ]));
            let partial = cache.join("bookworm-minbase.tar.partial");
            run(Command::new("tar")
                .args(["--numeric-owner", "-C"])
                .arg(&root)
                .arg("-cf")
                .arg(&partial)
                .arg("."));
            std::fs::rename(&partial, &tarball).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("tar")
            .args(["--numeric-owner", "-C"])
            .arg(dir.path())
            .arg("-xf")
            .arg(&tarball));
        DebianRoot { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Run a shell command in the root, with its own /proc in a private mount namespace.
    fn sh(&self, script: &str) -> std::process::Output {
        let root = self.path().display().to_string();
        Command::new("unshare")
            .args(["--mount", "--fork", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount -t proc proc '{root}/proc' && exec chroot '{root}' /bin/sh -c \"$0\"",
            ))
            .arg(script)
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .output()
            .unwrap()
    }

    /// [`DebianRoot::sh`], panicking unless it succeeds; returns stdout and stderr.
    fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "`{script}` failed in the root:\n{text}"
        );
        text
    }

    /// Every path in the root with its type, mode, owner, size and (for files) content hash,
    /// less what changes by itself or is the package manager's own record.
    fn listing(&self) -> BTreeMap<String, String> {
        const VOLATILE: [&str; 5] = ["proc", "tmp", "var/lib/dpkg", "var/log", "var/cache"];
        let mut out = BTreeMap::new();
        let mut stack = vec![self.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let p = entry.path();
                let rel = p.strip_prefix(self.path()).unwrap().display().to_string();
                if VOLATILE
                    .iter()
                    .any(|v| rel == *v || rel.starts_with(&format!("{v}/")))
                {
                    continue;
                }
                let meta = std::fs::symlink_metadata(&p).unwrap();
                let kind = if meta.is_dir() {
                    stack.push(p.clone());
                    "dir".to_string()
                } else if meta.file_type().is_symlink() {
                    format!("link->{}", std::fs::read_link(&p).unwrap().display())
                } else if meta.is_file() {
                    let data = std::fs::read(&p).unwrap_or_default();
                    format!("file {} {:x}", meta.len(), fingerprint(&data))
                } else {
                    // Device nodes, fifos, sockets: never read (/dev/zero has no end).
                    format!("special {:x}", meta.rdev())
                };
                out.insert(
                    rel,
                    format!(
                        "{kind} {:o} {}:{}",
                        meta.permissions().mode(),
                        meta.uid(),
                        meta.gid()
                    ),
                );
            }
        }
        out
    }
}

/// A cheap content fingerprint (FNV-1a), enough to see a file changed.
fn fingerprint(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn differences(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let mut diff = Vec::new();
    for (k, v) in after {
        match before.get(k) {
            None => diff.push(format!("left behind: /{k} ({v})")),
            Some(b) if b != v => diff.push(format!("changed: /{k}: {b} -> {v}")),
            _ => {}
        }
    }
    for k in before.keys().filter(|k| !after.contains_key(*k)) {
        diff.push(format!("removed: /{k}"));
    }
    diff
}

/// The debug `.deb`: `$VELOCACHE_DEB` (set by `cargo xtask test`), else built now.
fn debug_deb() -> PathBuf {
    if let Some(p) = std::env::var_os("VELOCACHE_DEB") {
        return PathBuf::from(p);
    }
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(workspace())
            .args(["run", "-q", "-p", "xtask", "--", "package", "--debug"]),
    );
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
        .join("debian/velocache-debug.deb")
}

#[test]
fn install_and_uninstall_scripts_and_the_deb_leave_a_debian_root_as_they_found_it() {
    require_tools(&["debootstrap", "unshare", "chroot", "tar", "dpkg-deb"]);
    let root = DebianRoot::new();
    // What the install needs, where an operator would have it: a copy of deploy/ and a binary.
    let src = root.path().join("opt/vc-src");
    std::fs::create_dir_all(&src).unwrap();
    for f in [
        "install.sh",
        "uninstall.sh",
        "velocache.toml",
        "rules.toml",
        "velocache.service",
    ] {
        std::fs::copy(workspace().join("deploy").join(f), src.join(f)).unwrap();
    }
    std::fs::copy(velocache_bin(), src.join("velocache")).unwrap();
    std::fs::copy(debug_deb(), src.join("velocache.deb")).unwrap();
    let pristine = root.listing();

    // 1. install.sh with LAN interfaces and enabled at boot; run twice (an upgrade).
    let out = root.sh_ok("sh /opt/vc-src/install.sh --lan eth1,eth2 --enable");
    assert!(out.contains("installed /usr/local/bin/velocache"), "{out}");
    root.sh_ok("sh /opt/vc-src/install.sh");
    let version = root.sh_ok("velocache --version");
    assert!(version.starts_with("velocache "), "{version}");
    let config = std::fs::read_to_string(root.path().join("etc/velocache/velocache.toml")).unwrap();
    assert!(
        config.contains("lan_interfaces = [\"eth1\", \"eth2\"]"),
        "{config}"
    );
    root.sh_ok("velocache config check /etc/velocache/velocache.toml");
    root.sh_ok("velocache rules check /etc/velocache/rules.toml");
    let unit =
        std::fs::read_to_string(root.path().join("etc/systemd/system/velocache.service")).unwrap();
    assert!(
        unit.contains(
            "ExecStart=/usr/local/bin/velocache run --config /etc/velocache/velocache.toml"
        ),
        "{unit}"
    );
    assert!(
        std::fs::symlink_metadata(
            root.path()
                .join("etc/systemd/system/multi-user.target.wants/velocache.service")
        )
        .is_ok(),
        "--enable made the boot symlink"
    );
    // systemd itself reads the unit without complaint.
    let verify = root.sh("systemd-analyze verify /etc/systemd/system/velocache.service");
    assert!(
        verify.status.success(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    // systemd-analyze's own marker, not the installer's.
    let _ = std::fs::remove_file(root.path().join("run/systemd/systemd-units-load"));

    // 2. The operator edits the rules; uninstall keeps that file (and only it).
    let rules = root.path().join("etc/velocache/rules.toml");
    let mut text = std::fs::read_to_string(&rules).unwrap();
    text.push_str("\n# local change\n");
    std::fs::write(&rules, text).unwrap();
    // Runtime state the daemon would have made.
    std::fs::create_dir_all(root.path().join("var/lib/velocache/ca")).unwrap();
    std::fs::write(root.path().join("var/lib/velocache/ca/ca.pem"), "x").unwrap();
    let out = root.sh_ok("sh /opt/vc-src/uninstall.sh");
    assert!(out.contains("kept /etc/velocache/rules.toml"), "{out}");
    let diff = differences(&pristine, &root.listing());
    assert_eq!(
        diff,
        vec![
            "left behind: /etc/velocache (dir 40755 0:0)".to_string(),
            format!(
                "left behind: /etc/velocache/rules.toml ({})",
                root.listing()["etc/velocache/rules.toml"]
            ),
        ],
        "only the edited file (and its directory) stay"
    );
    std::fs::remove_file(&rules).unwrap();
    std::fs::remove_dir(root.path().join("etc/velocache")).unwrap();
    assert_eq!(
        differences(&pristine, &root.listing()),
        Vec::<String>::new()
    );

    // 3. Unmodified: nothing at all is left.
    root.sh_ok("sh /opt/vc-src/install.sh --prefix /usr/local");
    root.sh_ok("sh /opt/vc-src/uninstall.sh --prefix /usr/local");
    assert_eq!(
        differences(&pristine, &root.listing()),
        Vec::<String>::new()
    );

    // 4. The .deb: dpkg installs the unit and the conffiles; purge removes every trace.
    root.sh_ok("dpkg -i /opt/vc-src/velocache.deb");
    for f in [
        "usr/bin/velocache",
        "usr/lib/systemd/system/velocache.service",
        "etc/velocache/velocache.toml",
        "etc/velocache/rules.toml",
    ] {
        assert!(
            root.path().join(f).exists(),
            "{f} not installed by the .deb"
        );
    }
    let status = root.sh_ok("dpkg-query -W -f='${Status} ${Conffiles}' velocache");
    assert!(status.starts_with("install ok installed"), "{status}");
    assert!(status.contains("/etc/velocache/velocache.toml"), "{status}");
    // install.sh refuses to fight the package.
    let refused = root.sh("sh /opt/vc-src/install.sh");
    assert!(!refused.status.success());
    std::fs::create_dir_all(root.path().join("var/lib/velocache")).unwrap();
    root.sh_ok("dpkg --purge velocache");
    assert_eq!(
        differences(&pristine, &root.listing()),
        Vec::<String>::new()
    );
}
