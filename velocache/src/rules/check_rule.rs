//! One `[[rule]]` table → [`Rule`], every problem recorded at its key's line.
//!
//! `parse` hands each table of the spanned TOML tree to [`rule`]; keys are read one by one
//! (unknown ones refused where they stand), each value decoded and checked on its own, so a rule
//! with three mistakes reports three problems. The rule comes out only when none was found; its
//! name comes out in any case, for the duplicate check across rules.
use std::{collections::HashMap, time::Duration};

use serde::Deserialize;
use toml::{Spanned, de::DeValue};
use velocache_common::Service;

use super::{
    fault::{self, RawFault},
    model::{Action, CacheKeyOptions, Digest, HealthCheck, HostPattern, Rule, TextPattern},
    parse::{Problems, Ttl},
};

/// The keys a rule may have, in the order the error message lists them.
const KEYS: &[&str] = &[
    "name",
    "match_host",
    "match_path",
    "match_method",
    "match_content_type",
    "services",
    "action",
    "ttl_override",
    "cache_key",
    "health_check",
    "ghost",
    "fault",
];

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

/// What checking one rule gives.
pub(super) struct Checked {
    /// The rule, when it has no problem.
    pub(super) rule: Option<Rule>,
    /// Its name (given or `rule-<n>`) and the line it is written on (else the header's).
    pub(super) name: Option<(String, usize)>,
}

/// One rule's keys, and where to report.
struct Table<'a, 'i> {
    index: usize,
    name: String,
    header: usize,
    keys: HashMap<
        &'a str,
        (
            &'a Spanned<toml::de::DeString<'i>>,
            &'a Spanned<DeValue<'i>>,
        ),
    >,
}

impl<'a, 'i> Table<'a, 'i> {
    fn key(&self, k: &str) -> String {
        format!("rule[{}].{k}", self.index)
    }

    fn value(&self, k: &str) -> Option<&'a Spanned<DeValue<'i>>> {
        self.keys.get(k).map(|(_, v)| *v)
    }

    /// The offset of key `k` (the header's line when absent).
    fn offset(&self, k: &str) -> Option<usize> {
        self.keys.get(k).map(|(key, _)| key.span().start)
    }

    /// The offset of `k.sub` inside an inline or sub-table, else of `k`.
    fn sub_offset(&self, k: &str, sub: &str) -> Option<usize> {
        let inner = self.value(k).and_then(|v| match v.get_ref() {
            DeValue::Table(t) => t
                .iter()
                .find(|(key, _)| AsRef::<str>::as_ref(key.get_ref()) == sub)
                .map(|(key, _)| key.span().start),
            _ => None,
        });
        inner.or_else(|| self.offset(k))
    }

    fn prefix(&self, k: &str) -> String {
        format!("rule `{}`: {k}: ", self.name)
    }

    /// Report a problem of key `k` (with `reason` already naming what is wrong).
    fn bad(&self, p: &mut Problems<'_>, k: &str, reason: String) {
        let message = format!("rule `{}`: {reason}", self.name);
        match self.offset(k) {
            Some(at) => p.at(at, self.key(k), message),
            None => p.at_line(self.header, self.key(k), message),
        }
    }
}

/// Check the `index`-th `[[rule]]` (0-based).
pub(super) fn rule(p: &mut Problems<'_>, index: usize, item: &Spanned<DeValue<'_>>) -> Checked {
    let header = p.line(item.span().start);
    let DeValue::Table(table) = item.get_ref() else {
        p.at_line(
            header,
            format!("rule[{index}]"),
            format!(
                "rule[{index}]: expected a table, found {}",
                item.get_ref().type_str()
            ),
        );
        return Checked {
            rule: None,
            name: None,
        };
    };
    let before = p.count();
    let mut t = Table {
        index,
        name: format!("rule-{}", index + 1),
        header,
        keys: HashMap::new(),
    };
    let mut unknown = Vec::new();
    for (k, v) in table.iter() {
        let key: &str = k.get_ref().as_ref();
        match KEYS.iter().find(|known| **known == key) {
            Some(known) => {
                t.keys.insert(*known, (k, v));
            }
            None => unknown.push((key.to_string(), k.span().start)),
        }
    }
    let mut name_line = header;
    if let Some(v) = t.value("name") {
        if let Some(n) = p.decode::<String>(v, &t.key("name"), &t.prefix("name")) {
            t.name = n;
        }
        name_line = t.offset("name").map_or(header, |o| p.line(o));
    }
    for (key, at) in unknown {
        p.at(
            at,
            t.key(&key),
            format!(
                "rule `{}`: unknown key `{key}` (expected one of {})",
                t.name,
                KEYS.join(", ")
            ),
        );
    }
    let rule = build(p, &t);
    let rule = match rule {
        Some(mut rule) if p.count() == before => {
            if let Some(v) = t.value("fault")
                && let Some(raw) = p.decode::<RawFault>(v, &t.key("fault"), &t.prefix("fault"))
            {
                match fault::validate(raw, &rule) {
                    Ok(f) => rule.fault = Some(f),
                    Err(reason) => fault_problem(p, &t, reason),
                }
            }
            (p.count() == before).then_some(rule)
        }
        _ => None,
    };
    Checked {
        rule,
        name: Some((t.name.clone(), name_line)),
    }
}

/// A fault table's problem: its reason names the sub-key (`fault.delay_ms: …`) when it is one.
fn fault_problem(p: &mut Problems<'_>, t: &Table<'_, '_>, reason: String) {
    let sub = reason
        .strip_prefix("fault.")
        .and_then(|r| r.split_once(':'))
        .map(|(sub, _)| sub.to_string());
    let message = format!("rule `{}`: {reason}", t.name);
    match sub {
        Some(sub) => {
            let key = t.key(&format!("fault.{sub}"));
            match t.sub_offset("fault", &sub) {
                Some(at) => p.at(at, key, message),
                None => p.at_line(t.header, key, message),
            }
        }
        None => t.bad(p, "fault", reason),
    }
}

/// Strings of a one-or-many key, with their offsets (none when absent or mistyped).
fn list(p: &mut Problems<'_>, t: &Table<'_, '_>, k: &str, one_ok: bool) -> Vec<(String, usize)> {
    t.value(k)
        .and_then(|v| p.strings(v, &t.key(k), &t.prefix(k), one_ok))
        .unwrap_or_default()
}

/// Every key but `name` and `fault`; `None` when a key is missing or mistyped.
fn build(p: &mut Problems<'_>, t: &Table<'_, '_>) -> Option<Rule> {
    let action = match t.value("action") {
        None => {
            p.at_line(
                t.header,
                t.key("action"),
                format!(
                    "rule `{}`: missing key `action` (cache, passthrough, intercept_no_cache or deny)",
                    t.name
                ),
            );
            None
        }
        Some(v) => match p
            .decode::<String>(v, &t.key("action"), &t.prefix("action"))?
            .as_str()
        {
            "cache" => Some(Action::Cache),
            "passthrough" => Some(Action::Passthrough),
            "intercept_no_cache" => Some(Action::InterceptNoCache),
            "deny" => Some(Action::Deny),
            other => {
                t.bad(
                    p,
                    "action",
                    format!(
                        "unknown action `{other}` (expected cache, passthrough, intercept_no_cache or deny)"
                    ),
                );
                None
            }
        },
    };
    let mut hosts = Vec::new();
    for (h, at) in list(p, t, "match_host", true) {
        match HostPattern::new(&h) {
            Ok(pat) => hosts.push(pat),
            Err(e) => p.at(
                at,
                t.key("match_host"),
                format!("rule `{}`: match_host: {e}", t.name),
            ),
        }
    }
    let mut paths = Vec::new();
    for (path, at) in list(p, t, "match_path", true) {
        let pat = if path.starts_with('/') || path.starts_with('*') {
            TextPattern::new(&path, false)
        } else {
            Err(format!("`{path}` must start with `/` or `*`"))
        };
        match pat {
            Ok(pat) => paths.push(pat),
            Err(e) => p.at(
                at,
                t.key("match_path"),
                format!("rule `{}`: match_path: {e}", t.name),
            ),
        }
    }
    let mut methods = Vec::new();
    for (m, at) in list(p, t, "match_method", true) {
        let m = m.to_ascii_uppercase();
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
            p.at(
                at,
                t.key("match_method"),
                format!(
                    "rule `{}`: match_method: `{m}` is not an HTTP method",
                    t.name
                ),
            );
        } else {
            methods.push(m);
        }
    }
    let mut content_types = Vec::new();
    for (c, at) in list(p, t, "match_content_type", true) {
        match TextPattern::new(&c, true) {
            Ok(pat) => content_types.push(pat),
            Err(e) => p.at(
                at,
                t.key("match_content_type"),
                format!("rule `{}`: match_content_type: {e}", t.name),
            ),
        }
    }
    let mut services = Vec::new();
    for (s, at) in list(p, t, "services", false) {
        match s.as_str() {
            "http" => services.push(Service::Http),
            "https" => services.push(Service::Https),
            "dns" => services.push(Service::Dns),
            "sip" => services.push(Service::Sip),
            other => p.at(
                at,
                t.key("services"),
                format!(
                    "rule `{}`: services: unknown service `{other}` (expected http, https, dns, sip)",
                    t.name
                ),
            ),
        }
    }
    let ttl_override = t
        .value("ttl_override")
        .and_then(|v| p.decode::<Ttl>(v, &t.key("ttl_override"), &t.prefix("ttl_override")))
        .and_then(|ttl| match ttl.duration() {
            Ok(d) => Some(d),
            Err(e) => {
                t.bad(p, "ttl_override", format!("ttl_override {e}"));
                None
            }
        });
    let cache_key = cache_key(p, t);
    let health_check = health_check(p, t, !hosts.is_empty());
    let ghost = t
        .value("ghost")
        .and_then(|v| p.decode::<bool>(v, &t.key("ghost"), &t.prefix("ghost")))
        .unwrap_or(false);
    let action = action?;
    if action == Action::Deny && ttl_override.is_some() {
        t.bad(
            p,
            "ttl_override",
            "ttl_override has no meaning with action = \"deny\"".into(),
        );
    }
    if ghost && matches!(action, Action::Deny | Action::Passthrough) {
        t.bad(
            p,
            "ghost",
            format!("ghost has no meaning with action = \"{}\"", action.name()),
        );
    }
    Some(Rule {
        name: t.name.clone(),
        line: t.header,
        hosts,
        paths,
        methods,
        content_types,
        services,
        action,
        ttl_override,
        cache_key: cache_key?,
        health_check: health_check?,
        ghost,
        fault: None,
    })
}

fn cache_key(p: &mut Problems<'_>, t: &Table<'_, '_>) -> Option<CacheKeyOptions> {
    let ck = match t.value("cache_key") {
        None => RawCacheKey::default(),
        Some(v) => p.decode::<RawCacheKey>(v, &t.key("cache_key"), &t.prefix("cache_key"))?,
    };
    let content_addressed = match ck.content_addressed.as_deref() {
        None => None,
        Some("sha256") => Some(Digest::Sha256),
        Some(alg) => {
            bad_sub(
                p,
                t,
                "cache_key",
                "content_addressed",
                format!("cache_key.content_addressed: unsupported digest `{alg}` (sha256)"),
            );
            return None;
        }
    };
    if ck.ignore_query && !ck.keep_query.is_empty() {
        bad_sub(
            p,
            t,
            "cache_key",
            "keep_query",
            "cache_key: ignore_query and keep_query exclude each other".into(),
        );
        return None;
    }
    Some(CacheKeyOptions {
        content_addressed,
        ignore_query: ck.ignore_query,
        keep_query: ck.keep_query,
        sort_query: ck.sort_query,
    })
}

/// `Some(None)`: no health check; `None`: a bad one (recorded).
fn health_check(
    p: &mut Problems<'_>,
    t: &Table<'_, '_>,
    has_hosts: bool,
) -> Option<Option<HealthCheck>> {
    let Some(v) = t.value("health_check") else {
        return Some(None);
    };
    let hc = p.decode::<RawHealthCheck>(v, &t.key("health_check"), &t.prefix("health_check"))?;
    let before = p.count();
    if !hc.path.starts_with('/') || hc.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        bad_sub(
            p,
            t,
            "health_check",
            "path",
            format!(
                "health_check.path `{}` must start with `/` and hold no spaces or controls",
                hc.path
            ),
        );
    }
    let interval = match hc.interval.duration() {
        Ok(d) if d < Duration::from_millis(100) => {
            bad_sub(
                p,
                t,
                "health_check",
                "interval",
                "health_check.interval must be at least 100ms".into(),
            );
            d
        }
        Ok(d) => d,
        Err(e) => {
            bad_sub(
                p,
                t,
                "health_check",
                "interval",
                format!("health_check.interval {e}"),
            );
            Duration::ZERO
        }
    };
    if !has_hosts {
        t.bad(
            p,
            "health_check",
            "health_check needs match_host: it checks the origins the rule names".into(),
        );
    }
    (p.count() == before).then_some(Some(HealthCheck {
        path: hc.path,
        interval,
    }))
}

/// A problem of `k.sub`, reported at the sub-key when it is written, else at `k`.
fn bad_sub(p: &mut Problems<'_>, t: &Table<'_, '_>, k: &str, sub: &str, reason: String) {
    let key = t.key(&format!("{k}.{sub}"));
    let message = format!("rule `{}`: {reason}", t.name);
    match t.sub_offset(k, sub) {
        Some(at) => p.at(at, key, message),
        None => p.at_line(t.header, key, message),
    }
}
