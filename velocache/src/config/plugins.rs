//! `[plugins]`: WebAssembly plugins (`crate::plugins`) — where their manifests are, the limits
//! every call and instance runs under, and the transparent listener that takes the TCP ports
//! they claim.
//!
//! The claimed ports themselves are not configuration: each plugin's manifest names them, so
//! they are known once the plugins are loaded and change when they are reloaded. The plugin
//! service's [`Intercept`] therefore has no ports of its own here; [`PortClaims`] carries the
//! ones the plugins claim, and [`Config::intercepts_with`] puts them in.
use std::{
    path::PathBuf,
    sync::{Arc, PoisonError, RwLock},
};

use serde::{Deserialize, Serialize};
use velocache_common::Service;

use super::{Config, Intercept, Invalid, Millis, Transport};

/// `[plugins]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// The directory holding one subdirectory per plugin (`NAME/plugin.toml` beside its
    /// `.wasm`), or `NAME.toml` + `NAME.wasm` pairs. None, or a directory that does not exist:
    /// no plugins (and no WebAssembly engine is started).
    pub dir: Option<PathBuf>,
    /// How long one hook call may run; past it the call is stopped and the plugin disabled (a
    /// call whose thread was preempted on a busy machine is not stopped for the wait, up to 20
    /// budgets on the clock).
    pub time_budget_ms: Millis,
    /// The most linear memory one plugin instance may grow to, MiB.
    pub memory_limit_mb: u32,
    /// Instances made ready per plugin when it loads, so that a call never waits for one to be
    /// instantiated (more are made when more calls run at once).
    pub instances: u32,
    /// The most instances one plugin may have at once (calls in progress and TCP streams
    /// pinned to one); past it a TCP stream on its port goes on without the plugin.
    pub max_instances: u32,
    /// Port of the daemon's transparent listener for every TCP port a plugin claims (clients
    /// never address it). Bound whenever `dir` is set, so a reload that adds a claim only has to
    /// write the kernel's port map.
    pub tcp_listen_port: u16,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            dir: None,
            time_budget_ms: Millis(5),
            memory_limit_mb: 32,
            instances: 2,
            max_instances: 64,
            tcp_listen_port: 15100,
        }
    }
}

impl PluginsConfig {
    /// The `[plugins]` checks.
    pub fn check(&self) -> Result<(), Invalid> {
        self.time_budget_ms.at_least_one("plugins.time_budget_ms")?;
        if self.time_budget_ms.0 > 10_000 {
            return Err(Invalid::new(
                "plugins.time_budget_ms",
                "must be at most 10000: a call blocks the flow that made it",
            ));
        }
        if !(1..=4096).contains(&self.memory_limit_mb) {
            return Err(Invalid::new(
                "plugins.memory_limit_mb",
                "must be between 1 and 4096",
            ));
        }
        if self.instances == 0 {
            return Err(Invalid::new("plugins.instances", "must be at least 1"));
        }
        if self.max_instances < self.instances {
            return Err(Invalid::new(
                "plugins.max_instances",
                "must be at least plugins.instances",
            ));
        }
        if self.tcp_listen_port == 0 {
            return Err(Invalid::new("plugins.tcp_listen_port", "must not be 0"));
        }
        Ok(())
    }

    /// The plugin service's interception part, without ports (see [`PortClaims`]).
    pub fn intercept(&self) -> Intercept {
        Intercept {
            service: Service::Plugin,
            enabled: self.dir.is_some(),
            ports: Vec::new(),
            listen_port: self.tcp_listen_port,
            transports: &[Transport::Tcp],
        }
    }
}

/// A claim a plugin made, `(plugin, port)`.
pub type Claim = (String, u16);

/// The TCP ports plugins claim, `(plugin, port)`: set when the plugins load and on every plugin
/// reload, read wherever the interception settings are (the kernel's port map, `service
/// status`). Clones share one list.
#[derive(Debug, Clone, Default)]
pub struct PortClaims(Arc<RwLock<Vec<(String, u16)>>>);

impl PortClaims {
    /// Replace the claims.
    pub fn set(&self, claims: Vec<(String, u16)>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = claims;
    }

    /// The claims in force.
    pub fn get(&self) -> Vec<(String, u16)> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The claimed ports, sorted, each once.
    pub fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.get().into_iter().map(|(_, p)| p).collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

impl Config {
    /// [`Config::intercepts`] with the ports plugins claim given to the plugin service.
    pub fn intercepts_with(&self, claims: &PortClaims) -> Vec<Intercept> {
        let mut all = self.intercepts();
        for ic in all.iter_mut().filter(|i| i.service == Service::Plugin) {
            ic.ports = claims.ports();
        }
        all
    }

    /// Which of `claims` the plugin service may take: a port another enabled service intercepts
    /// (TCP) stays that service's, and a port claimed twice goes to the first claimant. Returns
    /// the accepted claims and, for each refused one, why.
    pub fn admit_claims(&self, claims: Vec<Claim>) -> (Vec<Claim>, Vec<(Claim, String)>) {
        let mut accepted: Vec<Claim> = Vec::new();
        let mut refused = Vec::new();
        let owned: Vec<(u16, &'static str)> = self
            .intercepts()
            .into_iter()
            .filter(|i| {
                i.enabled && i.service != Service::Plugin && i.transports.contains(&Transport::Tcp)
            })
            .flat_map(|i| i.ports.into_iter().map(move |p| (p, i.service.name())))
            .collect();
        for (plugin, port) in claims {
            if port == 0 {
                refused.push(((plugin, port), "port 0 is not valid".to_string()));
            } else if let Some((_, service)) = owned.iter().find(|(p, _)| *p == port) {
                refused.push((
                    (plugin, port),
                    format!("TCP port {port} is intercepted by `{service}`"),
                ));
            } else if let Some((first, _)) = accepted.iter().find(|(_, p)| *p == port) {
                let why = format!("TCP port {port} is already claimed by plugin `{first}`");
                refused.push(((plugin, port), why));
            } else {
                accepted.push((plugin, port));
            }
        }
        (accepted, refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_fill_the_plugin_service_and_never_take_a_configured_port() {
        let config = Config {
            plugins: PluginsConfig {
                dir: Some("/tmp/plugins".into()),
                ..PluginsConfig::default()
            },
            ..Config::default()
        };
        let (ok, refused) = config.admit_claims(vec![
            ("socks".into(), 1080),
            ("web".into(), 80),
            ("other".into(), 1080),
            ("ftp".into(), 21),
        ]);
        assert_eq!(ok, vec![("socks".into(), 1080), ("ftp".into(), 21)]);
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert!(refused[0].1.contains("`http`"), "{refused:?}");
        assert!(refused[1].1.contains("`socks`"), "{refused:?}");

        let claims = PortClaims::default();
        claims.set(ok);
        let plugin = config
            .intercepts_with(&claims)
            .into_iter()
            .find(|i| i.service == Service::Plugin)
            .expect("the plugin service is listed");
        assert!(plugin.enabled);
        assert_eq!(plugin.ports, vec![21, 1080]);
        assert_eq!(plugin.listen_port, 15100);
    }

    #[test]
    fn without_a_directory_the_plugin_service_is_off() {
        let plugin = Config::default()
            .intercepts()
            .into_iter()
            .find(|i| i.service == Service::Plugin)
            .expect("listed even when off");
        assert!(!plugin.enabled);
    }
}
