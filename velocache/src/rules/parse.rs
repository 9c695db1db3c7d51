//! `rules.toml` → [`RuleSet`], or every problem found, each with its line and key.
//!
//! Text enters [`RuleSet::check`], which parses it into TOML's spanned tree (every key and value
//! knows where it stands; syntax errors are all reported with their line), then checks each
//! `[[rule]]` key by key, so that one bad value does not hide the next: the result is the rule
//! set or the list of [`Problem`]s (line, TOML path such as `rule[1].match_host`, message). The
//! web rule editor and `velocache rules check` show that list; [`RuleSet::parse`] (start-up,
//! reload) reports its first problem as a [`RulesError`]. The per-rule checks are in
//! `check_rule`.
use std::path::Path;

use serde::Deserialize;
use thiserror::Error;
use toml::{
    Spanned,
    de::{DeTable, DeValue, ValueDeserializer},
};

use super::{check_rule, model::RuleSet};

/// Why a rules file was rejected.
#[derive(Debug, Error)]
pub enum RulesError {
    /// The file could not be read.
    #[error("cannot read rules file {}: {source}", path.display())]
    Read {
        /// File.
        path: std::path::PathBuf,
        /// I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid (syntax, unknown key, bad value).
    #[error("{origin}:{line}: {reason}")]
    Invalid {
        /// File path, or `rules` when parsed from text.
        origin: String,
        /// 1-based line (0 if unknown).
        line: usize,
        /// What is wrong (the first problem; how many more there are, if any).
        reason: String,
    },
}

/// One problem of a rules text: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line of the offending key or value (0 if unknown).
    pub line: usize,
    /// TOML path of the key: `rule[0].match_host`, `rule[2].fault.delay_ms`, `warmup_urls[1]`
    /// (indices 0-based, in file order); empty for a syntax error.
    pub key: String,
    /// What is wrong, as the log says it (`rule `ads`: unknown action …`).
    pub message: String,
}

/// Problems found so far, with the text their offsets point into.
pub(super) struct Problems<'t> {
    text: &'t str,
    list: Vec<Problem>,
}

impl<'t> Problems<'t> {
    /// The 1-based line of byte `offset`.
    pub(super) fn line(&self, offset: usize) -> usize {
        crate::config::line_of_offset(self.text, offset)
    }

    /// Record a problem at byte `offset`.
    pub(super) fn at(&mut self, offset: usize, key: String, message: String) {
        let line = self.line(offset);
        self.list.push(Problem { line, key, message });
    }

    /// Record a problem at a 1-based line.
    pub(super) fn at_line(&mut self, line: usize, key: String, message: String) {
        self.list.push(Problem { line, key, message });
    }

    /// How many so far (a rule compares before and after to know if it failed).
    pub(super) fn count(&self) -> usize {
        self.list.len()
    }

    /// Deserialize `value` as `T`; a failure is recorded at the spot TOML names (else at the
    /// value), under `key`, its message prefixed by `prefix`.
    pub(super) fn decode<T: serde::de::DeserializeOwned>(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        key: &str,
        prefix: &str,
    ) -> Option<T> {
        match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(v) => Some(v),
            Err(e) => {
                let offset = e.span().map_or(value.span().start, |s| s.start);
                self.at(offset, key.to_string(), format!("{prefix}{}", e.message()));
                None
            }
        }
    }

    /// A string or a list of strings (`one_ok`: a single string is allowed), each with the
    /// offset it stands at; a wrong type is recorded.
    pub(super) fn strings(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        key: &str,
        prefix: &str,
        one_ok: bool,
    ) -> Option<Vec<(String, usize)>> {
        match value.get_ref() {
            DeValue::String(s) if one_ok => Some(vec![(s.to_string(), value.span().start)]),
            DeValue::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                let before = self.count();
                for (i, item) in items.iter().enumerate() {
                    match item.get_ref() {
                        DeValue::String(s) => out.push((s.to_string(), item.span().start)),
                        other => self.at(
                            item.span().start,
                            format!("{key}[{i}]"),
                            format!("{prefix}expected a string, found {}", other.type_str()),
                        ),
                    }
                }
                (self.count() == before).then_some(out)
            }
            other => {
                let want = if one_ok {
                    "a string or a list of strings"
                } else {
                    "a list of strings"
                };
                self.at(
                    value.span().start,
                    key.to_string(),
                    format!("{prefix}expected {want}, found {}", other.type_str()),
                );
                None
            }
        }
    }
}

impl RuleSet {
    /// Read and parse `path`.
    pub fn load(path: &Path) -> Result<RuleSet, RulesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        RuleSet::parse(&text, &path.display().to_string())
    }

    /// Parse rules text; `origin` names it in errors. The first problem (by line) is the error;
    /// [`RuleSet::check`] lists them all.
    pub fn parse(text: &str, origin: &str) -> Result<RuleSet, RulesError> {
        RuleSet::check(text).map_err(|problems| {
            let more = problems.len().saturating_sub(1);
            let (line, mut reason) = problems
                .into_iter()
                .next()
                .map_or((0, String::from("invalid rules")), |p| (p.line, p.message));
            if more > 0 {
                reason.push_str(&format!(
                    " (and {more} more: `velocache rules check` lists them all)"
                ));
            }
            RulesError::Invalid {
                origin: origin.to_string(),
                line,
                reason,
            }
        })
    }

    /// Check rules text: the rule set, or every problem found, sorted by line.
    pub fn check(text: &str) -> Result<RuleSet, Vec<Problem>> {
        let mut p = Problems {
            text,
            list: Vec::new(),
        };
        let (doc, errors) = DeTable::parse_recoverable(text);
        if !errors.is_empty() {
            // A broken document's tree is a guess: checking its rules would report problems
            // that are not there. Syntax first.
            for e in &errors {
                let line = e.span().map_or(0, |s| p.line(s.start));
                p.at_line(line, String::new(), e.message().to_string());
            }
            return Err(p.list);
        }
        let mut set = RuleSet::default();
        for (key, value) in doc.get_ref().iter() {
            let name: &str = key.get_ref().as_ref();
            match name {
                "warmup_urls" => set.warmup_urls = warmup_urls(&mut p, value),
                "rule" => set.rules = rules(&mut p, value),
                other => p.at(
                    key.span().start,
                    other.to_string(),
                    format!("unknown key `{other}` (expected `warmup_urls` or `rule`)"),
                ),
            }
        }
        if p.list.is_empty() {
            Ok(set)
        } else {
            p.list.sort_by_key(|x| x.line);
            Err(p.list)
        }
    }
}

fn warmup_urls(p: &mut Problems<'_>, value: &Spanned<DeValue<'_>>) -> Vec<String> {
    let urls = p
        .strings(value, "warmup_urls", "warmup_urls: ", false)
        .unwrap_or_default();
    for (i, (url, at)) in urls.iter().enumerate() {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            p.at(
                *at,
                format!("warmup_urls[{i}]"),
                format!("warmup_urls[{i}]: `{url}` is not an http:// or https:// URL"),
            );
        }
    }
    urls.into_iter().map(|(u, _)| u).collect()
}

fn rules(p: &mut Problems<'_>, value: &Spanned<DeValue<'_>>) -> Vec<super::Rule> {
    let DeValue::Array(items) = value.get_ref() else {
        p.at(
            value.span().start,
            "rule".into(),
            "rule: write each rule as a `[[rule]]` table".into(),
        );
        return Vec::new();
    };
    let mut rules = Vec::with_capacity(items.len());
    // (name, line of the rule's name key or header, index) for the duplicate check.
    let mut names: Vec<(String, usize)> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let checked = check_rule::rule(p, i, item);
        if let Some((name, line)) = checked.name {
            if let Some((_, first)) = names.iter().find(|(n, _)| *n == name) {
                p.at_line(
                    line,
                    format!("rule[{i}].name"),
                    format!("rule name `{name}` is used twice (first at line {first})"),
                );
            } else {
                names.push((name, line));
            }
        }
        if let Some(rule) = checked.rule {
            rules.push(rule);
        }
    }
    rules
}

/// A duration as seconds (`3600`) or humantime text (`"1h"`, `"30d"`).
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Ttl {
    /// Seconds.
    Secs(u64),
    /// `humantime` text.
    Text(String),
}

impl Ttl {
    /// The duration, or why the text is not one.
    pub(super) fn duration(self) -> Result<std::time::Duration, String> {
        match self {
            Ttl::Secs(s) => Ok(std::time::Duration::from_secs(s)),
            Ttl::Text(t) => humantime::parse_duration(&t).map_err(|e| format!("`{t}`: {e}")),
        }
    }
}
