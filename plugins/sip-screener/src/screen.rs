//! The screening rule, apart from the WIT glue: configuration in, a verdict per Request-URI.

/// The configured prefixes and the answer to a match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    prefixes: Vec<String>,
    status: u16,
    reason: String,
}

impl Rules {
    /// From the manifest's `[config]`, flattened to pairs (arrays joined with newlines). What is
    /// missing or unreadable takes its default: no prefixes, 403, "Premium rate numbers are
    /// blocked".
    pub fn from_config(pairs: &[(String, String)]) -> Rules {
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        Rules {
            prefixes: get("prefixes")
                .unwrap_or("")
                .lines()
                .map(|p| p.trim().trim_matches('"').to_string())
                .filter(|p| !p.is_empty())
                .collect(),
            status: get("status")
                .and_then(|s| s.trim().parse().ok())
                .filter(|s| (300..700).contains(s))
                .unwrap_or(403),
            reason: get("reason")
                .map(|r| r.trim().to_string())
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "Premium rate numbers are blocked".into()),
        }
    }

    /// `Some((status, reason))` when the Request-URI's user part starts with a prefix.
    pub fn verdict(&self, request_uri: &str) -> Option<(u16, String)> {
        let user = user_part(request_uri);
        self.prefixes
            .iter()
            .any(|p| user.starts_with(p.as_str()))
            .then(|| (self.status, self.reason.clone()))
    }
}

/// The user part of a SIP, SIPS or tel URI: between the scheme and `@` (or, for `tel:`, the
/// first `;`), visual separators (`-`, `.`, `(`, `)`, spaces) removed as RFC 3966 allows them.
pub fn user_part(uri: &str) -> String {
    let rest = uri.split_once(':').map_or(uri, |(_, r)| r);
    let user = match rest.split_once('@') {
        Some((u, _)) => u,
        None => rest,
    };
    let user = user.split(';').next().unwrap_or(user);
    user.chars()
        .filter(|c| !matches!(c, '-' | '.' | '(' | ')' | ' '))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::from_config(&[("prefixes".into(), "900\n+1900".into())])
    }

    #[test]
    fn premium_prefixes_are_rejected_with_the_default_answer() {
        let r = rules();
        assert_eq!(
            r.verdict("sip:900123456@10.77.2.2:5060"),
            Some((403, "Premium rate numbers are blocked".into()))
        );
        assert_eq!(
            r.verdict("tel:+1-900-555-0100;phone-context=x")
                .map(|v| v.0),
            Some(403)
        );
        assert_eq!(r.verdict("sip:4711@10.77.2.2"), None);
        assert_eq!(
            r.verdict("sip:19001@10.77.2.2"),
            None,
            "a prefix, not a substring"
        );
    }

    #[test]
    fn status_and_reason_come_from_the_configuration() {
        let r = Rules::from_config(&[
            ("prefixes".into(), "\"0900\"".into()),
            ("status".into(), "603".into()),
            ("reason".into(), "Declined".into()),
        ]);
        assert_eq!(r.verdict("sip:0900@x"), Some((603, "Declined".into())));
        let odd = Rules::from_config(&[
            ("prefixes".into(), "1".into()),
            ("status".into(), "200".into()),
        ]);
        assert_eq!(
            odd.verdict("sip:1@x").map(|v| v.0),
            Some(403),
            "not a failure status: default"
        );
    }
}
