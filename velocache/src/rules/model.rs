//! Rule types and matching: what a parsed `rules.toml` is made of, and how a request's facts
//! meet it.
//!
//! A [`RuleSet`] enters from `parse` (built from the file, every rule with its line); facts about
//! one flow enter [`RuleSet::evaluate`] — service, host, path, method, content type, as much as
//! is known yet — and leave as the first matching rule's [`Decision`] (action, TTL override,
//! cache-key options), or `None` when no rule matches and the service does its default.
//! [`RuleSet::tls_decision`] answers the TLS layer's question (intercept, splice, deny) from the
//! SNI alone, and `undecided_until_response` tells the HTTP proxy when a content-type rule can
//! only decide once the response headers are in.
use std::time::Duration;

use globset::GlobBuilder;
use serde::Serialize;
use velocache_common::Service;

use super::fault::Fault;
use crate::config::Glob;
pub use crate::config::HostPattern;

/// What a matching rule tells the service to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Store and serve from the cache (HTTPS: decrypt and cache).
    Cache,
    /// Forward untouched (HTTPS: splice without decrypting; DNS: forward without caching).
    Passthrough,
    /// Intercept and log but never store (HTTPS: decrypt, do not cache).
    InterceptNoCache,
    /// Refuse: HTTP 403, TLS reset, DNS NXDOMAIN or 0.0.0.0.
    Deny,
}

impl Action {
    /// The name used in `rules.toml` and logs.
    pub fn name(self) -> &'static str {
        match self {
            Action::Cache => "cache",
            Action::Passthrough => "passthrough",
            Action::InterceptNoCache => "intercept_no_cache",
            Action::Deny => "deny",
        }
    }
}

/// A path or content-type glob; `*` matches any run of characters, `/` included.
#[derive(Debug, Clone)]
pub struct TextPattern {
    text: String,
    glob: Glob,
}

impl TextPattern {
    pub(crate) fn new(text: &str, case_insensitive: bool) -> Result<Self, String> {
        let glob = Glob::compile(
            GlobBuilder::new(text)
                .case_insensitive(case_insensitive)
                .literal_separator(false)
                .backslash_escape(true),
        )
        .map_err(|e| format!("bad glob `{text}`: {e}"))?;
        Ok(TextPattern {
            text: text.to_string(),
            glob,
        })
    }

    /// Whether `s` matches.
    pub fn matches(&self, s: &str) -> bool {
        self.glob.is_match(s)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// The digest a content-addressed URL names its content by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Digest {
    /// SHA-256 (`sha256:<64 hex>` in the path, as OCI registries write it).
    Sha256,
}

/// How a rule shapes the cache key of what it matches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CacheKeyOptions {
    /// The URL names its content by digest (e.g. `/v2/<name>/blobs/sha256:<hex>`): the key is
    /// the digest, so the same blob from any host, scheme or CDN redirect is stored once and
    /// verified against it.
    pub content_addressed: Option<Digest>,
    /// Drop the query string from the key entirely.
    pub ignore_query: bool,
    /// Keep only these query parameters (sorted) in the key.
    pub keep_query: Vec<String>,
    /// Sort query parameters so that `?b=1&a=2` and `?a=2&b=1` share an entry.
    pub sort_query: bool,
}

/// An active health check of the origins a rule names (`health_check = { path, interval }`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    /// The path asked with `GET` (a 2xx or 3xx answer is healthy).
    pub path: String,
    /// How often.
    pub interval: Duration,
}

/// One rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Name for logs (`rule` field); defaults to `rule-<n>`.
    pub name: String,
    /// 1-based line of the `[[rule]]` header in the file (0 when not from a file).
    pub line: usize,
    /// Any of these hosts (empty: any host).
    pub hosts: Vec<HostPattern>,
    /// Any of these path globs (empty: any path).
    pub paths: Vec<TextPattern>,
    /// Any of these methods, upper-case (empty: any method).
    pub methods: Vec<String>,
    /// Any of these content types (decided on the response; empty: any).
    pub content_types: Vec<TextPattern>,
    /// Services the rule applies to (empty: every service its matchers make sense for).
    pub services: Vec<Service>,
    /// What to do.
    pub action: Action,
    /// Freshness lifetime (HTTP) or TTL (DNS) to use instead of the origin's.
    pub ttl_override: Option<Duration>,
    /// Cache key shaping.
    pub cache_key: CacheKeyOptions,
    /// Active health checks of the origins it names.
    pub health_check: Option<HealthCheck>,
    /// Ghost mode: the last good answer to each GET/HEAD it matches is learned, and served
    /// when the origin fails and the cache has nothing usable.
    pub ghost: bool,
    /// Faults to inject into the requests it decides (chaos testing).
    pub fault: Option<Fault>,
}

/// What a service knows when it asks for a decision.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// Which service asks.
    pub service: Service,
    /// Host (HTTP `Host`, TLS SNI, DNS query name).
    pub host: &'a str,
    /// Request path with query, HTTP only.
    pub path: Option<&'a str>,
    /// Request method, HTTP only.
    pub method: Option<&'a str>,
    /// Response content type, once the response is known.
    pub content_type: Option<&'a str>,
}

impl<'a> Facts<'a> {
    /// Facts for a DNS query name.
    pub fn dns(qname: &'a str) -> Self {
        Facts {
            service: Service::Dns,
            host: qname,
            path: None,
            method: None,
            content_type: None,
        }
    }
}

/// The first matching rule's verdict.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'a> {
    /// The rule that matched.
    pub rule: &'a Rule,
    /// Its action.
    pub action: Action,
    /// Its TTL override.
    pub ttl_override: Option<Duration>,
}

impl Rule {
    /// Whether the rule can apply to `service` at all: an explicit `services` list decides;
    /// otherwise rules that look at paths, methods or content types are HTTP(S)-only.
    pub fn applies_to(&self, service: Service) -> bool {
        if !self.services.is_empty() {
            return self.services.contains(&service);
        }
        let http_only =
            !self.paths.is_empty() || !self.methods.is_empty() || !self.content_types.is_empty();
        !(http_only && matches!(service, Service::Dns | Service::Sip | Service::Plugin))
    }

    /// Whether the rule matches. A content-type matcher with no content type known yet does
    /// not match (the HTTP proxy asks again once the response headers are in).
    pub fn matches(&self, f: &Facts<'_>) -> bool {
        self.matches_request(f) && self.matches_content_type(f.content_type)
    }

    /// Everything but the content type.
    fn matches_request(&self, f: &Facts<'_>) -> bool {
        if !self.applies_to(f.service) {
            return false;
        }
        if !self.hosts.is_empty() && !self.hosts.iter().any(|h| h.matches(f.host)) {
            return false;
        }
        if !self.paths.is_empty() {
            let Some(path) = f.path else { return false };
            if !self.paths.iter().any(|p| p.matches(path)) {
                return false;
            }
        }
        if !self.methods.is_empty() {
            let Some(m) = f.method else { return false };
            if !self.methods.iter().any(|x| x.eq_ignore_ascii_case(m)) {
                return false;
            }
        }
        true
    }

    fn matches_content_type(&self, ct: Option<&str>) -> bool {
        if self.content_types.is_empty() {
            return true;
        }
        let Some(ct) = ct else { return false };
        // "text/html; charset=utf-8" matches a rule for "text/html".
        let base = ct.split(';').next().unwrap_or(ct).trim();
        self.content_types.iter().any(|p| p.matches(base))
    }

    /// Whether the rule's verdict can only be known from the response (it has a content-type
    /// matcher).
    pub fn needs_response(&self) -> bool {
        !self.content_types.is_empty()
    }
}

/// What to do with a TLS connection, decided from its SNI alone (before any HTTP is seen).
#[derive(Debug, Clone, Copy)]
pub enum TlsDecision<'a> {
    /// Splice without decrypting.
    Passthrough(Option<&'a Rule>),
    /// Refuse the connection.
    Deny(&'a Rule),
    /// Decrypt; the HTTP layer then evaluates every rule per request.
    Intercept {
        /// The host rule that asked for it.
        rule: &'a Rule,
        /// Whether the rule names this host exactly (not through a glob): only such a rule
        /// overrides client pinning.
        exact: bool,
    },
}

/// A whole rules file.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    /// Rules in file order.
    pub rules: Vec<Rule>,
    /// URLs to fetch into the cache at start and on `velocache cache warm`.
    pub warmup_urls: Vec<String>,
}

impl RuleSet {
    /// The first rule matching `facts`, or `None` (the service's default applies).
    pub fn evaluate(&self, facts: &Facts<'_>) -> Option<Decision<'_>> {
        self.rules
            .iter()
            .find(|r| r.matches(facts))
            .map(|rule| Decision {
                rule,
                action: rule.action,
                ttl_override: rule.ttl_override,
            })
    }

    /// Decide a TLS connection from its SNI. Only rules with a `match_host` take part: a rule
    /// that names no host (say, a path rule for container layers) must never make every TLS
    /// connection on the network decrypted — default is passthrough. The first rule whose hosts
    /// match decides: `passthrough` splices; a `deny` with no HTTP-level matchers refuses the
    /// connection; anything else (cache, intercept_no_cache, or a deny that needs the path)
    /// decrypts so the HTTP layer can apply the rules per request.
    pub fn tls_decision(&self, sni: &str) -> TlsDecision<'_> {
        for rule in &self.rules {
            if rule.hosts.is_empty() || !rule.applies_to(Service::Https) {
                continue;
            }
            let Some(pattern) = rule.hosts.iter().find(|h| h.matches(sni)) else {
                continue;
            };
            let http_level = !rule.paths.is_empty()
                || !rule.methods.is_empty()
                || !rule.content_types.is_empty();
            return match rule.action {
                Action::Passthrough => TlsDecision::Passthrough(Some(rule)),
                Action::Deny if !http_level => TlsDecision::Deny(rule),
                _ => TlsDecision::Intercept {
                    rule,
                    exact: pattern.is_exact(),
                },
            };
        }
        TlsDecision::Passthrough(None)
    }

    /// Whether some rule that could match this request depends on the response's content
    /// type and comes before any rule that matches without it — i.e. the final decision has
    /// to wait for the response headers.
    pub fn undecided_until_response(&self, facts: &Facts<'_>) -> bool {
        for rule in &self.rules {
            if rule.needs_response() {
                if rule.matches_request(facts) {
                    return true;
                }
            } else if rule.matches(facts) {
                return false;
            }
        }
        false
    }
}
