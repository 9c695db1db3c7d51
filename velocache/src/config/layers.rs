//! The file and environment layers as figment providers.
//!
//! The file is parsed here (not by figment's own TOML provider) so that syntax errors carry a
//! line and column, and so that later errors about a key can be traced back to the line where
//! the key is written. The environment is taken as an explicit snapshot so tests can pass their
//! own without touching the process environment.
use std::path::{Path, PathBuf};

use figment::{
    Metadata, Profile, Provider,
    value::{Dict, Map, Value},
};

use super::{ConfigError, ENV_PREFIX};

/// A parsed configuration file.
#[derive(Clone, Debug)]
pub(crate) struct FileLayer {
    pub(crate) path: PathBuf,
    pub(crate) text: String,
    dict: Dict,
}

impl FileLayer {
    pub(crate) fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, text)
    }

    pub(crate) fn parse(path: &Path, text: String) -> Result<Self, ConfigError> {
        let dict: Dict = toml::from_str(&text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(&text, s.start)).unwrap_or((0, 0));
            ConfigError::Syntax {
                path: path.to_path_buf(),
                line,
                column,
                reason: e.message().to_string(),
            }
        })?;
        Ok(FileLayer {
            path: path.to_path_buf(),
            text,
            dict,
        })
    }

    /// 1-based line of the value (or, failing that, the section) that `key` names in the file.
    pub(crate) fn line_of(&self, key: &[String]) -> Option<usize> {
        let doc = toml::de::DeTable::parse(&self.text).ok()?;
        let mut table = doc.get_ref();
        let mut best = None;
        for (i, part) in key.iter().enumerate() {
            // Array indices in a path ("lan_interfaces[2]") resolve to the array itself.
            let name = part.split('[').next().unwrap_or(part);
            let (k, v) = table.iter().find(|(k, _)| k.get_ref().as_ref() == name)?;
            best = Some(line_col(&self.text, k.span().start).0);
            if i + 1 == key.len() {
                break;
            }
            match v.get_ref() {
                toml::de::DeValue::Table(t) => table = t,
                _ => break,
            }
        }
        best
    }
}

impl Provider for FileLayer {
    fn metadata(&self) -> Metadata {
        Metadata::from("configuration file", self.path.as_path())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// `VELOCACHE_SECTION__KEY=value` variables, as a nested dictionary.
#[derive(Clone, Debug, Default)]
pub(crate) struct EnvLayer {
    /// (variable name, dotted key) for every variable used, to name the variable in errors.
    pub(crate) vars: Vec<(String, String)>,
    dict: Dict,
}

impl EnvLayer {
    pub(crate) fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut layer = EnvLayer::default();
        for (name, raw) in vars {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if !rest.contains("__") {
                continue;
            }
            let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
            if path.iter().any(|p| p.is_empty()) {
                continue;
            }
            let value: Value = raw.parse().unwrap_or_else(|never| match never {});
            insert(&mut layer.dict, &path, value);
            layer.vars.push((name, path.join(".")));
        }
        layer
    }

    /// The variable that set `key`, if one did.
    pub(crate) fn var_for(&self, key: &[String]) -> Option<&str> {
        let dotted = key.join(".");
        self.vars
            .iter()
            .find(|(_, k)| dotted == *k || dotted.starts_with(&format!("{k}.")))
            .map(|(n, _)| n.as_str())
    }
}

fn insert(dict: &mut Dict, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if entry.as_dict().is_none() {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}

impl Provider for EnvLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// 1-based line of byte `offset` in `text`.
pub fn line_of_offset(text: &str, offset: usize) -> usize {
    line_col(text, offset).0
}

/// 1-based line and column of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}
