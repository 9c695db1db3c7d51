//! Reloading configuration and rules in a running daemon (SIGHUP, `velocache service reload`,
//! `velocache rules reload`) without dropping a flow.
//!
//! The configuration file is read again with the same loader as at start (defaults < file <
//! environment). A file that does not load keeps the running configuration, and the log names
//! the file, line, key and reason. Otherwise the new settings are compared with the running
//! ones, key by key:
//! - settings that can change live are applied: `log.level` (through the tracing reload
//!   handle), the datapath's bypass lists, `intercept_gateway_addresses` and every service's
//!   `ports` (rewritten into the kernel maps in place, nothing is detached), `rules.file`, and
//!   `daemon.shutdown_grace_secs`;
//! - every other changed setting is listed (log and `service status`) as needing a restart;
//!   the running value stays. Listener ports, interfaces, marks, the services' own settings
//!   are built into sockets, kernel attachments and handlers at start.
//!
//! Rules are re-read each time (from the new file if `rules.file` changed); a bad rules file
//! keeps the rules in force and the log gives `FILE:LINE: reason`.
use std::{
    sync::PoisonError,
    time::{SystemTime, UNIX_EPOCH},
};

use tracing::{error, info, warn};

use super::plane::ControlPlane;
use crate::{
    admin::api::{ConfigReload, ReloadReport, RulesReloadReport},
    config::{self, Config, ConfigError},
};

/// Dotted keys (or key prefixes ending in `.`) whose change takes effect without a restart.
const LIVE_KEYS: &[&str] = &[
    "log.level",
    "datapath.bypass_clients",
    "datapath.bypass_destinations",
    "datapath.intercept_gateway_addresses",
    "http.ports",
    "https.ports",
    "dns.ports",
    "sip.ports",
    "rules.file",
    "daemon.shutdown_grace_secs",
];

/// Keys that go into the kernel maps.
const DATAPATH_KEYS: &[&str] = &[
    "datapath.bypass_clients",
    "datapath.bypass_destinations",
    "datapath.intercept_gateway_addresses",
    "http.ports",
    "https.ports",
    "dns.ports",
    "sip.ports",
];

/// Keys whose values differ between `a` and `b`.
pub fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    let (a, b) = (a.flatten(), b.flatten());
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Whether a change of `key` applies live.
pub fn is_live(key: &str) -> bool {
    LIVE_KEYS.contains(&key)
}

/// `running` with the live settings of `new` applied (rules.file excepted: it is switched
/// separately, only if the new file loads).
fn apply_live(running: &Config, new: &Config) -> Config {
    let mut c = running.clone();
    c.log.level = new.log.level.clone();
    c.datapath.bypass_clients = new.datapath.bypass_clients.clone();
    c.datapath.bypass_destinations = new.datapath.bypass_destinations.clone();
    c.datapath.intercept_gateway_addresses = new.datapath.intercept_gateway_addresses;
    c.http.ports = new.http.ports.clone();
    c.https.ports = new.https.ports.clone();
    c.dns.ports = new.dns.ports.clone();
    c.sip.ports = new.sip.ports.clone();
    c.daemon.shutdown_grace_secs = new.daemon.shutdown_grace_secs;
    c
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Log a configuration file that did not load, with its parts as separate fields.
fn log_config_error(e: &ConfigError) {
    match e {
        ConfigError::Invalid {
            origin,
            key,
            reason,
        } => {
            let (file, line) = match origin.rsplit_once(':') {
                Some((f, l)) if l.chars().all(|c| c.is_ascii_digit()) => (f, l.parse().ok()),
                _ => (origin.as_str(), None::<u64>),
            };
            error!(file, line, key, reason, error = %e,
                "configuration reload refused; the running configuration stays");
        }
        ConfigError::Syntax {
            path,
            line,
            column,
            reason,
        } => {
            error!(file = %path.display(), line, column, reason, error = %e,
                "configuration reload refused; the running configuration stays");
        }
        ConfigError::Read { path, .. } => {
            error!(file = %path.display(), error = %e,
                "configuration reload refused; the running configuration stays");
        }
    }
}

impl ControlPlane {
    /// Reload configuration and rules; `trigger` names what asked (for the log and the report).
    pub async fn reload(&self, trigger: &str) -> ReloadReport {
        let _one = self.reload_lock.lock().await;
        info!(
            trigger,
            file = self.config_file.as_deref().map(|f| f.display().to_string()),
            "reloading configuration and rules"
        );
        let (config_report, switched_rules) = self.reload_config().await;
        let rules_report = match switched_rules {
            Some(r) => r,
            None => self.reload_rules_locked(),
        };
        let report = ReloadReport {
            trigger: trigger.to_string(),
            at: now_secs(),
            config: config_report,
            rules: rules_report,
        };
        let result = if report.ok() { "ok" } else { "failed" };
        self.metrics
            .reloads
            .get_or_create(&vec![("result".to_string(), result.to_string())])
            .inc();
        info!(
            trigger,
            ok = report.ok(),
            applied = ?report.config.applied,
            restart_required = ?report.config.restart_required,
            rules = report.rules.rules,
            "reload done"
        );
        *self
            .last_reload
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(report.clone());
        report
    }

    /// Re-read only the rules file.
    pub async fn reload_rules(&self) -> RulesReloadReport {
        let _one = self.reload_lock.lock().await;
        self.reload_rules_locked()
    }

    pub(super) fn reload_rules_locked(&self) -> RulesReloadReport {
        let file = self.rules.file().map(|f| f.display().to_string());
        match self.rules.reload() {
            Ok(set) => {
                info!(
                    file = file.as_deref(),
                    rules = set.rules.len(),
                    "rules reloaded"
                );
                RulesReloadReport {
                    file,
                    rules: set.rules.len(),
                    error: None,
                }
            }
            Err(e) => {
                let rules = self.rules.current().rules.len();
                error!(file = file.as_deref(), error = %e, rules_in_force = rules,
                    "rules reload refused; the rules in force stay");
                RulesReloadReport {
                    file,
                    rules,
                    error: Some(e.to_string()),
                }
            }
        }
    }

    /// The configuration part; returns the rules report too when `rules.file` changed (the
    /// switch is the rules reload then).
    async fn reload_config(&self) -> (ConfigReload, Option<RulesReloadReport>) {
        let file = self.config_file.as_ref().map(|f| f.display().to_string());
        let mut report = ConfigReload {
            file: file.clone(),
            ..ConfigReload::default()
        };
        let new = match config::load(self.config_file.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                log_config_error(&e);
                report.error = Some(e.to_string());
                report.restart_required = self.restart_required_now();
                return (report, None);
            }
        };
        let running = self.config();
        let changed = changed_keys(&running, &new);
        let mut effective = apply_live(&running, &new);

        // Rules from another file: switched only if the new file loads.
        let mut rules_report = None;
        if new.rules.file != running.rules.file {
            let target = new.rules.file.as_deref();
            let file = target.map(|f| f.display().to_string());
            match self.rules.switch_file(target) {
                Ok(set) => {
                    info!(
                        file = file.as_deref(),
                        rules = set.rules.len(),
                        "rules file switched"
                    );
                    effective.rules.file = new.rules.file.clone();
                    rules_report = Some(RulesReloadReport {
                        file,
                        rules: set.rules.len(),
                        error: None,
                    });
                }
                Err(e) => {
                    let rules = self.rules.current().rules.len();
                    error!(file = file.as_deref(), error = %e, rules_in_force = rules,
                        "new rules file refused; the rules in force and their file stay");
                    rules_report = Some(RulesReloadReport {
                        file,
                        rules,
                        error: Some(e.to_string()),
                    });
                }
            }
        }

        // Settings applied live must still form a valid whole with the ones that wait.
        if let Err(v) = effective.validate() {
            let msg = format!(
                "the changed settings cannot apply live together with the running ones \
                 ({}: {}); restart to apply the new file",
                v.key, v.reason
            );
            error!(file = file.as_deref(), key = %v.key, reason = %v.reason, "{msg}");
            report.error = Some(msg);
            report.restart_required = self.restart_required_now();
            return (report, rules_report);
        }

        if changed.iter().any(|k| DATAPATH_KEYS.contains(&k.as_str())) {
            let mut dp = self.datapath.lock().await;
            if let Some(dp) = dp.as_mut()
                && let Err(e) = dp.reconfigure(
                    &effective.datapath,
                    &effective.intercepts_with(&self.claims),
                )
            {
                error!(error = %e, "rewriting the kernel maps failed; the running configuration stays");
                report.error = Some(format!("rewriting the kernel maps failed: {e}"));
                return (report, rules_report);
            }
        }
        if running.log.level != effective.log.level {
            match &self.log {
                Some(log) if log.env_override().is_some() => warn!(
                    level = %effective.log.level,
                    rust_log = log.env_override(),
                    "log.level changed, but RUST_LOG overrides it"
                ),
                Some(log) => match log.set_level(&effective.log.level) {
                    Ok(()) => info!(level = %effective.log.level, "log level changed"),
                    Err(e) => error!(error = %e, "log level not changed"),
                },
                None => {}
            }
        }

        for key in &changed {
            if is_live(key) && (key != "rules.file" || effective.rules.file == new.rules.file) {
                report.applied.push(key.clone());
            }
        }
        self.running.store(std::sync::Arc::new(effective));
        let restart = changed_keys(&self.boot, &new)
            .into_iter()
            .filter(|k| !is_live(k))
            .collect::<Vec<_>>();
        for key in restart.iter().filter(|k| changed.contains(k)) {
            warn!(key = %key, file = file.as_deref(), "setting changed; it takes effect at the next restart");
        }
        *self
            .restart_required
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = restart.clone();
        report.restart_required = restart;
        (report, rules_report)
    }

    /// The plugins were (re)loaded: take the TCP ports they claim now — those the configuration
    /// leaves free, see [`Config::admit_claims`] — and rewrite the kernel's port map in place.
    /// Streams in progress keep their sockets; a port no longer claimed fails open from its
    /// next connection on, a newly claimed one is steered to the plugin listener (bound since
    /// start). Returns the claims in force.
    pub async fn set_port_claims(
        &self,
        claims: Vec<(String, u16)>,
    ) -> Result<Vec<(String, u16)>, String> {
        let _one = self.reload_lock.lock().await;
        let running = self.config();
        let (accepted, refused) = running.admit_claims(claims);
        for ((plugin, port), why) in &refused {
            warn!(plugin = %plugin, port, reason = %why, "port claim refused");
        }
        let before = self.claims.get();
        self.claims.set(accepted.clone());
        let mut dp = self.datapath.lock().await;
        if let Some(dp) = dp.as_mut()
            && let Err(e) =
                dp.reconfigure(&running.datapath, &running.intercepts_with(&self.claims))
        {
            error!(error = %e, "rewriting the kernel's port map failed; the claims in force stay");
            self.claims.set(before);
            return Err(format!("rewriting the kernel's port map failed: {e}"));
        }
        info!(claims = ?accepted, "plugin port claims applied");
        Ok(accepted)
    }

    /// Settings changed since start that wait for a restart.
    pub fn restart_required_now(&self) -> Vec<String> {
        self.restart_required
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_are_dotted_leaves() {
        let a = Config::default();
        let mut b = a.clone();
        b.dns.ports = vec![53, 5353];
        b.log.level = "debug".into();
        b.http.listen_port = 25080;
        b.admin.metrics_listen = Some("127.0.0.1:9181".parse().unwrap());
        assert_eq!(
            changed_keys(&a, &b),
            vec![
                "admin.metrics_listen",
                "dns.ports",
                "http.listen_port",
                "log.level"
            ]
        );
        assert!(is_live("dns.ports"));
        assert!(is_live("log.level"));
        assert!(!is_live("http.listen_port"));
        assert!(!is_live("admin.metrics_listen"));
        let live = apply_live(&a, &b);
        assert_eq!(live.dns.ports, vec![53, 5353]);
        assert_eq!(
            live.http.listen_port, 15080,
            "restart-only settings keep their value"
        );
        assert_eq!(live.admin.metrics_listen, None);
    }

    #[test]
    fn every_live_and_datapath_key_names_a_real_key_and_is_applied() {
        let keys = Config::default().flatten();
        for k in LIVE_KEYS.iter().chain(DATAPATH_KEYS) {
            assert!(keys.contains_key(*k), "`{k}` is not a configuration key");
        }
        for k in DATAPATH_KEYS {
            assert!(
                is_live(k),
                "`{k}` goes into the kernel maps but is not live"
            );
        }
        // Each live key, changed alone, comes through `apply_live` (rules.file is switched
        // separately, when the new rules load).
        let a = Config::default();
        for k in LIVE_KEYS.iter().filter(|k| **k != "rules.file") {
            let mut b = a.clone();
            match *k {
                "log.level" => b.log.level = "debug".into(),
                "datapath.bypass_clients" => {
                    b.datapath.bypass_clients = vec!["10.0.0.0/8".parse().unwrap()]
                }
                "datapath.bypass_destinations" => {
                    b.datapath.bypass_destinations = vec!["10.0.0.0/8".parse().unwrap()]
                }
                "datapath.intercept_gateway_addresses" => {
                    b.datapath.intercept_gateway_addresses = true
                }
                "http.ports" => b.http.ports = vec![8080],
                "https.ports" => b.https.ports = vec![8443],
                "dns.ports" => b.dns.ports = vec![5353],
                "sip.ports" => b.sip.ports = vec![5061],
                "daemon.shutdown_grace_secs" => {
                    b.daemon.shutdown_grace_secs = crate::config::Secs(99)
                }
                other => panic!("no test change for live key `{other}`: add one"),
            }
            assert_eq!(changed_keys(&a, &b), vec![k.to_string()]);
            assert_eq!(
                changed_keys(&apply_live(&a, &b), &b),
                Vec::<String>::new(),
                "`{k}` is live but apply_live does not apply it"
            );
        }
    }
}
