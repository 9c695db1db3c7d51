//! Typed values that several sections share, parsed once when the configuration loads:
//! durations (written as `*_ms` / `*_secs` integers in the file, used as [`Duration`]s in the
//! code), host patterns, and the [`Invalid`] a section's `check()` returns.
use std::time::Duration;

use globset::GlobBuilder;

use super::Glob;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A validation failure: the dotted key it concerns and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Dotted key, e.g. `dns.listen_port`.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl Invalid {
    /// A failure of `key`.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// A duration written in milliseconds (keys ending in `_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    /// The duration.
    pub fn get(self) -> Duration {
        Duration::from_millis(self.0)
    }

    /// `Err` naming `key` when zero.
    pub fn at_least_one(self, key: &str) -> Result<(), Invalid> {
        if self.0 == 0 {
            return Err(Invalid::new(key, "must be at least 1"));
        }
        Ok(())
    }
}

/// A duration written in seconds (keys ending in `_secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secs(pub u64);

impl Secs {
    /// The duration.
    pub fn get(self) -> Duration {
        Duration::from_secs(self.0)
    }

    /// `Err` naming `key` when zero.
    pub fn at_least_one(self, key: &str) -> Result<(), Invalid> {
        if self.0 == 0 {
            return Err(Invalid::new(key, "must be at least 1"));
        }
        Ok(())
    }
}

/// A host pattern: exact (`example.org`) or a glob (`*.example.org`, `cdn?.example.*`).
/// Matching is case-insensitive and ignores a trailing dot. Written as a string in the
/// configuration (`[tls] pinned_hosts`) and in rules (`match_host`).
#[derive(Debug, Clone)]
pub struct HostPattern {
    text: String,
    glob: Option<Glob>,
}

impl HostPattern {
    /// Parse a pattern.
    pub fn new(text: &str) -> Result<Self, String> {
        let norm = normalise_host(text);
        if norm.is_empty() {
            return Err("empty host pattern".into());
        }
        let glob = if norm.contains(['*', '?', '[']) {
            Some(
                Glob::compile(
                    GlobBuilder::new(&norm)
                        .case_insensitive(true)
                        .literal_separator(false),
                )
                .map_err(|e| format!("bad host glob `{text}`: {e}"))?,
            )
        } else {
            None
        };
        Ok(HostPattern { text: norm, glob })
    }

    /// Whether the pattern names one host exactly (no glob).
    pub fn is_exact(&self) -> bool {
        self.glob.is_none()
    }

    /// Whether `host` (any case, optional trailing dot, optional `:port`) matches.
    pub fn matches(&self, host: &str) -> bool {
        let host = normalise_host(strip_port(host));
        match &self.glob {
            Some(g) => g.is_match(&host),
            None => host == self.text,
        }
    }

    /// The pattern as written (normalised).
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialEq for HostPattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Serialize for HostPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for HostPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        HostPattern::new(&text).map_err(serde::de::Error::custom)
    }
}

fn normalise_host(h: &str) -> String {
    h.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn strip_port(host: &str) -> &str {
    // "[::1]:80" → "[::1]"; "example.org:8080" → "example.org"; a bare IPv6 stays whole.
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Check that every interface name in `names` could be one (`key[i]` names the bad one).
pub(super) fn check_interface_names(key: &str, names: &[String]) -> Result<(), Invalid> {
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() || name.len() > 15 || name.contains('/') {
            return Err(Invalid::new(
                format!("{key}[{i}]"),
                format!("`{name}` is not a valid interface name"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns_match_exact_and_glob_hosts() {
        let exact = HostPattern::new("Example.ORG.").unwrap();
        assert!(exact.is_exact());
        assert!(exact.matches("example.org:8080"));
        let glob = HostPattern::new("*.example.org").unwrap();
        assert!(glob.matches("a.b.EXAMPLE.org"));
        assert!(!glob.matches("example.com"));
        assert!(HostPattern::new(" ").is_err());
    }

    #[test]
    fn durations_deserialize_from_integers() {
        #[derive(Deserialize)]
        struct T {
            a_ms: Millis,
            b_secs: Secs,
        }
        let t: T = toml::from_str("a_ms = 1500\nb_secs = 2").unwrap();
        assert_eq!(t.a_ms.get(), Duration::from_millis(1500));
        assert_eq!(t.b_secs.get(), Duration::from_secs(2));
        assert!(Millis(0).at_least_one("x").is_err());
    }
}
