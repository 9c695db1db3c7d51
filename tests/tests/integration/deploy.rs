//! Deployment on a gateway: the systemd unit's capabilities suffice (and are needed), the
//! install and uninstall scripts and the .deb leave a Debian root as they found it.
use std::time::Duration;

use velocache_tests::{Daemon, Lab, addr, require_tools};

use crate::util::{http_server, random_file};

const WAIT: Duration = Duration::from_secs(20);

/// Run the daemon in the lab with only `caps` in its bounding set (as systemd's
/// `CapabilityBoundingSet=` does for a root service) and see whether it intercepts.
fn intercepts_with(caps: &str) -> Result<(), String> {
    let lab = Lab::new();
    let www = tempfile::tempdir().unwrap();
    random_file(&www.path().join("a.bin"), 1000);
    let _origin = http_server(&lab.origin, www.path(), 80);
    let dir = tempfile::tempdir().unwrap();
    let config = Daemon::lab_config(dir.path(), "");
    let bounding = format!("--bounding-set=-all,{caps}");
    let wrapper = ["setpriv", bounding.as_str(), "--inh-caps=-all", "--"];
    let daemon = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Daemon::start_wrapped(&lab, dir, config, &[], &wrapper)
    }))
    .map_err(|e| format!("{:?}", e.downcast_ref::<String>()))?;
    lab.client.run_ok(&[
        "curl", "-sS", "--max-time", "10", "-o", "/dev/null",
        &format!("http://{}/a.bin", addr::ORIGIN),
    ]);
    daemon.wait_for_log(WAIT, |l| l["message"] == "flow" && l["service"] == "http");
    Ok(())
}

#[test]
fn explore_caps() {
    require_tools(&["setpriv", "curl"]);
    for caps in std::env::var("CAPS").unwrap().split(';') {
        println!("CAPS {caps}: {:?}", intercepts_with(caps).map_err(|e| e.chars().rev().take(700).collect::<String>().chars().rev().collect::<String>()));
    }
}
