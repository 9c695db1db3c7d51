use std::io::Write as _;

use super::*;

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_apply_without_file_or_env() {
    let c = load_with_env(None, env(&[])).unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.dns.ports, vec![53]);
    assert_eq!(c.http.listen_port, 15080);
}

#[test]
fn file_overrides_defaults() {
    let f = file("[dns]\nlisten_port = 25053\n[datapath]\nlan_interfaces = [\"lan0\"]\n");
    let c = load_with_env(Some(f.path()), env(&[])).unwrap();
    assert_eq!(c.dns.listen_port, 25053);
    assert_eq!(c.datapath.lan_interfaces, vec!["lan0".to_string()]);
    // Untouched keys keep their defaults.
    assert_eq!(c.dns.ports, vec![53]);
    assert_eq!(c.http.listen_port, 15080);
}

#[test]
fn env_overrides_file_which_overrides_default() {
    let f = file("[dns]\nlisten_port = 25053\nenabled = true\n[http]\nlisten_port = 25080\n");
    let c = load_with_env(
        Some(f.path()),
        env(&[
            ("VELOCACHE_DNS__LISTEN_PORT", "35053"),
            ("VELOCACHE_DATAPATH__LAN_INTERFACES", "[\"eth7\", \"eth8\"]"),
            // Not a configuration key: must be ignored, not rejected.
            ("VELOCACHE_ENV", "production"),
            ("UNRELATED", "x"),
        ]),
    )
    .unwrap();
    assert_eq!(c.dns.listen_port, 35053, "env wins over file");
    assert_eq!(c.http.listen_port, 25080, "file wins over default");
    assert_eq!(c.sip.listen_port, 15060, "default stays");
    assert_eq!(c.datapath.lan_interfaces, vec!["eth7", "eth8"]);
}

#[test]
fn syntax_error_names_file_line_and_column() {
    let f = file("[dns]\nlisten_port = 15053\nports = [53,\n");
    let err = load_with_env(Some(f.path()), env(&[])).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{msg}");
    assert!(msg.contains(&f.path().display().to_string()), "{msg}");
    assert!(
        msg.contains(":3:") || msg.contains(":4:"),
        "line missing: {msg}"
    );
}

#[test]
fn wrong_type_names_file_line_key_and_reason() {
    let f = file("[log]\nlevel = \"info\"\n\n[dns]\nlisten_port = \"fast\"\n");
    let err = load_with_env(Some(f.path()), env(&[])).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{}:5:", f.path().display())),
        "{msg}"
    );
    assert!(msg.contains("dns.listen_port"), "{msg}");
    assert!(msg.contains("string"), "reason missing: {msg}");
}

#[test]
fn unknown_key_is_rejected_with_its_name() {
    let f = file("[http]\nlisten_prot = 1\n");
    let msg = load_with_env(Some(f.path()), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("http.listen_prot"), "{msg}");
    assert!(msg.contains(":2"), "{msg}");
}

#[test]
fn bad_env_value_names_the_variable() {
    let msg = load_with_env(None, env(&[("VELOCACHE_SIP__LISTEN_PORT", "-3")]))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("VELOCACHE_SIP__LISTEN_PORT"), "{msg}");
    assert!(msg.contains("sip.listen_port"), "{msg}");
}

#[test]
fn validation_rejects_port_owned_twice() {
    let f = file("[sip]\nports = [53]\n");
    let msg = load_with_env(Some(f.path()), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("sip.ports"), "{msg}");
    assert!(msg.contains("already intercepted by `dns`"), "{msg}");
    assert!(msg.contains(":2"), "{msg}");
}

#[test]
fn validation_rejects_shared_listener_port() {
    let msg = load_with_env(None, env(&[("VELOCACHE_HTTPS__LISTEN_PORT", "15080")]))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("https.listen_port"), "{msg}");
    assert!(msg.contains("VELOCACHE_HTTPS__LISTEN_PORT"), "{msg}");
}

#[test]
fn bad_prefix_is_rejected() {
    let f = file("[datapath]\nbypass_clients = [\"10.0.0.0/33\"]\n");
    let msg = load_with_env(Some(f.path()), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("datapath.bypass_clients"), "{msg}");
}

#[test]
fn missing_file_is_a_read_error() {
    let err =
        load_with_env(Some(std::path::Path::new("/nonexistent/v.toml")), env(&[])).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
}

#[test]
fn example_configs_pass_check() {
    // Every shipped config must load (hickory's config/tests.rs habit).
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut checked = 0;
    for dir in ["deploy", "deploy/examples"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".toml") && name.starts_with("velocache") {
                load_with_env(Some(&p), env(&[]))
                    .unwrap_or_else(|e| panic!("{} does not load: {e}", p.display()));
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "no example configs found under deploy/");
}

/// Every key of `[section]` that the shipped configuration mentions, set or commented out.
fn documented_keys(text: &str) -> std::collections::BTreeSet<String> {
    let mut keys = std::collections::BTreeSet::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim().trim_start_matches('#').trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
        } else if let Some((key, _)) = line.split_once('=') {
            let key = key.trim();
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                keys.insert(format!("{section}.{key}"));
            }
        }
    }
    keys
}

#[test]
fn the_shipped_config_documents_every_key() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/velocache.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let documented = documented_keys(&text);
    let every = Config::default().flatten();
    let missing: Vec<&String> = every.keys().filter(|k| !documented.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "deploy/velocache.toml does not mention {missing:?}"
    );
}
