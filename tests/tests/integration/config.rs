//! The configuration as a user meets it: `velocache run` with a bad file, `config check`.
use std::process::Command;

use velocache_tests::velocache_bin;

fn velocache(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(velocache_bin());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn run_with_a_bad_file_fails_at_start_naming_file_line_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("velocache.toml");
    std::fs::write(
        &path,
        "[datapath]\nlan_interfaces = []\n\n[dns]\nlisten_port = \"fifty-three\"\n",
    )
    .unwrap();
    let out = velocache(&["run", "--config", &path.display().to_string()], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:5", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("dns.listen_port"), "{stderr}");
    assert!(stderr.contains("string"), "{stderr}");
    // Nothing started: no JSON log line was printed.
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn config_check_shows_env_over_file_over_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("velocache.toml");
    std::fs::write(
        &path,
        "[http]\nlisten_port = 25080\n[dns]\nlisten_port = 25053\n",
    )
    .unwrap();
    let out = velocache(
        &["config", "check", &path.display().to_string()],
        &[("VELOCACHE_DNS__LISTEN_PORT", "35053")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let rendered: toml::Table = text
        .split_once('\n')
        .map(|(_, rest)| rest)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        rendered["dns"]["listen_port"].as_integer(),
        Some(35053),
        "env wins"
    );
    assert_eq!(
        rendered["http"]["listen_port"].as_integer(),
        Some(25080),
        "file wins"
    );
    assert_eq!(
        rendered["sip"]["listen_port"].as_integer(),
        Some(15060),
        "default stays"
    );
}
