//! `[daemon]`, `[log]` and `[rules]`: process-wide settings.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Invalid, Secs};

/// `[daemon]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Where persistent state (cache index, CA) lives.
    pub state_dir: PathBuf,
    /// Where runtime files (admin socket) live.
    pub run_dir: PathBuf,
    /// On SIGTERM, how long in-flight flows may finish after new flows stop being intercepted.
    pub shutdown_grace_secs: Secs,
    /// How often kernel counters are logged (0 = never).
    pub stats_interval_secs: Secs,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            state_dir: PathBuf::from("/var/lib/velocache"),
            run_dir: PathBuf::from("/run/velocache"),
            shutdown_grace_secs: Secs(10),
            stats_interval_secs: Secs(60),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `auto` (JSON when `VELOCACHE_ENV=production`, pretty otherwise), `json` or `pretty`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `info,velocache::dns=debug`. `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Auto,
            level: "info".into(),
        }
    }
}

impl LogConfig {
    /// The `[log]` checks.
    pub fn check(&self) -> Result<(), Invalid> {
        self.level
            .parse::<tracing_subscriber::EnvFilter>()
            .map_err(|e| Invalid::new("log.level", format!("not a valid filter: {e}")))?;
        Ok(())
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON in production (`VELOCACHE_ENV=production`), pretty otherwise.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Pretty,
}

/// `[rules]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Path of `rules.toml` (spec B-1). None: no rules, every service does its default.
    pub file: Option<PathBuf>,
}
