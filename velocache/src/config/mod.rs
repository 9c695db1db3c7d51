//! Typed configuration: built-in defaults < `velocache.toml` < `VELOCACHE_*` environment.
//!
//! Data enters through [`load`] (or [`load_with_env`] in tests) as a file path and an
//! environment snapshot; it leaves as a validated [`Config`] or a [`ConfigError`] that names the
//! source (file or environment variable), the key, the line where the file has one, and the
//! reason. Every section denies unknown keys so that a typo is an error, not a silently ignored
//! setting. `validate()` checks what types cannot (port clashes, empty lists, ranges).
//!
//! Environment variables use `__` between section and key: `VELOCACHE_DNS__ENABLED=false`,
//! `VELOCACHE_DATAPATH__LAN_INTERFACES='["eth1","eth2"]'`. Variables without `__` (such as
//! `VELOCACHE_ENV`) are not configuration keys and are left alone.

mod error;
mod layers;
mod sections;

use std::path::Path;

pub use error::ConfigError;
pub use layers::line_of_offset;
pub use sections::*;

use figment::{Figment, providers::Serialized};

/// Prefix of configuration environment variables.
pub const ENV_PREFIX: &str = "VELOCACHE_";

/// Load the configuration from `file` (if any) and the process environment.
pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
    load_with_env(file, std::env::vars())
}

/// Load the configuration from `file` and an explicit environment (tests pass their own).
pub fn load_with_env(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    let mut file_layer = None;
    if let Some(path) = file {
        let layer = layers::FileLayer::read(path)?;
        figment = figment.merge(layer.clone());
        file_layer = Some(layer);
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
