//! The web dashboard as an operator uses it: Debian's chromium, driven by playwright-core
//! (`tests/web/e2e.mjs`), signs in to a daemon in the lab and watches real traffic.
//!
//! The daemon serves the dashboard on the gateway's LAN address (`[admin] web_listen`), with an
//! admin and a read-only token. The browser runs inside `client`, like an operator's laptop on
//! the LAN, and so do the `curl`, `dig` and `sipp` the script starts: their requests are real
//! client traffic through the gateway. `origin` serves HTTP (the scripted origin, everything
//! cacheable for an hour), DNS (dnsmasq: `*.test.lab` is 10.9.9.9) and SIP (a sipp UAS that
//! echoes RTP). The script checks each step and saves a screenshot of each view into
//! `docs/screenshots/` (the README shows them). A missing tool — node, chromium, the npm
//! package — fails the test with what to run; nothing is skipped.
use std::{path::PathBuf, process::Stdio, time::Duration};

use serde_json::json;
use velocache_tests::{
    Daemon, Lab, addr, require_tools,
    servers::wait_tcp,
    sipp::{self, Answer, PCAP_DIR},
    xdp,
};

use crate::{http::Origin, util::dns_upstream};

/// The dashboard's port on the gateway's LAN address.
const WEB_PORT: u16 = 9182;
/// The admin and read-only tokens.
const ADMIN_TOKEN: &str = "admin-3f9c2e7d51a84b06";
const READONLY_TOKEN: &str = "readonly-8d41b7e0c2f95a13";
/// The whole script's bound (it bounds each of its own waits at 20–30 s).
const SCRIPT_LIMIT: Duration = Duration::from_secs(300);

/// `tests/web`: the script, its package.json and lock file, and (after `cargo xtask setup`)
/// node_modules.
pub(crate) fn web_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web")
}

/// Panic with what to run unless node, chromium and playwright-core are installed.
pub(crate) fn require_browser() {
    require_tools(&["node", "chromium"]);
    let pkg = web_dir().join("node_modules/playwright-core/package.json");
    assert!(
        pkg.exists(),
        "{} is missing: run `cargo xtask setup` (it runs `npm ci` in tests/web)",
        pkg.display()
    );
}

#[test]
fn dashboard_in_chromium_shows_live_traffic_inspects_edits_rules_and_captures_a_call() {
    require_browser();
    require_tools(&[
        "curl", "dig", "dnsmasq", "sipp", "tshark", "python3", "ss", "ethtool",
    ]);
    let lab = Lab::new();
    xdp::prepare_for_xdp(&lab);

    let origin = Origin::start(&lab);
    std::fs::create_dir_all(origin.path("private")).unwrap();
    origin.file("a.bin", 300_000);
    for name in ["private/x.bin", "private/y.bin", "private/z.bin"] {
        origin.file(name, 10_000);
    }
    origin.route("/*", json!({"headers": {"Cache-Control": "max-age=3600"}}));
    let _dns = dns_upstream(&lab.origin, addr::ORIGIN);

    let files = tempfile::tempdir().unwrap();
    let uas_xml =
        sipp::write_scenario(files.path(), "uas.xml", &sipp::uas_scenario(Answer::Accept));
    // 7 s of G.711 from the capture sipp ships, then the call stays up 9 s before BYE: time for
    // the page to find the call and start a capture while RTP flows.
    let uac_xml = sipp::write_scenario(
        files.path(),
        "uac.xml",
        &sipp::uac_scenario(&format!("{PCAP_DIR}/g711a.pcap"), None, 9_000, false),
    );
    let _uas = sipp::start_uas(&lab.origin, addr::ORIGIN, &uas_xml, 7000, 1, "u1");
    wait_udp(&lab, 5060);

    let admin = files.path().join("admin.token");
    let readonly = files.path().join("readonly.token");
    std::fs::write(&admin, format!("{ADMIN_TOKEN}\n")).unwrap();
    std::fs::write(&readonly, format!("{READONLY_TOKEN}\n")).unwrap();
    let rules = files.path().join("rules.toml");
    std::fs::write(
        &rules,
        "# Rules edited from the dashboard in the lab test.\n\n[[rule]]\nname = \"deb-packages\"\nmatch_path = \"*.deb\"\naction = \"cache\"\nttl_override = \"30d\"\n",
    )
    .unwrap();
    let config = format!(
        "[admin]\nweb_listen = \"{gw}:{WEB_PORT}\"\ntoken_file = \"{admin}\"\nreadonly_token_file = \"{ro}\"\n\n[rules]\nfile = \"{rules}\"\n\n[dns]\nupstreams = [\"{origin}:53\"]\n\n[sip]\nmedia_interfaces = [\"{lan}\", \"{wan}\"]\nrtp_idle_timeout_secs = 5\n",
        gw = addr::GW_LAN,
        admin = admin.display(),
        ro = readonly.display(),
        rules = rules.display(),
        origin = addr::ORIGIN,
        lan = addr::LAN_IF,
        wan = addr::WAN_IF,
    );
    let daemon = Daemon::start(&lab, &config);
    wait_tcp(&lab.client, addr::GW_LAN, WEB_PORT);

    let screenshots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
    let work = tempfile::tempdir().unwrap();
    let mut cmd = lab.client.command("node");
    cmd.arg(web_dir().join("e2e.mjs"))
        .current_dir(web_dir())
        .env("VC_URL", format!("http://{}:{WEB_PORT}", addr::GW_LAN))
        .env("VC_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("VC_READONLY_TOKEN", READONLY_TOKEN)
        .env("VC_ORIGIN", addr::ORIGIN)
        .env("VC_CLIENT", addr::CLIENT)
        .env("VC_SIP_SCENARIO", &uac_xml)
        .env("VC_SCREENSHOTS", &screenshots)
        .env("VC_WORK", work.path())
        .stdin(Stdio::null());
    let (status, out) = run_bounded(cmd, SCRIPT_LIMIT);
    println!("{out}");
    if status != Some(0) {
        // Keep the failing page's screenshot and whatever was downloaded.
        let kept = work.keep();
        panic!(
            "the browser test failed ({status:?}; a screenshot of the failing page is {}):\n{out}\n--- daemon log (tail, without counters) ---\n{}",
            kept.join("failure.png").display(),
            tail(&daemon.log_text(), 40)
        );
    }
    assert!(
        out.contains("[e2e] PASS"),
        "the script ended without PASS:\n{out}"
    );
    for view in ["live", "inspector", "analytics", "rules", "calls", "cache"] {
        let png = screenshots.join(format!("{view}.png"));
        assert!(
            std::fs::metadata(&png).is_ok_and(|m| m.len() > 10_000),
            "no screenshot {}",
            png.display()
        );
    }
}

/// Run `cmd` with its output to files, killing it after `limit`; (exit code, stdout+stderr).
fn run_bounded(mut cmd: std::process::Command, limit: Duration) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = std::fs::File::create(dir.path().join("out")).unwrap();
    let err = out.try_clone().unwrap();
    let mut child = cmd.stdout(out).stderr(err).spawn().unwrap_or_else(|e| {
        panic!("cannot start node (is it installed? run `cargo xtask setup`): {e}")
    });
    let end = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if std::time::Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(dir.path().join("out")).unwrap_or_default();
    (status, text)
}

fn wait_udp(lab: &Lab, port: u16) {
    let want = format!(":{port}");
    for _ in 0..200 {
        if lab.origin.run_ok(&["ss", "-uln"]).contains(&want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("sipp UAS is not listening on UDP {port}");
}

/// The last `lines` lines of the daemon's log, without the once-a-second counter lines.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("\"kernel counters\""))
        .collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
