//! Configuration and rules files: TOML text as an operator writes it.
use velocache::rules::{Facts, RuleSet};

/// Any text given as `rules.toml` or `velocache.toml` is loaded or refused with a line and a
/// reason, never a panic; what loads is valid (`validate`), can be shown (`flatten`), and its
/// rules can be evaluated.
pub fn config_files(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match RuleSet::parse(text, "rules.toml") {
        Ok(set) => {
            for host in [
                "example.com",
                "a.b.example.com",
                "",
                "xn--bcher-kva.example",
            ] {
                let _ = set.evaluate(&Facts::dns(host));
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    match velocache::config::load_text(text, std::path::Path::new("velocache.toml")) {
        Ok(config) => {
            config.validate().expect("a loaded configuration is valid");
            let _ = config.flatten();
            let _ = config.intercepts();
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}
