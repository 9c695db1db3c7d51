//! Configuration errors that say where and why: file (and line) or environment variable, the
//! dotted key, and the reason.
use std::{fmt::Write as _, path::PathBuf};

use thiserror::Error;

use super::{
    layers::{EnvLayer, FileLayer},
    values::Invalid,
};

/// Why a configuration could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{}:{line}:{column}: invalid TOML: {reason}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        reason: String,
    },
    /// A key has a wrong type or value, or is unknown.
    #[error("{origin}: key `{key}`: {reason}")]
    Invalid {
        /// `FILE:LINE`, `FILE`, `environment variable NAME` or `defaults`.
        origin: String,
        /// Dotted key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn from_figment(
        err: figment::Error,
        file: Option<&FileLayer>,
        env: &EnvLayer,
    ) -> Self {
        // Report the first error; figment chains them, and the first is the one to fix first.
        let first = err.into_iter().next();
        let Some(e) = first else {
            return ConfigError::Invalid {
                origin: "configuration".into(),
                key: String::new(),
                reason: "unknown error".into(),
            };
        };
        let mut key = e.path.clone();
        // figment reports an unknown field at its parent; name the field itself.
        if let figment::error::Kind::UnknownField(field, _) = &e.kind {
            key.push(field.clone());
        }
        let from_env = e.metadata.as_ref().is_some_and(|m| m.name == "environment");
        ConfigError::Invalid {
            origin: origin(&key, from_env, file, env),
            key: key.join("."),
            reason: e.kind.to_string(),
        }
    }

    pub(crate) fn from_validation(v: Invalid, file: Option<&FileLayer>, env: &EnvLayer) -> Self {
        let key: Vec<String> = v.key.split('.').map(str::to_string).collect();
        let from_env = env.var_for(&key).is_some();
        ConfigError::Invalid {
            origin: origin(&key, from_env, file, env),
            key: v.key,
            reason: v.reason,
        }
    }
}

fn origin(key: &[String], from_env: bool, file: Option<&FileLayer>, env: &EnvLayer) -> String {
    if from_env && let Some(var) = env.var_for(key) {
        return format!("environment variable {var}");
    }
    match file {
        Some(f) => {
            let mut s = f.path.display().to_string();
            if let Some(line) = f.line_of(key) {
                let _ = write!(s, ":{line}");
            }
            s
        }
        None => "defaults".into(),
    }
}
