//! `[plugins]`: WebAssembly plugins (`crate::plugins`) — where their manifests are, and the
//! limits every call and instance runs under.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Invalid, Millis};

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
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            dir: None,
            time_budget_ms: Millis(5),
            memory_limit_mb: 32,
            instances: 2,
            max_instances: 64,
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
        Ok(())
    }
}
