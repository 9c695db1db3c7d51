//! Typed configuration: built-in defaults < `velocache.toml` < `VELOCACHE_*` environment.
//!
//! Data enters through [`load`] (or [`load_with_env`] in tests) as a file path and an
//! environment snapshot; it leaves as a validated [`Config`] or a [`ConfigError`] that names the
//! source (file or environment variable), the key, the line where the file has one, and the
//! reason. Every section denies unknown keys so that a typo is an error, not a silently ignored
//! setting. Values are parsed once into the types the code uses — durations ([`Millis`],
//! [`Secs`]), host patterns, DNS upstreams, addresses — so no service converts or re-parses a
//! string. Each section has its own `check()` for what types cannot express; [`Config::validate`]
//! runs them and the checks that span sections (one owner per port).
//!
//! Environment variables use `__` between section and key: `VELOCACHE_DNS__ENABLED=false`,
//! `VELOCACHE_DATAPATH__LAN_INTERFACES='["eth1","eth2"]'`. Variables without `__` (such as
//! `VELOCACHE_ENV`) are not configuration keys and are left alone.
//!
//! # Layout
//! One file per section: `daemon` (`[daemon]`, `[log]`, `[rules]`), `datapath`, `http`, `tls`
//! (`[https]`, `[tls]`), `dns`, `sip`, `admin`, `origins`, `anomaly`, `shared`, `plugins` (and the
//! TCP ports plugins claim, known only once they load); `intercept`: what every service section
//! shares; `values`: shared value types; `layers`, `error`: reading the layers and saying what is
//! wrong.

mod admin;
mod anomaly;
mod daemon;
mod datapath;
mod dns;
mod error;
mod glob;
mod http;
mod intercept;
mod layers;
mod origins;
mod plugins;
mod shared;
mod sip;
mod tls;
mod values;

use std::{collections::HashMap, path::Path};

use figment::{Figment, providers::Serialized};
use serde::{Deserialize, Serialize};

pub use admin::AdminConfig;
pub use anomaly::AnomalyConfig;
pub use daemon::{DaemonConfig, LogConfig, LogFormat, RulesConfig};
pub use datapath::{AttachMode, DatapathConfig};
pub use dns::{DenyAnswer, DnsConfig, UpstreamSpec};
pub use error::ConfigError;
pub use glob::Glob;
pub use http::HttpConfig;
pub use intercept::{Intercept, Transport};
pub use layers::line_of_offset;
pub use origins::OriginsConfig;
pub use plugins::{Claim, PluginsConfig, PortClaims};
pub use shared::SharedConfig;
pub use sip::SipConfig;
pub use tls::{HttpsConfig, TlsConfig};
pub use values::{HostPattern, Invalid, Millis, Secs};

/// Prefix of configuration environment variables.
pub const ENV_PREFIX: &str = "VELOCACHE_";

/// The whole daemon configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Process-wide settings.
    pub daemon: DaemonConfig,
    /// Logging.
    pub log: LogConfig,
    /// Kernel programs, interfaces, bypass lists, policy routing.
    pub datapath: DatapathConfig,
    /// Plain HTTP interception (TCP 80).
    pub http: HttpConfig,
    /// TLS interception (TCP 443).
    pub https: HttpsConfig,
    /// DNS interception (UDP and TCP 53).
    pub dns: DnsConfig,
    /// SIP interception (UDP and TCP 5060).
    pub sip: SipConfig,
    /// The operator's rules file.
    pub rules: RulesConfig,
    /// TLS interception: the local CA, generated certificates, upstream trust.
    pub tls: TlsConfig,
    /// The admin API (Unix socket, optional TCP listener) and the metrics endpoint.
    pub admin: AdminConfig,
    /// Origin health, circuit breakers, ghost mode's learned store.
    pub origins: OriginsConfig,
    /// Anomaly alerts on origins (latency, errors, never-seen request shapes).
    pub anomaly: AnomalyConfig,
    /// A second cache tier on a Redis Cluster, shared with other gateways.
    pub shared: SharedConfig,
    /// WebAssembly plugins, and the listener for the TCP ports they claim.
    pub plugins: PluginsConfig,
}

impl Config {
    /// The interception settings of every service, in service order. The plugin service's
    /// ports are the plugins' claims, which only [`Config::intercepts_with`] knows.
    pub fn intercepts(&self) -> Vec<Intercept> {
        vec![
            self.http.intercept(),
            self.https.intercept(),
            self.dns.intercept(),
            self.sip.intercept(),
            self.plugins.intercept(),
        ]
    }

    /// The TCP destination ports intercepted by enabled services.
    pub fn intercepted_tcp_ports(&self) -> Vec<u16> {
        self.intercepts()
            .into_iter()
            .filter(|i| i.enabled && i.transports.contains(&Transport::Tcp))
            .flat_map(|i| i.ports)
            .collect()
    }

    /// Every leaf as `dotted.key → value` (arrays are leaves), as reloads compare them.
    pub fn flatten(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        fn walk(
            prefix: &str,
            v: serde_json::Value,
            out: &mut std::collections::BTreeMap<String, serde_json::Value>,
        ) {
            match v {
                serde_json::Value::Object(map) => {
                    for (k, v) in map {
                        let key = if prefix.is_empty() {
                            k
                        } else {
                            format!("{prefix}.{k}")
                        };
                        walk(&key, v, out);
                    }
                }
                leaf => {
                    out.insert(prefix.to_string(), leaf);
                }
            }
        }
        let mut out = std::collections::BTreeMap::new();
        walk(
            "",
            serde_json::to_value(self).unwrap_or(serde_json::Value::Null),
            &mut out,
        );
        out
    }

    /// Every section's `check()`, then what spans sections. The first problem found is
    /// returned.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.log.check()?;
        self.datapath.check()?;
        self.tls.check()?;
        self.http.check()?;
        self.dns.check()?;
        self.sip.check()?;
        self.admin.check()?;
        self.origins.check()?;
        self.anomaly.check()?;
        self.shared.check()?;
        self.plugins.check()?;
        self.check_ports()
    }

    /// One owner per (transport, port) and per listener port.
    fn check_ports(&self) -> Result<(), Invalid> {
        let mut owners: HashMap<(Transport, u16), &'static str> = HashMap::new();
        let mut listeners: HashMap<u16, &'static str> = HashMap::new();
        for ic in self.intercepts().into_iter().filter(|i| i.enabled) {
            let name = ic.service.name();
            // The plugin service's ports are claimed at run time (`admit_claims` keeps them
            // apart from the configured ones).
            if ic.ports.is_empty() && ic.service != velocache_common::Service::Plugin {
                return Err(Invalid::new(
                    format!("{name}.ports"),
                    "is empty; set `enabled = false` to turn the service off",
                ));
            }
            let listen_key = match ic.service {
                velocache_common::Service::Plugin => "plugins.tcp_listen_port".to_string(),
                _ => format!("{name}.listen_port"),
            };
            if ic.listen_port == 0 {
                return Err(Invalid::new(listen_key, "must not be 0"));
            }
            if let Some(other) = listeners.insert(ic.listen_port, name) {
                return Err(Invalid::new(
                    listen_key,
                    format!(
                        "port {} is already the listener of `{other}`",
                        ic.listen_port
                    ),
                ));
            }
            for &port in &ic.ports {
                if port == 0 {
                    return Err(Invalid::new(format!("{name}.ports"), "port 0 is not valid"));
                }
                for &tr in ic.transports {
                    if let Some(other) = owners.insert((tr, port), name)
                        && other != name
                    {
                        return Err(Invalid::new(
                            format!("{name}.ports"),
                            format!("{tr:?} port {port} is already intercepted by `{other}`"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Load the configuration from `file` (if any) and the process environment.
pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
    load_with_env(file, std::env::vars())
}

/// Load the configuration from `file` and an explicit environment (tests pass their own).
pub fn load_with_env(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let file_layer = file.map(layers::FileLayer::read).transpose()?;
    load_layers(file_layer, env)
}

/// Load the configuration from `text` as if read from the file `origin` (no environment):
/// what `velocache check-config` does to a file, without the file (the fuzz target's entry).
pub fn load_text(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    let layer = layers::FileLayer::parse(origin, text.to_string())?;
    load_layers(Some(layer), std::iter::empty())
}

fn load_layers(
    file_layer: Option<layers::FileLayer>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(layer) = &file_layer {
        figment = figment.merge(layer.clone());
    }
    let env_layer = layers::EnvLayer::from_vars(env);
    figment = figment.merge(env_layer.clone());

    let config: Config = figment
        .extract()
        .map_err(|e| ConfigError::from_figment(e, file_layer.as_ref(), &env_layer))?;
    config
        .validate()
        .map_err(|v| ConfigError::from_validation(v, file_layer.as_ref(), &env_layer))?;
    Ok(config)
}

#[cfg(test)]
mod tests;
