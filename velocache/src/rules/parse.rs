//! `rules.toml` → [`RuleSet`], rejecting the whole file on the first problem with its line.
use std::{path::Path, time::Duration};

use serde::Deserialize;
use thiserror::Error;
use velocache_common::Service;

use super::{
    fault::{self, RawFault},
    model::{
        Action, CacheKeyOptions, Digest, HealthCheck, HostPattern, Rule, RuleSet, TextPattern,
    },
};

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
        /// What is wrong.
        reason: String,
    },
}

/// One item that may be given as a single string or a list.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A duration as seconds (`3600`) or humantime text (`"1h"`, `"30d"`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Ttl {
    Secs(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    warmup_urls: Vec<String>,
    #[serde(default)]
    rule: Vec<toml::Spanned<RawRule>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCacheKey {
    #[serde(default)]
    content_addressed: Option<String>,
    #[serde(default)]
    ignore_query: bool,
    #[serde(default)]
    keep_query: Vec<String>,
    #[serde(default)]
    sort_query: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthCheck {
    path: String,
    interval: Ttl,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    match_host: Option<OneOrMany>,
    match_path: Option<OneOrMany>,
    match_method: Option<OneOrMany>,
    match_content_type: Option<OneOrMany>,
    services: Option<Vec<String>>,
    action: String,
    ttl_override: Option<Ttl>,
    cache_key: Option<RawCacheKey>,
    health_check: Option<RawHealthCheck>,
    #[serde(default)]
    ghost: bool,
    fault: Option<RawFault>,
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

    /// Parse rules text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<RuleSet, RulesError> {
        let invalid = |line: usize, reason: String| RulesError::Invalid {
            origin: origin.to_string(),
            line,
            reason,
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| crate::config::line_of_offset(text, s.start))
                .unwrap_or(0);
            invalid(line, e.message().to_string())
        })?;
        for (i, url) in raw.warmup_urls.iter().enumerate() {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    line_of_key(text, "warmup_urls"),
                    format!("warmup_urls[{i}]: `{url}` is not an http:// or https:// URL"),
                ));
            }
        }
        let mut rules = Vec::with_capacity(raw.rule.len());
        for (n, spanned) in raw.rule.into_iter().enumerate() {
            let line = crate::config::line_of_offset(text, spanned.span().start);
            let r = spanned.into_inner();
            let name = r.name.unwrap_or_else(|| format!("rule-{}", n + 1));
            let bad = |reason: String| invalid(line, format!("rule `{name}`: {reason}"));
            let action = match r.action.as_str() {
                "cache" => Action::Cache,
                "passthrough" => Action::Passthrough,
                "intercept_no_cache" => Action::InterceptNoCache,
                "deny" => Action::Deny,
                other => {
                    return Err(bad(format!(
                        "unknown action `{other}` (expected cache, passthrough, intercept_no_cache or deny)"
                    )));
                }
            };
            let hosts = r
                .match_host
                .map(OneOrMany::into_vec)
                .unwrap_or_default()
                .iter()
                .map(|h| HostPattern::new(h))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("match_host: {e}")))?;
            let paths = r
                .match_path
                .map(OneOrMany::into_vec)
                .unwrap_or_default()
                .iter()
                .map(|p| {
                    if p.starts_with('/') || p.starts_with('*') {
                        TextPattern::new(p, false)
                    } else {
                        Err(format!("`{p}` must start with `/` or `*`"))
                    }
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("match_path: {e}")))?;
            let methods: Vec<String> = r
                .match_method
                .map(OneOrMany::into_vec)
                .unwrap_or_default()
                .into_iter()
                .map(|m| m.to_ascii_uppercase())
                .collect();
            if let Some(m) = methods
                .iter()
                .find(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()))
            {
                return Err(bad(format!("match_method: `{m}` is not an HTTP method")));
            }
            let content_types = r
                .match_content_type
                .map(OneOrMany::into_vec)
                .unwrap_or_default()
                .iter()
                .map(|c| TextPattern::new(c, true))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("match_content_type: {e}")))?;
            let services = r
                .services
                .unwrap_or_default()
                .iter()
                .map(|s| match s.as_str() {
                    "http" => Ok(Service::Http),
                    "https" => Ok(Service::Https),
                    "dns" => Ok(Service::Dns),
                    "sip" => Ok(Service::Sip),
                    other => Err(format!(
                        "unknown service `{other}` (expected http, https, dns, sip)"
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("services: {e}")))?;
            let ttl_override = match r.ttl_override {
                None => None,
                Some(Ttl::Secs(s)) => Some(Duration::from_secs(s)),
                Some(Ttl::Text(t)) => Some(
                    humantime::parse_duration(&t)
                        .map_err(|e| bad(format!("ttl_override `{t}`: {e}")))?,
                ),
            };
            let ck = r.cache_key.unwrap_or_default();
            let content_addressed = match ck.content_addressed.as_deref() {
                None => None,
                Some("sha256") => Some(Digest::Sha256),
                Some(alg) => {
                    return Err(bad(format!(
                        "cache_key.content_addressed: unsupported digest `{alg}` (sha256)"
                    )));
                }
            };
            if ck.ignore_query && !ck.keep_query.is_empty() {
                return Err(bad(
                    "cache_key: ignore_query and keep_query exclude each other".into(),
                ));
            }
            if action == Action::Deny && ttl_override.is_some() {
                return Err(bad(
                    "ttl_override has no meaning with action = \"deny\"".into()
                ));
            }
            let health_check = match r.health_check {
                None => None,
                Some(hc) => {
                    if !hc.path.starts_with('/') || hc.path.bytes().any(|b| b <= b' ' || b == 0x7f)
                    {
                        return Err(bad(format!(
                            "health_check.path `{}` must start with `/` and hold no spaces or controls",
                            hc.path
                        )));
                    }
                    let interval = match hc.interval {
                        Ttl::Secs(s) => Duration::from_secs(s),
                        Ttl::Text(t) => humantime::parse_duration(&t)
                            .map_err(|e| bad(format!("health_check.interval `{t}`: {e}")))?,
                    };
                    if interval < Duration::from_millis(100) {
                        return Err(bad("health_check.interval must be at least 100ms".into()));
                    }
                    if hosts.is_empty() {
                        return Err(bad(
                            "health_check needs match_host: it checks the origins the rule names"
                                .into(),
                        ));
                    }
                    Some(HealthCheck {
                        path: hc.path,
                        interval,
                    })
                }
            };
            if r.ghost && matches!(action, Action::Deny | Action::Passthrough) {
                return Err(bad(format!(
                    "ghost has no meaning with action = \"{}\"",
                    action.name()
                )));
            }
            let mut rule = Rule {
                name,
                line,
                hosts,
                paths,
                methods,
                content_types,
                services,
                action,
                ttl_override,
                cache_key: CacheKeyOptions {
                    content_addressed,
                    ignore_query: ck.ignore_query,
                    keep_query: ck.keep_query,
                    sort_query: ck.sort_query,
                },
                health_check,
                ghost: r.ghost,
                fault: None,
            };
            if let Some(raw) = r.fault {
                let checked = fault::validate(raw, &rule)
                    .map_err(|e| invalid(line, format!("rule `{}`: {e}", rule.name)))?;
                rule.fault = Some(checked);
            }
            rules.push(rule);
        }
        let mut seen = std::collections::HashSet::new();
        for r in &rules {
            if !seen.insert(r.name.as_str()) {
                return Err(invalid(
                    r.line,
                    format!("rule name `{}` is used twice", r.name),
                ));
            }
        }
        Ok(RuleSet {
            rules,
            warmup_urls: raw.warmup_urls,
        })
    }
}

fn line_of_key(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| l.trim_start().starts_with(key))
        .map_or(0, |i| i + 1)
}
