//! `cargo xtask demo`: the main job, end to end, in the lab.
//!
//! Builds the daemon, brings the three namespaces up, starts real servers in `origin` and the
//! daemon in `gw`, drives real clients in `client`, prints the daemon's JSON log as it goes,
//! shows fail-open by killing the daemon, and tears everything down — checking that no lab
//! namespace is left behind.
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use velocache_tests::{Daemon, Lab, addr};

use crate::{setup, util};

struct LogTail {
    printed: usize,
}

impl LogTail {
    /// Print the daemon's log lines that appeared since the last call.
    fn print_new(&mut self, daemon: &Daemon) {
        let text = daemon.log_text();
        let lines: Vec<&str> = text.lines().collect();
        for line in lines.iter().skip(self.printed) {
            println!("    {line}");
        }
        self.printed = lines.len();
    }
}

fn step(n: u32, what: &str) {
    println!("\n[{n}] {what}");
}

fn client(lab: &Lab, args: &[&str]) -> Result<String> {
    let out = lab.client.run(args);
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
        let www = tempfile::tempdir()?;
        std::fs::write(www.path().join("hello.txt"), "hello from the origin\n")?;
        let work = tempfile::tempdir()?;
        let _http =
            velocache_tests::servers::nginx_static(&lab.origin, www.path(), 80, work.path());
        let _dns = lab.origin.spawn(&[
            "dnsmasq",
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            &format!("--listen-address={}", addr::ORIGIN),
            "--address=/demo.lab/10.9.9.9",
            "--pid-file=",
        ]);
        std::thread::sleep(Duration::from_millis(300));

        step(1, "start the daemon in `gw` (JSON logs)");
        let mut daemon = Daemon::start_env(&lab, "", &[("RUST_LOG", "info")]);
        let mut tail = LogTail { printed: 0 };
        tail.print_new(&daemon);

        step(
            2,
            &format!(
                "client: curl http://{}/hello.txt — no proxy configured anywhere",
                addr::ORIGIN
            ),
        );
        print!(
            "    {}",
            client(
                &lab,
                &[
                    "curl",
                    "-sS",
                    "--max-time",
                    "5",
                    &format!("http://{}/hello.txt", addr::ORIGIN)
                ]
            )?
        );
        step(3, &format!("client: dig @{} www.demo.lab", addr::ORIGIN));
        print!(
            "    {}",
            client(
                &lab,
                &[
                    "dig",
                    "+short",
                    "+time=2",
                    &format!("@{}", addr::ORIGIN),
                    "www.demo.lab"
                ]
            )?
        );
        std::thread::sleep(Duration::from_millis(2500));
        println!("    daemon log:");
        tail.print_new(&daemon);

        step(
            4,
            "kill -9 the daemon: traffic must keep flowing (fail-open)",
        );
        daemon.kill9();
        print!(
            "    {}",
            client(
                &lab,
                &[
                    "curl",
                    "-sS",
                    "--max-time",
                    "5",
                    &format!("http://{}/hello.txt", addr::ORIGIN)
                ]
            )?
        );
        println!("    (served directly by the origin; nobody intercepted it)");

        step(5, "restart, then stop cleanly");
        let mut daemon = Daemon::start_env(&lab, "", &[("RUST_LOG", "info")]);
        let mut tail = LogTail { printed: 0 };
        client(
            &lab,
            &[
                "curl",
                "-sS",
                "--max-time",
                "5",
                &format!("http://{}/hello.txt", addr::ORIGIN),
            ],
        )?;
        std::thread::sleep(Duration::from_millis(300));
        let status = daemon.stop();
        tail.print_new(&daemon);
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
    }

    step(6, "teardown");
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
