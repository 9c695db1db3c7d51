//! The rule editor from the shell, against a daemon in the lab: `velocache rules apply` refuses a
//! file with an error (at its line and key) and leaves the daemon's file alone; a fixed file is
//! written and reloaded, and the next request follows it; `rules dry-run` answers from the live
//! feed; `rules undo` puts the previous file back and the next request follows that again.
use velocache_tests::{Daemon, Lab, addr, require_tools};

use super::{cli, write};
use crate::util::{http_server, random_file};

const OPEN: &str = "[[rule]]\nname = \"media\"\nmatch_path = \"/media/*\"\naction = \"cache\"\n";

const TYPO: &str = "[[rule]]\nname = \"media\"\nmatch_path = \"/media/*\"\naction = \"cache\"\n\n[[rule]]\nname = \"no-a\"\nmatch_path = \"/a.bin\"\naction = \"dney\"\n";

const DENY_A: &str = "[[rule]]\nname = \"media\"\nmatch_path = \"/media/*\"\naction = \"cache\"\n\n[[rule]]\nname = \"no-a\"\nmatch_path = \"/a.bin\"\naction = \"deny\"\n";

/// The HTTP status a client's GET of `/a.bin` at the origin gets.
fn status_of_a(lab: &Lab) -> String {
    lab.client.run_ok(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{}/a.bin", addr::ORIGIN),
    ])
}

#[test]
fn rules_apply_refuses_errors_applies_a_fixed_file_for_the_next_request_and_undo_goes_back() {
    require_tools(&["curl", "python3"]);
    let lab = Lab::new();
    let www = tempfile::tempdir().unwrap();
    random_file(&www.path().join("a.bin"), 10_000);
    let _origin = http_server(&lab.origin, www.path(), 80);
    let files = tempfile::tempdir().unwrap();
    let rules = write(&files.path().join("rules.toml"), OPEN);
    let token = write(
        &files.path().join("token"),
        "0123456789abcdef0123456789abcdef\n",
    );
    let daemon = Daemon::start(
        &lab,
        &format!(
            "[rules]\nfile = \"{}\"\n[admin]\ntoken_file = \"{}\"\nweb_listen = \"127.0.0.1:9182\"\n",
            rules.display(),
            token.display()
        ),
    );
    assert_eq!(status_of_a(&lab), "200");

    // A file with an error: refused with its line and key, before anything reaches the daemon.
    let typo = write(&files.path().join("typo.toml"), TYPO);
    let out = cli(
        &lab,
        &daemon,
        &["rules", "apply", &typo.display().to_string(), "--json"],
    );
    assert_eq!(
        out.code, 1,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    let refused = out.json();
    assert_eq!(refused["applied"], false);
    assert_eq!(refused["errors"][0]["line"], 9, "{refused}");
    assert_eq!(refused["errors"][0]["key"], "rule[1].action", "{refused}");
    assert!(
        out.stderr
            .contains(&format!("{}:9: rule[1].action:", typo.display())),
        "{}",
        out.stderr
    );
    // `rules check` says the same.
    let out = cli(
        &lab,
        &daemon,
        &["rules", "check", &typo.display().to_string()],
    );
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains(":9: rule[1].action:"), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&rules).unwrap(), OPEN);
    assert_eq!(status_of_a(&lab), "200");

    // The dry run of the fixed file: the new rule would decide the requests just made (two
    // GETs of /a.bin; the live record of the last one may still be on its way).
    let fixed = write(&files.path().join("fixed.toml"), DENY_A);
    let mut dry = serde_json::Value::Null;
    for _ in 0..50 {
        let out = cli(
            &lab,
            &daemon,
            &[
                "rules",
                "dry-run",
                &fixed.display().to_string(),
                "--limit",
                "100",
                "--json",
            ],
        );
        assert_eq!(
            out.code, 0,
            "stdout: {}\nstderr: {}",
            out.stdout, out.stderr
        );
        dry = out.json();
        if dry["rules"][1]["count"].as_u64() >= Some(2) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(dry["ok"], true, "{dry}");
    assert_eq!(dry["rules"][1]["name"], "no-a", "{dry}");
    assert_eq!(dry["rules"][1]["action"], "deny", "{dry}");
    assert_eq!(dry["rules"][1]["count"], 2, "{dry}");
    assert_eq!(dry["rules"][1]["matches"][0]["what"], "GET /a.bin", "{dry}");
    assert_eq!(dry["rules"][0]["count"], 0, "{dry}");

    // The fixed file: written, reloaded, and the next request follows it.
    let out = cli(
        &lab,
        &daemon,
        &["rules", "apply", &fixed.display().to_string(), "--json"],
    );
    assert_eq!(
        out.code, 0,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    let applied = out.json();
    assert_eq!(applied["applied"], true, "{applied}");
    assert_eq!(applied["reload"]["rules"], 2, "{applied}");
    assert_eq!(std::fs::read_to_string(&rules).unwrap(), DENY_A);
    assert_eq!(status_of_a(&lab), "403");
    let shown = cli(&lab, &daemon, &["rules", "show", "--json"]).ok();
    assert_eq!(shown["rules"][1]["name"], "no-a");

    // Undo: the previous file is back, and so is the previous behaviour.
    let out = cli(&lab, &daemon, &["rules", "undo", "--json"]);
    assert_eq!(
        out.code, 0,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    assert_eq!(std::fs::read_to_string(&rules).unwrap(), OPEN);
    assert_eq!(status_of_a(&lab), "200");
    let shown = cli(&lab, &daemon, &["rules", "show", "--json"]).ok();
    assert_eq!(shown["rules"].as_array().map(Vec::len), Some(1), "{shown}");
}
