//! Logging setup: JSON lines for machines, pretty lines for people.
//!
//! Every event from the daemon (and every `log` record, such as the kernel programs' aya-log
//! output) enters through `tracing`. Under `--log-format json` or `VELOCACHE_ENV=production` it
//! leaves as one JSON object per line on stdout with `timestamp`, `level`, `service`, `message`
//! and the event's own fields (`client`, `orig_dst`, `trace_id`, …); otherwise as a pretty,
//! human-readable line. Metrics are registered in one shape, through [`metrics::MetricSet`].

mod json;
pub mod metrics;

use thiserror::Error;
use tracing_subscriber::{
    EnvFilter, Registry, layer::SubscriberExt, reload, util::SubscriberInitExt,
};

#[cfg(test)]
pub(crate) use json::capture;
pub use json::{JsonLayer, service_of_target};

use crate::config::LogFormat;

/// Environment variable that selects production defaults (JSON logs).
pub const ENV_MODE_VAR: &str = "VELOCACHE_ENV";

/// Logging could not be set up.
#[derive(Debug, Error)]
pub enum TelemetryError {
    /// The level filter did not parse.
    #[error("invalid log filter `{filter}`: {source}")]
    Filter {
        /// The filter text.
        filter: String,
        /// Parser error.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was already installed.
    #[error("logging already initialised: {0}")]
    AlreadyInit(String),
    /// The live filter could not be replaced.
    #[error("cannot change the log filter: {0}")]
    Reload(String),
}

/// Changes the log filter of the running process (`[log] level` on a configuration reload).
#[derive(Clone)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    /// Set when `RUST_LOG` chose the filter at start: it keeps precedence over the file.
    env_override: Option<String>,
}

impl LogControl {
    /// The `RUST_LOG` value that overrides `[log] level`, if any.
    pub fn env_override(&self) -> Option<&str> {
        self.env_override.as_deref()
    }

    /// Replace the filter with `level` (a `tracing` filter). Events already being recorded are
    /// not affected; the next one is filtered by the new level.
    pub fn set_level(&self, level: &str) -> Result<(), TelemetryError> {
        let filter = EnvFilter::try_new(level).map_err(|source| TelemetryError::Filter {
            filter: level.to_string(),
            source,
        })?;
        // `log` records (the kernel programs' aya-log output) are cut by `log`'s own maximum
        // before tracing sees them; keep it in step with the new filter.
        log::set_max_level(log_level_for(filter.max_level_hint()));
        self.handle
            .reload(filter)
            .map_err(|e| TelemetryError::Reload(e.to_string()))
    }
}

fn log_level_for(hint: Option<tracing_subscriber::filter::LevelFilter>) -> log::LevelFilter {
    use tracing_subscriber::filter::LevelFilter as L;
    match hint {
        Some(L::OFF) => log::LevelFilter::Off,
        Some(L::ERROR) => log::LevelFilter::Error,
        Some(L::WARN) => log::LevelFilter::Warn,
        Some(L::INFO) => log::LevelFilter::Info,
        Some(L::DEBUG) => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

/// An error and its causes, `: `-separated ("connect failed: connection refused").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Resolve `auto` against the environment: JSON in production, pretty otherwise.
pub fn effective_format(format: LogFormat, env_mode: Option<&str>) -> LogFormat {
    match format {
        LogFormat::Auto if env_mode.is_some_and(|m| m.eq_ignore_ascii_case("production")) => {
            LogFormat::Json
        }
        LogFormat::Auto => LogFormat::Pretty,
        other => other,
    }
}

/// Install the global subscriber. `RUST_LOG`, when set and not empty, overrides `level`. The
/// returned [`LogControl`] changes the filter later.
pub fn init(format: LogFormat, level: &str) -> Result<LogControl, TelemetryError> {
    let env_override = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter_text = env_override.clone().unwrap_or_else(|| level.to_string());
    let filter = EnvFilter::try_new(&filter_text).map_err(|source| TelemetryError::Filter {
        filter: filter_text.clone(),
        source,
    })?;
    let (filter, handle) = reload::Layer::new(filter);
    let env_mode = std::env::var(ENV_MODE_VAR).ok();
    let registry = Registry::default().with(filter);
    let result = match effective_format(format, env_mode.as_deref()) {
        LogFormat::Json => registry.with(JsonLayer::stdout()).try_init(),
        _ => registry
            .with(tracing_subscriber::fmt::layer().with_target(true))
            .try_init(),
    };
    result.map_err(|e| TelemetryError::AlreadyInit(e.to_string()))?;
    Ok(LogControl {
        handle,
        env_override,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_env_selects_json_only_for_auto() {
        assert_eq!(
            effective_format(LogFormat::Auto, Some("production")),
            LogFormat::Json
        );
        assert_eq!(effective_format(LogFormat::Auto, None), LogFormat::Pretty);
        assert_eq!(
            effective_format(LogFormat::Auto, Some("dev")),
            LogFormat::Pretty
        );
        assert_eq!(
            effective_format(LogFormat::Pretty, Some("production")),
            LogFormat::Pretty
        );
        assert_eq!(effective_format(LogFormat::Json, None), LogFormat::Json);
    }
}
