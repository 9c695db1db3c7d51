//! Rules in, kernel decisions out (pure): the SNI policy the classifier enforces on observed
//! flows, and which DNS names have their answers' addresses steered.
//!
//! Only the rules `RuleSet::tls_decision` consults take part: a `match_host`, and HTTPS among
//! the services they apply to. Each host pattern becomes one `TLS_SNI_POLICY` entry:
//! - an exact name → the name (`example.org`); `*.suffix` with a plain suffix → `.suffix`,
//!   which the kernel looks up at every dot of an SNI; `*` → the empty suffix (every name);
//!   the kernel's answer for those is exact;
//! - any other glob (`cdn?.example.*`, `*cdn.example.org`) → its literal tail cut at a dot,
//!   as [`SNI_PUNT`]: the kernel lets the flow through, and the daemon evaluates the real rules
//!   from the hello event (and resets the flow if they deny it).
//!
//! Each entry carries its rule's position; the kernel obeys the earliest, which is what
//! first-match evaluation gives. A rule that is not `deny` (or a `deny` that needs the request
//! path, which only decryption shows) enters as [`SNI_PASS`] so that it shadows later rules.
//! Without any `deny` no entry can change an outcome, and the policy is empty.
use std::collections::HashMap;

use velocache_common::{
    Service,
    tls::{SNI_DENY, SNI_PASS, SNI_PUNT, SniKey, SniPolicy, sni_key},
};

use crate::rules::{Action, HostPattern, Rule, RuleSet, TlsDecision};

/// Characters that make a host pattern a glob (globset's syntax).
const GLOB_META: &[char] = &['*', '?', '[', ']', '{', '}', '\\'];

/// What a host pattern becomes in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// The kernel matches it exactly: the text to hash (a name, a `.suffix`, or empty).
    Exact(String),
    /// The kernel cannot: the dot suffix every matching name has (maybe empty).
    Punt(String),
}

/// How the kernel sees `pattern` (normalised: lower case, no trailing dot).
pub fn shape(pattern: &HostPattern) -> Shape {
    let text = pattern.as_str();
    if pattern.is_exact() {
        return Shape::Exact(text.to_string());
    }
    if text == "*" {
        return Shape::Exact(String::new());
    }
    if let Some(rest) = text.strip_prefix("*.")
        && !rest.is_empty()
        && !rest.contains(GLOB_META)
    {
        return Shape::Exact(format!(".{rest}"));
    }
    // The literal text after the last glob character, from its first dot on.
    let tail = text.rfind(GLOB_META).map_or(text, |i| &text[i + 1..]);
    Shape::Punt(
        tail.find('.')
            .map_or(String::new(), |d| tail[d..].to_string()),
    )
}

/// Whether `rule` takes part in TLS decisions, and whether it is a connection-level deny.
fn tls_rule(rule: &Rule) -> Option<bool> {
    if rule.hosts.is_empty() || !rule.applies_to(Service::Https) {
        return None;
    }
    let http_level =
        !rule.paths.is_empty() || !rule.methods.is_empty() || !rule.content_types.is_empty();
    Some(rule.action == Action::Deny && !http_level)
}

/// The entries of `TLS_SNI_POLICY` for `rules`, with the first rule naming each key.
pub fn kernel_policy(rules: &RuleSet) -> Vec<(SniKey, SniPolicy)> {
    if !rules
        .rules
        .iter()
        .any(|r| tls_rule(r).is_some_and(|deny| deny))
    {
        return Vec::new();
    }
    let mut out: HashMap<SniKey, SniPolicy> = HashMap::new();
    for (index, rule) in rules.rules.iter().enumerate() {
        let Some(deny) = tls_rule(rule) else {
            continue;
        };
        let exact_action = if deny { SNI_DENY } else { SNI_PASS };
        for pattern in &rule.hosts {
            let (text, action) = match shape(pattern) {
                Shape::Exact(t) => (t, exact_action),
                Shape::Punt(t) => (t, SNI_PUNT),
            };
            out.entry(sni_key(text.as_bytes())).or_insert(SniPolicy {
                rule: index as u32,
                action,
            });
        }
    }
    let mut v: Vec<_> = out.into_iter().collect();
    v.sort_by_key(|(_, p)| p.rule);
    v
}

/// Whether a client's connection to an address learned for `name` must be steered to the
/// daemon: a rule that would decrypt it (`cache`, `intercept_no_cache`, a `deny` that needs the
/// path) — unless `pinned` lists the name and the rule names it only through a glob, since such
/// a host is spliced anyway — or a `deny` the kernel cannot enforce exactly.
pub fn steers(rules: &RuleSet, pinned: &[HostPattern], name: &str) -> bool {
    match rules.tls_decision(name) {
        TlsDecision::Passthrough(_) => false,
        TlsDecision::Intercept { exact, .. } => exact || !pinned.iter().any(|p| p.matches(name)),
        TlsDecision::Deny(rule) => rule
            .hosts
            .iter()
            .filter(|h| h.matches(name))
            .all(|h| matches!(shape(h), Shape::Punt(_))),
    }
}

/// Whether any rule could make [`steers`] true (when none can, DNS answers are not looked at).
pub fn any_steering(rules: &RuleSet) -> bool {
    rules.rules.iter().any(|r| match tls_rule(r) {
        None => false,
        Some(false) => r.action != Action::Passthrough,
        Some(true) => r.hosts.iter().any(|h| matches!(shape(h), Shape::Punt(_))),
    })
}

#[cfg(test)]
mod tests {
    use velocache_common::tls::{SNI_HASH_SEED, sni_hash_step};

    use super::*;

    fn rules(text: &str) -> RuleSet {
        RuleSet::parse(text, "rules").unwrap()
    }

    fn p(text: &str) -> HostPattern {
        HostPattern::new(text).unwrap()
    }

    /// What the kernel does with `sni` and `policy`: the earliest entry among the name and its
    /// dot suffixes (the same backwards pass as `hello.rs`).
    fn kernel_decides(policy: &[(SniKey, SniPolicy)], sni: &str) -> Option<SniPolicy> {
        let find = |k: SniKey| policy.iter().find(|(key, _)| *key == k).map(|e| e.1);
        let mut best = find(SniKey {
            hash: SNI_HASH_SEED,
            len: 0,
            _pad: 0,
        });
        let mut consider = |c: Option<SniPolicy>| {
            if let Some(c) = c
                && best.is_none_or(|b| c.rule < b.rule)
            {
                best = Some(c);
            }
        };
        let mut hash = SNI_HASH_SEED;
        for (k, &b) in sni.as_bytes().iter().rev().enumerate() {
            hash = sni_hash_step(hash, b);
            if b == b'.' {
                consider(find(SniKey {
                    hash,
                    len: k as u32 + 1,
                    _pad: 0,
                }));
            }
        }
        consider(find(SniKey {
            hash,
            len: sni.len() as u32,
            _pad: 0,
        }));
        best
    }

    #[test]
    fn patterns_become_exact_keys_or_punted_suffixes() {
        assert_eq!(
            shape(&p("Example.ORG.")),
            Shape::Exact("example.org".into())
        );
        assert_eq!(
            shape(&p("*.example.org")),
            Shape::Exact(".example.org".into())
        );
        assert_eq!(shape(&p("*")), Shape::Exact(String::new()));
        assert_eq!(
            shape(&p("cdn?.example.org")),
            Shape::Punt(".example.org".into())
        );
        assert_eq!(
            shape(&p("*cdn.example.org")),
            Shape::Punt(".example.org".into())
        );
        assert_eq!(shape(&p("ads.*")), Shape::Punt(String::new()));
        assert_eq!(shape(&p("*.ads.*")), Shape::Punt(String::new()));
    }

    #[test]
    fn the_kernel_policy_gives_what_first_match_gives() {
        let set = rules(
            r#"
[[rule]]
name = "ok"
match_host = "ok.ads.lab"
action = "passthrough"
[[rule]]
name = "ads"
match_host = ["*.ads.lab", "tracker.lab"]
action = "deny"
[[rule]]
name = "cdn"
match_host = "cdn?.lab"
action = "passthrough"
[[rule]]
name = "lab"
match_host = "*.lab"
action = "deny"
[[rule]]
name = "dns-only"
match_host = "dns.example"
services = ["dns"]
action = "deny"
"#,
        );
        let policy = kernel_policy(&set);
        for (sni, want) in [
            ("ok.ads.lab", Some((0, SNI_PASS))),
            ("x.ads.lab", Some((1, SNI_DENY))),
            ("a.b.ADS.lab", Some((1, SNI_DENY))),
            ("tracker.lab", Some((1, SNI_DENY))),
            // A glob the kernel cannot follow comes first: the daemon decides.
            ("cdn1.lab", Some((2, SNI_PUNT))),
            ("www.lab", Some((2, SNI_PUNT))),
            ("ads.lab", Some((2, SNI_PUNT))),
            ("example.org", None),
            ("dns.example", None),
        ] {
            assert_eq!(
                kernel_decides(&policy, sni).map(|p| (p.rule, p.action)),
                want,
                "{sni}"
            );
        }
    }

    #[test]
    fn without_a_deny_rule_the_policy_is_empty() {
        let set = rules(
            "[[rule]]\nmatch_host = \"*.lab\"\naction = \"cache\"\n[[rule]]\nmatch_path = \"/x\"\naction = \"deny\"\n",
        );
        assert!(kernel_policy(&set).is_empty());
    }

    #[test]
    fn names_a_rule_could_act_on_are_steered() {
        let set = rules(
            r#"
[[rule]]
name = "splice"
match_host = "plain.lab"
action = "passthrough"
[[rule]]
name = "cache"
match_host = ["*.lab", "pinned.example"]
action = "cache"
[[rule]]
name = "deny-exact"
match_host = "bad.example"
action = "deny"
[[rule]]
name = "deny-glob"
match_host = "ads?.example"
action = "deny"
[[rule]]
name = "deny-path"
match_host = "api.example"
match_path = "/admin/*"
action = "deny"
"#,
        );
        let pinned = [p("*.lab"), p("pinned.example")];
        assert!(any_steering(&set));
        assert!(!steers(&set, &pinned, "plain.lab"), "passthrough");
        assert!(
            !steers(&set, &pinned, "www.lab"),
            "pinned, named by a glob only"
        );
        assert!(
            steers(&set, &pinned, "pinned.example"),
            "pinned but named exactly"
        );
        assert!(steers(&set, &[], "www.lab"));
        assert!(
            !steers(&set, &pinned, "bad.example"),
            "the kernel denies it"
        );
        assert!(
            steers(&set, &pinned, "ads1.example"),
            "a glob the kernel cannot follow"
        );
        assert!(
            steers(&set, &pinned, "api.example"),
            "needs the path: decrypted"
        );
        assert!(!steers(&set, &pinned, "other.example"));
        assert!(!any_steering(&rules(
            "[[rule]]\nmatch_host = \"x.lab\"\naction = \"passthrough\"\n[[rule]]\nmatch_host = \"*.y\"\naction = \"deny\"\n"
        )));
    }
}
