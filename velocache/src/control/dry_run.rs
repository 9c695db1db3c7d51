//! The rule editor's dry run: which of the live feed's recent records each rule of a candidate
//! text would decide.
//!
//! Records come from the live history, oldest first; each is turned back into the facts its
//! service asks the rules with, and decided by the same code the services use: HTTP(S) requests
//! by host, method and path through [`RuleSet::evaluate`] (and once more with the response's
//! content type, when the record carries one, as the proxy does when the headers are in); DNS
//! queries by name through [`Facts::dns`]; TLS flows by SNI through
//! [`RuleSet::tls_decision`]. First match wins, as at runtime. SIP messages are counted as
//! skipped: no rule decides them.
use velocache_common::Service;

use crate::{
    admin::rules_api::{DRY_RUN_MATCHES, DryRunMatch, DryRunRule},
    live::{Record, kind},
    rules::{Facts, Rule, RuleSet, TlsDecision},
};

/// What a dry run found.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Records read.
    pub(crate) sampled: usize,
    /// Records no rule can decide (not evaluated).
    pub(crate) skipped: usize,
    /// Per rule, in file order.
    pub(crate) rules: Vec<DryRunRule>,
    /// Evaluated records no rule matched.
    pub(crate) unmatched: usize,
}

/// The rule that would decide `r`: `Err(())` when rules never decide its service.
fn decide<'s>(set: &'s RuleSet, r: &Record) -> Result<Option<&'s Rule>, ()> {
    let http = |service| {
        let (method, path) = r.what.split_once(' ').unwrap_or((r.what.as_str(), ""));
        let mut facts = Facts {
            service,
            host: &r.host,
            path: Some(path),
            method: Some(method),
            content_type: None,
        };
        if let Some(d) = set.evaluate(&facts) {
            return Some(d.rule);
        }
        let ct = r
            .detail
            .iter()
            .find(|(k, _)| {
                k.eq_ignore_ascii_case("content_type") || k.eq_ignore_ascii_case("content-type")
            })
            .map(|(_, v)| v.as_str())?;
        facts.content_type = Some(ct);
        set.evaluate(&facts).map(|d| d.rule)
    };
    match r.service.as_str() {
        kind::HTTP => Ok(http(Service::Http)),
        kind::HTTPS => Ok(http(Service::Https)),
        kind::DNS => Ok(set.evaluate(&Facts::dns(&r.host)).map(|d| d.rule)),
        kind::TLS => Ok(match set.tls_decision(&r.host) {
            TlsDecision::Passthrough(rule) => rule,
            TlsDecision::Deny(rule) => Some(rule),
            TlsDecision::Intercept { rule, .. } => Some(rule),
        }),
        _ => Err(()),
    }
}

/// Run `set` over `records` (oldest first); matches are listed newest first.
pub(crate) fn run(set: &RuleSet, records: &[Record]) -> Outcome {
    let mut out = Outcome {
        sampled: records.len(),
        rules: set
            .rules
            .iter()
            .map(|r| DryRunRule {
                name: r.name.clone(),
                line: r.line,
                action: r.action.name().to_string(),
                count: 0,
                matches: Vec::new(),
            })
            .collect(),
        ..Outcome::default()
    };
    for r in records.iter().rev() {
        match decide(set, r) {
            Err(()) => out.skipped += 1,
            Ok(None) => out.unmatched += 1,
            Ok(Some(rule)) => {
                // Rule names are unique in a checked set.
                let Some(slot) = set
                    .rules
                    .iter()
                    .position(|x| x.name == rule.name)
                    .and_then(|i| out.rules.get_mut(i))
                else {
                    continue;
                };
                slot.count += 1;
                if slot.matches.len() < DRY_RUN_MATCHES {
                    slot.matches.push(DryRunMatch {
                        seq: r.seq,
                        service: r.service.clone(),
                        client: r.client.clone(),
                        host: r.host.clone(),
                        what: r.what.clone(),
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, service: &str, host: &str, what: &str) -> Record {
        Record {
            seq,
            service: service.into(),
            client: "10.0.0.5:40000".into(),
            host: host.into(),
            what: what.into(),
            ..Record::default()
        }
    }

    #[test]
    fn each_record_goes_to_the_first_rule_that_matches_it_as_at_runtime() {
        let set = RuleSet::parse(
            r#"
[[rule]]
name = "blobs"
match_path = "/v2/*"
action = "cache"

[[rule]]
name = "ads"
match_host = "*.ads.lab"
action = "deny"

[[rule]]
name = "html"
match_content_type = "text/html"
action = "intercept_no_cache"
"#,
            "t",
        )
        .unwrap();
        let mut records = vec![
            rec(1, "http", "registry.lab", "GET /v2/x/blobs/sha256:1"),
            rec(2, "https", "x.ads.lab:443", "GET /v2/y"),
            rec(3, "dns", "tracker.ads.lab.", "A"),
            rec(4, "dns", "registry.lab.", "AAAA"),
            rec(5, "sip", "abc@10.0.0.5", "INVITE"),
            rec(6, "tls", "banner.ads.lab", "h2"),
            rec(7, "http", "www.lab", "GET /index.html"),
        ];
        records[6]
            .detail
            .push(("content_type".into(), "text/html; charset=utf-8".into()));
        let out = run(&set, &records);
        assert_eq!((out.sampled, out.skipped, out.unmatched), (7, 1, 1));
        let blobs = &out.rules[0];
        assert_eq!(
            blobs.count, 2,
            "the path rule comes first for both requests"
        );
        assert_eq!(
            blobs.matches.iter().map(|m| m.seq).collect::<Vec<_>>(),
            [2, 1],
            "newest first"
        );
        let ads = &out.rules[1];
        assert_eq!(ads.count, 2, "the DNS query and the TLS flow");
        assert_eq!(ads.action, "deny");
        assert_eq!(
            out.rules[2].count, 1,
            "the content type decides on the response"
        );
    }

    #[test]
    fn a_rule_lists_at_most_twenty_matches_but_counts_them_all() {
        let set = RuleSet::parse("[[rule]]\naction = \"cache\"\n", "t").unwrap();
        let records: Vec<Record> = (1..=50).map(|i| rec(i, "http", "a.lab", "GET /")).collect();
        let out = run(&set, &records);
        assert_eq!(out.rules[0].count, 50);
        assert_eq!(out.rules[0].matches.len(), DRY_RUN_MATCHES);
        assert_eq!(out.rules[0].matches[0].seq, 50);
    }
}
