//! Fault injection for chaos testing: what a rule's `fault = { … }` asks for, and its checks.
//!
//! The table enters from `parse` as a [`RawFault`] (serde, unknown keys refused with their line)
//! and leaves as a validated [`Fault`] on the rule, or as the reason it is refused, which
//! `parse` reports with the rule's line like any other key. The HTTP proxy's fault phase
//! (`http::fault`) applies it to the requests the rule decides.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::model::{Action, Rule};

/// The longest delay a rule may inject (a longer one is a typo, or a client's timeout test that
/// belongs elsewhere).
pub const MAX_DELAY_MS: u64 = 600_000;

/// `fault = { delay_ms, abort_status, abort_percent, bandwidth_kbps }` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFault {
    delay_ms: Option<u64>,
    abort_status: Option<u16>,
    abort_percent: Option<f64>,
    bandwidth_kbps: Option<u64>,
}

/// Answer with a status instead of contacting the origin.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Abort {
    /// The status the client gets (400–599).
    pub status: u16,
    /// The share of matching requests aborted, 0–100 (100 when not given).
    pub percent: f64,
}

/// What to inject into the requests a rule decides (any subset, at least one).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fault {
    /// Wait this long before the request goes on (to the cache, the origin, or an abort).
    #[serde(with = "millis", rename = "delay_ms")]
    pub delay: Option<Duration>,
    /// Answer with a status instead of contacting the origin, for a share of requests.
    pub abort: Option<Abort>,
    /// Send the response body to the client at most this fast, kilobits (1000 bits) per second.
    pub bandwidth_kbps: Option<u64>,
}

impl Fault {
    /// The body rate the bandwidth limit allows, bytes per second.
    pub fn bandwidth_bytes_per_sec(&self) -> Option<u64> {
        self.bandwidth_kbps.map(|k| (k * 1000 / 8).max(1))
    }
}

mod millis {
    use std::time::Duration;

    use serde::Serializer;

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }
}

/// Check a rule's fault table against itself and the rule it sits in; the reason names the key.
pub(super) fn validate(raw: RawFault, rule: &Rule) -> Result<Fault, String> {
    if raw.abort_percent.is_some() && raw.abort_status.is_none() {
        return Err("fault.abort_percent: needs abort_status (the status to answer)".into());
    }
    if raw.delay_ms.is_none() && raw.abort_status.is_none() && raw.bandwidth_kbps.is_none() {
        return Err(
            "fault: give at least one of delay_ms, abort_status, bandwidth_kbps".to_string(),
        );
    }
    let delay = match raw.delay_ms {
        None => None,
        Some(0) => return Err("fault.delay_ms: must be at least 1".into()),
        Some(ms) if ms > MAX_DELAY_MS => {
            return Err(format!(
                "fault.delay_ms: {ms} is more than the {MAX_DELAY_MS} ms allowed"
            ));
        }
        Some(ms) => Some(Duration::from_millis(ms)),
    };
    let abort = match (raw.abort_status, raw.abort_percent) {
        (None, _) => None,
        (Some(status), percent) => {
            if !(400..=599).contains(&status) {
                return Err(format!(
                    "fault.abort_status: {status} is not an error status (400–599)"
                ));
            }
            let percent = percent.unwrap_or(100.0);
            if !percent.is_finite() || !(0.0..=100.0).contains(&percent) || percent == 0.0 {
                return Err(format!(
                    "fault.abort_percent: {percent} is not a share of requests (more than 0, at most 100)"
                ));
            }
            Some(Abort { status, percent })
        }
    };
    if raw.bandwidth_kbps == Some(0) {
        return Err("fault.bandwidth_kbps: must be at least 1".into());
    }
    if rule.action == Action::Deny {
        return Err(
            "fault has no meaning with action = \"deny\" (the request is refused first)".into(),
        );
    }
    if rule.needs_response() {
        return Err(
            "fault cannot be combined with match_content_type (a fault acts before the response is known)"
                .into(),
        );
    }
    if !rule.services.is_empty()
        && !rule.services.iter().any(|s| {
            matches!(
                s,
                velocache_common::Service::Http | velocache_common::Service::Https
            )
        })
    {
        return Err(
            "fault applies to HTTP(S) requests only: services names neither http nor https".into(),
        );
    }
    Ok(Fault {
        delay,
        abort,
        bandwidth_kbps: raw.bandwidth_kbps,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::rules::RuleSet;

    fn refused(rule_body: &str) -> String {
        let text = format!(
            "[[rule]]\nname = \"a\"\naction = \"cache\"\n\n[[rule]]\nname = \"chaos\"\n{rule_body}\n"
        );
        match RuleSet::parse(&text, "rules.toml") {
            Ok(_) => panic!("accepted: {rule_body}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_fault_table_parses_with_every_key_or_any_subset() {
        let set = RuleSet::parse(
            "[[rule]]\nname = \"all\"\nmatch_host = \"a.lab\"\naction = \"cache\"\nfault = { delay_ms = 500, abort_status = 503, abort_percent = 50, bandwidth_kbps = 64 }\n\n[[rule]]\nname = \"abort\"\naction = \"passthrough\"\nfault = { abort_status = 429 }\n\n[[rule]]\nname = \"plain\"\naction = \"cache\"\n",
            "rules.toml",
        )
        .unwrap();
        let all = set.rules[0].fault.unwrap();
        assert_eq!(all.delay, Some(Duration::from_millis(500)));
        let abort = all.abort.unwrap();
        assert_eq!((abort.status, abort.percent), (503, 50.0));
        assert_eq!(all.bandwidth_kbps, Some(64));
        assert_eq!(all.bandwidth_bytes_per_sec(), Some(8000));
        let only = set.rules[1].fault.unwrap();
        assert_eq!(
            only.abort.unwrap().percent,
            100.0,
            "abort_percent defaults to all"
        );
        assert_eq!(only.delay, None);
        assert!(set.rules[2].fault.is_none());
    }

    #[test]
    fn bad_fault_tables_are_refused_with_the_rule_line_and_key() {
        for (body, says) in [
            ("action = \"cache\"\nfault = { delay = 5 }", "delay"),
            ("action = \"cache\"\nfault = {}", "at least one of"),
            (
                "action = \"cache\"\nfault = { delay_ms = 0 }",
                "fault.delay_ms",
            ),
            (
                "action = \"cache\"\nfault = { delay_ms = 9000000 }",
                "fault.delay_ms",
            ),
            (
                "action = \"cache\"\nfault = { delay_ms = -1 }",
                "expected u64",
            ),
            (
                "action = \"cache\"\nfault = { abort_status = 200 }",
                "fault.abort_status",
            ),
            (
                "action = \"cache\"\nfault = { abort_percent = 5 }",
                "needs abort_status",
            ),
            (
                "action = \"cache\"\nfault = { abort_status = 503, abort_percent = 150 }",
                "fault.abort_percent",
            ),
            (
                "action = \"cache\"\nfault = { abort_status = 503, abort_percent = 0 }",
                "fault.abort_percent",
            ),
            (
                "action = \"cache\"\nfault = { bandwidth_kbps = 0 }",
                "fault.bandwidth_kbps",
            ),
            (
                "action = \"cache\"\nfault = { bandwidth_kbps = \"fast\" }",
                "expected u64",
            ),
            ("action = \"deny\"\nfault = { delay_ms = 5 }", "deny"),
            (
                "action = \"cache\"\nmatch_content_type = \"text/html\"\nfault = { delay_ms = 5 }",
                "match_content_type",
            ),
            (
                "action = \"cache\"\nservices = [\"dns\"]\nfault = { delay_ms = 5 }",
                "HTTP(S)",
            ),
        ] {
            let e = refused(body);
            assert!(e.contains(says), "{body}: {e}");
            // The line of the fault key (8, or 9 below another key).
            assert!(
                ["rules.toml:8:", "rules.toml:9:"]
                    .iter()
                    .any(|l| e.starts_with(l)),
                "{body}: {e}"
            );
        }
    }
}
