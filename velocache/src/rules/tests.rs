use std::time::Duration;

use velocache_common::Service;

use super::*;

fn http<'a>(host: &'a str, path: &'a str) -> Facts<'a> {
    Facts {
        service: Service::Http,
        host,
        path: Some(path),
        method: Some("GET"),
        content_type: None,
    }
}

const SAMPLE: &str = r#"
warmup_urls = ["http://mirror.lab/dists/stable/Release"]

[[rule]]
name = "blobs"
match_host = ["registry.lab", "*.cdn.lab"]
match_path = "/v2/*/blobs/sha256:*"
action = "cache"
ttl_override = "30d"
cache_key = { content_addressed = "sha256" }

[[rule]]
name = "llm"
match_host = "api.llm.lab"
action = "intercept_no_cache"

[[rule]]
name = "ads"
match_host = "*.ads.lab"
action = "deny"

[[rule]]
name = "html-short"
match_content_type = "text/html"
action = "cache"
ttl_override = 60
"#;

#[test]
fn first_matching_rule_wins_with_its_settings() {
    let set = RuleSet::parse(SAMPLE, "rules.toml").unwrap();
    assert_eq!(set.warmup_urls.len(), 1);
    let d = set
        .evaluate(&http(
            "Registry.LAB:443",
            "/v2/library/ubuntu/blobs/sha256:abcd",
        ))
        .unwrap();
    assert_eq!(d.rule.name, "blobs");
    assert_eq!(d.action, Action::Cache);
    assert_eq!(d.ttl_override, Some(Duration::from_secs(30 * 86400)));
    assert_eq!(
        d.rule.cache_key.content_addressed,
        Some(crate::rules::Digest::Sha256)
    );
    assert!(
        set.evaluate(&http("x.cdn.lab", "/v2/a/b/blobs/sha256:1"))
            .is_some()
    );
    // Path does not match → falls through to later rules → none match.
    assert!(
        set.evaluate(&http("registry.lab", "/v2/a/manifests/latest"))
            .is_none()
    );
    assert_eq!(
        set.evaluate(&http("api.llm.lab", "/v1/chat"))
            .unwrap()
            .action,
        Action::InterceptNoCache
    );
}

#[test]
fn host_globs_are_case_insensitive_and_need_a_subdomain() {
    let set = RuleSet::parse(SAMPLE, "r").unwrap();
    assert_eq!(
        set.evaluate(&Facts::dns("Tracker.ADS.lab."))
            .unwrap()
            .action,
        Action::Deny
    );
    assert!(set.evaluate(&Facts::dns("ads.lab")).is_none());
}

#[test]
fn http_only_matchers_never_apply_to_dns() {
    let set = RuleSet::parse(SAMPLE, "r").unwrap();
    // "blobs" has a path matcher: a DNS query for registry.lab must not see it.
    assert!(set.evaluate(&Facts::dns("registry.lab")).is_none());
}

#[test]
fn content_type_rules_wait_for_the_response() {
    let set = RuleSet::parse(SAMPLE, "r").unwrap();
    let req = http("www.lab", "/index.html");
    assert!(set.evaluate(&req).is_none());
    assert!(set.undecided_until_response(&req));
    let mut resp = req;
    resp.content_type = Some("text/html; charset=utf-8");
    let d = set.evaluate(&resp).unwrap();
    assert_eq!(d.rule.name, "html-short");
    assert_eq!(d.ttl_override, Some(Duration::from_secs(60)));
    // A request decided by an earlier rule does not wait.
    assert!(!set.undecided_until_response(&http("api.llm.lab", "/")));
}

#[test]
fn errors_name_the_line_and_reason() {
    let text = "[[rule]]\nname = \"a\"\naction = \"cache\"\n\n[[rule]]\nname = \"b\"\naction = \"explode\"\n";
    let e = RuleSet::parse(text, "rules.toml").unwrap_err().to_string();
    // The line of the offending key.
    assert!(e.starts_with("rules.toml:7:"), "{e}");
    assert!(e.contains("unknown action `explode`"), "{e}");

    let e = RuleSet::parse("[[rule]]\naction = \"cache\"\nmatch_hots = \"x\"\n", "f")
        .unwrap_err()
        .to_string();
    assert!(e.contains("match_hots"), "{e}");
    assert!(e.starts_with("f:3:") || e.starts_with("f:1:"), "{e}");

    let e = RuleSet::parse("[[rule]]\naction = \"cache\"\nmatch_path = \"v2/*\"\n", "f")
        .unwrap_err()
        .to_string();
    assert!(e.contains("must start with `/`"), "{e}");

    let e = RuleSet::parse(
        "[[rule]]\naction = \"cache\"\nttl_override = \"soon\"\n",
        "f",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("ttl_override"), "{e}");

    let e = RuleSet::parse(
        "[[rule]]\nname=\"x\"\naction = \"cache\"\n[[rule]]\nname=\"x\"\naction = \"deny\"\n",
        "f",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("used twice"), "{e}");
}

#[test]
fn reload_keeps_the_old_rules_when_the_new_file_is_bad() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.toml");
    std::fs::write(
        &path,
        "[[rule]]\nname = \"one\"\nmatch_host = \"a.lab\"\naction = \"deny\"\n",
    )
    .unwrap();
    let rules = Rules::load(&path).unwrap();
    std::fs::write(&path, "[[rule]]\naction = \n").unwrap();
    assert!(rules.reload().is_err());
    assert_eq!(rules.current().rules[0].name, "one");
    std::fs::write(&path, "[[rule]]\nname = \"two\"\naction = \"cache\"\n").unwrap();
    rules.reload().unwrap();
    assert_eq!(rules.current().rules[0].name, "two");
}

#[test]
fn switch_file_keeps_file_and_rules_when_the_new_file_is_bad() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("a.toml");
    let second = dir.path().join("b.toml");
    std::fs::write(&first, "[[rule]]\nname = \"one\"\naction = \"deny\"\n").unwrap();
    std::fs::write(&second, "[[rule]]\nname = \"two\"\naction = \n").unwrap();
    let rules = Rules::load(&first).unwrap();
    assert!(rules.switch_file(Some(&second)).is_err());
    assert_eq!(rules.file().as_deref(), Some(first.as_path()));
    assert_eq!(rules.current().rules[0].name, "one");
    std::fs::write(&second, "[[rule]]\nname = \"two\"\naction = \"cache\"\n").unwrap();
    rules.switch_file(Some(&second)).unwrap();
    assert_eq!(rules.file().as_deref(), Some(second.as_path()));
    assert_eq!(rules.current().rules[0].name, "two");
    // A later reload reads the new file.
    std::fs::write(&second, "[[rule]]\nname = \"three\"\naction = \"cache\"\n").unwrap();
    rules.reload().unwrap();
    assert_eq!(rules.current().rules[0].name, "three");
    rules.switch_file(None).unwrap();
    assert!(rules.current().rules.is_empty());
    assert_eq!(rules.file(), None);
}

#[test]
fn example_rules_files_parse() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut n = 0;
    for dir in ["deploy", "deploy/examples"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with("rules") && f.ends_with(".toml"))
            {
                RuleSet::load(&p).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
    }
    assert!(n > 0, "no example rules files under deploy/");
}

#[test]
fn tls_decisions_come_from_host_rules_only() {
    let text = r#"
[[rule]]
name = "layers"
match_path = "/v2/*/blobs/*"
action = "cache"

[[rule]]
name = "bank"
match_host = "*.bank.lab"
action = "passthrough"

[[rule]]
name = "blocked"
match_host = "malware.lab"
action = "deny"

[[rule]]
name = "blocked-path"
match_host = "mixed.lab"
match_path = "/ads/*"
action = "deny"

[[rule]]
name = "registry"
match_host = ["registry.lab", "*.cdn.lab"]
action = "cache"
"#;
    let set = RuleSet::parse(text, "r").unwrap();
    // The path-only rule never causes decryption.
    assert!(matches!(
        set.tls_decision("example.lab"),
        TlsDecision::Passthrough(None)
    ));
    assert!(
        matches!(set.tls_decision("www.bank.lab"), TlsDecision::Passthrough(Some(r)) if r.name == "bank")
    );
    assert!(matches!(set.tls_decision("malware.lab"), TlsDecision::Deny(r) if r.name == "blocked"));
    // A deny that needs the path has to decrypt first.
    assert!(
        matches!(set.tls_decision("mixed.lab"), TlsDecision::Intercept { rule, .. } if rule.name == "blocked-path")
    );
    assert!(matches!(
        set.tls_decision("registry.lab"),
        TlsDecision::Intercept { exact: true, .. }
    ));
    assert!(matches!(
        set.tls_decision("a.cdn.lab"),
        TlsDecision::Intercept { exact: false, .. }
    ));
}

#[test]
fn health_checks_and_ghost_mode_parse_and_bad_ones_name_their_line() {
    let set = RuleSet::parse(
        r#"
[[rule]]
name = "api"
match_host = "10.0.0.2"
action = "cache"
ghost = true
health_check = { path = "/healthz", interval = "5s" }

[[rule]]
name = "plain"
match_host = "b.lab"
action = "cache"
"#,
        "t",
    )
    .unwrap();
    let hc = set.rules[0].health_check.as_ref().unwrap();
    assert_eq!(hc.path, "/healthz");
    assert_eq!(hc.interval, Duration::from_secs(5));
    assert!(set.rules[0].ghost);
    assert!(!set.rules[1].ghost);
    assert!(set.rules[1].health_check.is_none());
    for (text, want) in [
        (
            "[[rule]]\nmatch_host = \"a\"\naction = \"cache\"\nhealth_check = { path = \"healthz\", interval = 5 }\n",
            "must start with `/`",
        ),
        (
            "[[rule]]\nmatch_host = \"a\"\naction = \"cache\"\nhealth_check = { path = \"/h\", interval = \"1ms\" }\n",
            "at least 100ms",
        ),
        (
            "[[rule]]\naction = \"cache\"\nhealth_check = { path = \"/h\", interval = 5 }\n",
            "needs match_host",
        ),
        (
            "[[rule]]\nmatch_host = \"a\"\naction = \"deny\"\nghost = true\n",
            "ghost has no meaning",
        ),
        (
            "[[rule]]\nmatch_host = \"a\"\naction = \"cache\"\nhealth_check = { path = \"/h\" }\n",
            "interval",
        ),
    ] {
        let e = RuleSet::parse(text, "t").unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
        assert!(e.starts_with("t:3:") || e.starts_with("t:4:"), "{e}");
    }
}
