//! The velocache daemon inside a lab's `gw` namespace, and its JSON log.
use std::{
    path::PathBuf,
    process::{ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use serde_json::Value;
use tempfile::TempDir;

use crate::{Background, Lab, lab::addr};

static BIN_OVERRIDE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Use `path` as the daemon binary for the rest of this process (xtask passes the build it just
/// made). The first call wins.
pub fn set_velocache_bin(path: PathBuf) {
    let _ = BIN_OVERRIDE.set(path);
}

/// Path of the `velocache` binary under test: the one given to [`set_velocache_bin`], else
/// `$VELOCACHE_BIN`, else the workspace's `target/release` or `target/debug` build, whichever
/// is newer.
pub fn velocache_bin() -> PathBuf {
    if let Some(p) = BIN_OVERRIDE.get() {
        return p.clone();
    }
    if let Some(p) = std::env::var_os("VELOCACHE_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let candidates = [
        target.join("debug/velocache"),
        target.join("release/velocache"),
    ];
    candidates
        .iter()
        .filter_map(|p| Some((std::fs::metadata(p).ok()?.modified().ok()?, p.clone())))
        .max()
        .map(|(_, p)| p)
        .unwrap_or_else(|| {
            panic!("no velocache binary under {}: run `cargo build -p velocache` or `cargo xtask test`", target.display())
        })
}

/// A running daemon. Dropping it stops it (SIGINT, then SIGKILL).
pub struct Daemon {
    process: Background,
    dir: TempDir,
    /// The configuration it was started with.
    pub config: String,
}

impl Daemon {
    /// The base configuration for a lab daemon — the lab's LAN interface, state and runtime
    /// directories under `dir`, short intervals — deep-merged with `extra` (TOML; its keys win,
    /// so `extra` may add keys to `[datapath]` or `[daemon]` too).
    pub fn lab_config(dir: &std::path::Path, extra: &str) -> String {
        let base = format!(
            "[daemon]\nstate_dir = \"{state}\"\nrun_dir = \"{run}\"\nstats_interval_secs = 1\nshutdown_grace_secs = 2\n\n[datapath]\nlan_interfaces = [\"{lan}\"]\nudp_idle_timeout_secs = 2\n",
            state = dir.join("state").display(),
            run = dir.join("run").display(),
            lan = addr::LAN_IF,
        );
        let mut base: toml::Table = base.parse().unwrap_or_else(|e| panic!("base config: {e}"));
        let extra: toml::Table = extra
            .parse()
            .unwrap_or_else(|e| panic!("extra config is not TOML: {e}\n{extra}"));
        merge(&mut base, extra);
        toml::to_string(&base).unwrap_or_else(|e| panic!("rendering config: {e}"))
    }

    /// Start the daemon in `lab.gw` with [`Daemon::lab_config`]`(extra)`.
    pub fn start(lab: &Lab, extra: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let config = Self::lab_config(dir.path(), extra);
        Self::start_with(lab, dir, config, &[])
    }

    /// Start the daemon with [`Daemon::lab_config`]`(extra)` and extra environment variables
    /// (e.g. `RUST_LOG`).
    pub fn start_env(lab: &Lab, extra: &str, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let config = Self::lab_config(dir.path(), extra);
        Self::start_with(lab, dir, config, env)
    }

    /// Start the daemon with a complete configuration text and extra environment variables.
    pub fn start_with(lab: &Lab, dir: TempDir, config: String, env: &[(&str, &str)]) -> Daemon {
        Self::start_wrapped(lab, dir, config, env, &[])
    }

    /// Like [`Daemon::start_with`], with the daemon's command line prefixed by `wrapper` (e.g.
    /// `setpriv --bounding-set=…` to run it with only some capabilities).
    pub fn start_wrapped(
        lab: &Lab,
        dir: TempDir,
        config: String,
        env: &[(&str, &str)],
        wrapper: &[&str],
    ) -> Daemon {
        let mut daemon = Self::launch_wrapped(lab, dir, config, env, wrapper);
        daemon.wait_running();
        daemon
    }

    /// Start the daemon with [`Daemon::lab_config`]`(extra)` and return at once, before it is
    /// running (a supervisor's restart; see [`Daemon::wait_running`]).
    pub fn launch(lab: &Lab, extra: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let config = Self::lab_config(dir.path(), extra);
        Self::launch_wrapped(lab, dir, config, &[], &[])
    }

    /// Like [`Daemon::start_wrapped`], without waiting for it to run.
    pub fn launch_wrapped(
        lab: &Lab,
        dir: TempDir,
        config: String,
        env: &[(&str, &str)],
        wrapper: &[&str],
    ) -> Daemon {
        let path = dir.path().join("velocache.toml");
        std::fs::write(&path, &config).unwrap_or_else(|e| panic!("writing config: {e}"));
        let bin = velocache_bin().display().to_string();
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = lab.gw.command(program);
                c.args(rest).arg(&bin);
                c
            }
            None => lab.gw.command(&bin),
        };
        cmd.args(["run", "--config", &path.display().to_string(), "--log-format", "json"])
            .env("RUST_LOG", std::env::var("VELOCACHE_TEST_LOG").unwrap_or_else(|_| "debug,aya=info,aya_obj=info,rtnetlink=info,netlink_proto=info,hyper=info,h2=info,rustls=info,cranelift=info,wasmtime=info".into()))
            .stdout(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let process = Background::spawn(cmd, "velocache");
        Daemon {
            process,
            dir,
            config,
        }
    }

    /// Wait (up to 60 s) until the daemon logs `velocache running`; panic with its log if it
    /// exits first.
    pub fn wait_running(&mut self) {
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            if self
                .logs()
                .iter()
                .any(|l| l["message"] == "velocache running")
            {
                return;
            }
            if let Some(status) = self.process.try_wait() {
                panic!(
                    "velocache exited during start-up ({status}):\n{}\n{}",
                    self.process.stdout(),
                    self.process.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "velocache did not start within 60 s:\n{}",
            self.process.stdout()
        );
    }

    /// `velocache ARGS --config <its config>` run in `lab.gw`, as an operator would on the
    /// gateway; the output whatever the exit status.
    pub fn cli(&self, lab: &Lab, args: &[&str]) -> Output {
        let config = self.dir().join("velocache.toml");
        lab.gw
            .command(&velocache_bin().display().to_string())
            .args(args)
            .args(["--config", &config.display().to_string()])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run velocache {args:?}: {e}"))
    }

    /// The daemon's working directory (its config, state and run directories live here).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Take the daemon's directory (its config, state and run directories), leaving an empty
    /// one in its place: a restarted daemon with the same configuration gets it back with
    /// [`Daemon::start_with`]. Stop or kill this daemon first.
    pub fn take_dir(&mut self) -> TempDir {
        let fresh = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        std::mem::replace(&mut self.dir, fresh)
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Every JSON log line so far (non-JSON lines are skipped).
    pub fn logs(&self) -> Vec<Value> {
        self.process
            .stdout()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The raw log text so far (stdout, then stderr).
    pub fn log_text(&self) -> String {
        format!("{}{}", self.process.stdout(), self.process.stderr())
    }

    /// Wait (up to `limit`) for a log line matching `pred` and return it; panic with the log if
    /// none appears. The limit bounds a wait for an event, it does not measure performance.
    pub fn wait_for_log(&self, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + limit;
        loop {
            if let Some(l) = self.logs().into_iter().find(|l| pred(l)) {
                return l;
            }
            if Instant::now() >= end {
                panic!(
                    "no matching log line within {limit:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Kill the daemon with SIGKILL (no cleanup runs).
    pub fn kill9(&mut self) {
        self.process.signal(Signal::SIGKILL);
        let _ = self.process.wait_timeout(Duration::from_secs(10));
    }

    /// Send SIGKILL and return at once, as a supervisor sees a crash: the process may still be
    /// exiting (and holding the instance lock) when this returns.
    pub fn kill9_nowait(&self) {
        self.process.signal(Signal::SIGKILL);
    }

    /// Wait up to `limit` for the process to exit; its status if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.process.wait_timeout(limit)
    }

    /// Stop the daemon with SIGINT and wait for it to exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.process.signal(Signal::SIGINT);
        match self.process.wait_timeout(Duration::from_secs(30)) {
            Some(s) => s,
            None => panic!("velocache did not stop within 30 s:\n{}", self.log_text()),
        }
    }

    /// Send SIGHUP (reload).
    pub fn reload(&self) {
        self.process.signal(Signal::SIGHUP);
    }

    /// `Some(status)` if the daemon has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.process.try_wait()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.process.try_wait().is_none() {
            self.process.signal(Signal::SIGINT);
            if self.process.wait_timeout(Duration::from_secs(10)).is_none() {
                self.process.kill();
            }
        }
    }
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}
