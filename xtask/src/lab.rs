//! `cargo xtask lab`: the lab with a running daemon, kept until Ctrl-C.
use anyhow::Result;
use velocache_tests::{Daemon, Lab, addr};

use crate::util;

/// Bring the lab up and wait.
pub fn run() -> Result<()> {
    util::require_root("the lab")?;
    let bin = util::build_daemon(false)?;
    velocache_tests::set_velocache_bin(bin);
    let lab = Lab::new();
    let _daemon = Daemon::start(&lab, "");
    println!(
        "lab up: client `{}` ({}), gw `{}` (daemon on {}), origin `{}` ({})",
        lab.client.name(),
        addr::CLIENT,
        lab.gw.name(),
        addr::LAN_IF,
        lab.origin.name(),
        addr::ORIGIN
    );
    println!(
        "try: ip netns exec {} curl http://{}/   — Ctrl-C tears it down",
        lab.client.name(),
        addr::ORIGIN
    );
    loop {
        std::thread::park();
    }
}
