//! `cargo xtask demo`: the main job, end to end, in the lab.
//!
//! Builds the daemon, brings the three namespaces up, starts real servers in `origin` and the
//! daemon in `gw`, drives real clients in `client`, prints the daemon's JSON log as it goes,
//! shows fail-open by killing the daemon, and tears everything down — checking that no lab
//! namespace is left behind.
//!
//! Each capability adds one module here: its servers and daemon configuration ([`Part::setup`])
//! and its client steps ([`Part::run`]). The parts share one lab and one daemon.
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use velocache_tests::{Background, Daemon, Lab, addr};

use crate::{setup, util};

mod dns;
mod http;
mod https;
mod passthrough;
mod sip;

/// What a part's setup returns: the servers it started (kept alive for the whole demo) and
/// the daemon configuration it needs (TOML, merged with the other parts').
pub type Setup = (Vec<Background>, String);

/// One capability's share of the demo.
pub struct Part {
    /// Heading.
    pub name: &'static str,
    /// Start this part's servers in the lab (`dir` is its scratch directory).
    pub setup: fn(&Lab, &std::path::Path) -> Result<Setup>,
    /// Drive clients and print what happened.
    pub run: fn(&mut Demo<'_>) -> Result<()>,
}

/// The daemon's log filter in the demo: info, plus DNS at debug so cache hits show too.
const DEMO_LOG: &str = "info,velocache::dns=debug";

/// The parts, in the order they run.
const PARTS: &[Part] = &[
    passthrough::PART,
    dns::PART,
    http::PART,
    https::PART,
    sip::PART,
];

/// What a part's `run` gets: the lab, the daemon, and printing helpers.
pub struct Demo<'a> {
    /// The lab.
    pub lab: &'a Lab,
    /// The running daemon.
    pub daemon: Daemon,
    printed: usize,
    step: u32,
}

impl Demo<'_> {
    /// Print a numbered step heading.
    pub fn step(&mut self, what: &str) {
        self.step += 1;
        println!("\n[{}] {what}", self.step);
    }

    /// Run a client command; return its stdout or fail with its output.
    pub fn client(&self, args: &[&str]) -> Result<String> {
        let out = self.lab.client.run(args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "{args:?} failed: {}{}",
                text,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(text)
    }

    /// Print the daemon's log lines that appeared since the last call, indented.
    pub fn print_log(&mut self) {
        let text = self.daemon.log_text();
        let lines: Vec<&str> = text.lines().collect();
        for line in lines.iter().skip(self.printed) {
            println!("    {line}");
        }
        self.printed = lines.len();
    }

    /// Replace the daemon (after a kill or a stop) with a fresh one using the same config — and
    /// the same directory, which the config names as its state and runtime directories (the
    /// cache the first daemon filled is still there).
    pub fn restart(&mut self) {
        let config = self.daemon.config.clone();
        let dir = self.daemon.take_dir();
        self.daemon = Daemon::start_with(self.lab, dir, config, &[("RUST_LOG", DEMO_LOG)]);
        self.printed = 0;
    }

    /// Wait a little for asynchronous log lines (flow ends, counters) to appear.
    pub fn settle(&self, ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

/// Run the demo.
pub fn run() -> Result<()> {
    util::require_root("the demo")?;
    setup::run(setup::Profile::Test)?;
    let bin = util::build_daemon(false)?;
    velocache_tests::set_velocache_bin(bin);
    let before = netns_list()?;

    {
        let lab = Lab::new();
        println!(
            "lab: client `{}` ({}) — gw `{}` (VeloCache on {}) — origin `{}` ({})",
            lab.client.name(),
            addr::CLIENT,
            lab.gw.name(),
            addr::LAN_IF,
            lab.origin.name(),
            addr::ORIGIN
        );
        let work = tempfile::tempdir()?;
        let mut servers = Vec::new();
        // The lab's default logs kernel counters every second, which would drown the demo's
        // output; the daemon logs them once more when it stops, at the end.
        let mut config = String::from("[daemon]\nstats_interval_secs = 0\n");
        for (i, part) in PARTS.iter().enumerate() {
            let dir = work.path().join(format!("part{i}"));
            std::fs::create_dir_all(&dir)?;
            let (s, c) =
                (part.setup)(&lab, &dir).with_context(|| format!("setting up {}", part.name))?;
            servers.extend(s);
            config.push_str(&c);
            config.push('\n');
        }

        println!("\n[0] start the daemon in `gw` (JSON logs)");
        let daemon = Daemon::start_env(&lab, &config, &[("RUST_LOG", DEMO_LOG)]);
        let mut demo = Demo {
            lab: &lab,
            daemon,
            printed: 0,
            step: 0,
        };
        demo.print_log();
        for part in PARTS {
            println!("\n== {} ==", part.name);
            (part.run)(&mut demo).with_context(|| format!("demo part {}", part.name))?;
        }

        demo.step("stop the daemon cleanly");
        let status = demo.daemon.stop();
        demo.print_log();
        println!("    daemon exited: {status}");
        let rules = lab.gw.run_ok(&["ip", "rule"]);
        println!(
            "    policy rules left in gw: {}",
            if rules.contains("0x5643") {
                "SOME (bug)"
            } else {
                "none"
            }
        );
        drop(servers);
    }

    println!("\n[end] teardown");
    let after = netns_list()?;
    let leaked: Vec<&String> = after.iter().filter(|n| !before.contains(n)).collect();
    if !leaked.is_empty() {
        bail!("namespaces left behind: {leaked:?}");
    }
    println!("    `ip netns list` is as before the demo: nothing left behind");
    Ok(())
}

fn netns_list() -> Result<Vec<String>> {
    let out = util::output(std::process::Command::new("ip").args(["netns", "list"]))
        .context("ip netns list")?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect())
}
