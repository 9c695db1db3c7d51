//! The located checker: every problem with the line and TOML path of its key, as the rule
//! editor and `rules check` show them.
use super::*;

/// The problems of `text`, as `(line, key)` with the message.
fn problems(text: &str) -> Vec<Problem> {
    match RuleSet::check(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(p) => p,
    }
}

fn one(text: &str) -> Problem {
    let mut p = problems(text);
    assert_eq!(p.len(), 1, "{p:#?}");
    p.remove(0)
}

#[test]
fn a_toml_syntax_error_names_its_line_and_no_key() {
    let p = problems("[[rule]]\nname = \"a\"\naction = \"cache\n\n[[rule]]\naction = \"deny\"\n");
    assert!(!p.is_empty());
    assert_eq!(p[0].line, 3, "{p:#?}");
    assert_eq!(p[0].key, "");
    let p = one("[[rule]\naction = \"cache\"\n");
    assert_eq!((p.line, p.key.as_str()), (1, ""), "{p:?}");
}

#[test]
fn an_unknown_action_is_located_at_its_key() {
    let p = one(
        "[[rule]]\nname = \"a\"\naction = \"cache\"\n\n[[rule]]\nname = \"b\"\naction = \"explode\"\n",
    );
    assert_eq!((p.line, p.key.as_str()), (7, "rule[1].action"));
    assert!(p.message.contains("unknown action `explode`"), "{p:?}");
    assert!(p.message.starts_with("rule `b`:"), "{p:?}");
}

#[test]
fn a_bad_glob_is_located_at_the_list_item_that_holds_it() {
    let p = one(
        "[[rule]]\nname = \"a\"\nmatch_path = [\n  \"/ok/*\",\n  \"/bad/[x\",\n]\naction = \"cache\"\n",
    );
    assert_eq!((p.line, p.key.as_str()), (5, "rule[0].match_path"));
    assert!(p.message.contains("bad glob `/bad/[x`"), "{p:?}");
}

#[test]
fn a_second_rule_of_the_same_name_is_located_at_its_name() {
    let p =
        one("[[rule]]\nname=\"x\"\naction = \"cache\"\n[[rule]]\nname=\"x\"\naction = \"deny\"\n");
    assert_eq!((p.line, p.key.as_str()), (5, "rule[1].name"));
    assert!(p.message.contains("used twice (first at line 2)"), "{p:?}");
}

#[test]
fn unknown_keys_wrong_types_and_missing_actions_each_have_their_line() {
    let p = one("[[rule]]\naction = \"cache\"\nmatch_hots = \"x\"\n");
    assert_eq!((p.line, p.key.as_str()), (3, "rule[0].match_hots"));
    assert!(p.message.contains("unknown key `match_hots`"), "{p:?}");

    let p = one("[[rule]]\nname = \"x\"\naction = 5\n");
    assert_eq!((p.line, p.key.as_str()), (3, "rule[0].action"));

    let p = one("[[rule]]\nname = \"x\"\nmatch_host = \"a.lab\"\n");
    assert_eq!((p.line, p.key.as_str()), (1, "rule[0].action"));
    assert!(p.message.contains("missing key `action`"), "{p:?}");

    let p = one("colour = 1\n[[rule]]\naction = \"cache\"\n");
    assert_eq!((p.line, p.key.as_str()), (1, "colour"));

    let p = one("warmup_urls = [\"http://a/\", \"ftp://b/\"]\n");
    assert_eq!((p.line, p.key.as_str()), (1, "warmup_urls[1]"));
}

#[test]
fn nested_keys_are_located_inside_their_table() {
    let p = one(
        "[[rule]]\nname = \"c\"\naction = \"cache\"\n\n[rule.fault]\nabort_status = 503\nabort_percent = 150\n",
    );
    assert_eq!((p.line, p.key.as_str()), (7, "rule[0].fault.abort_percent"));
    let p = one(
        "[[rule]]\nname = \"c\"\nmatch_host = \"a\"\naction = \"cache\"\nhealth_check = { path = \"/h\", interval = \"1ms\" }\n",
    );
    assert_eq!(
        (p.line, p.key.as_str()),
        (5, "rule[0].health_check.interval")
    );
    let p = one("[[rule]]\naction = \"cache\"\ncache_key = { content_addressed = \"md5\" }\n");
    assert_eq!(p.key, "rule[0].cache_key.content_addressed");
    // A key TOML itself refuses inside the table: its own line.
    let p = one("[[rule]]\naction = \"cache\"\n[rule.fault]\ndelay_ms = 5\nbogus = 1\n");
    assert_eq!(p.line, 5, "{p:?}");
    assert_eq!(p.key, "rule[0].fault");
}

#[test]
fn every_problem_of_every_rule_is_reported_in_line_order() {
    let p = problems(
        r#"[[rule]]
name = "a"
match_host = "*.ok.lab"
match_path = "no-slash"
action = "explode"

[[rule]]
name = "b"
match_method = "G3T"
services = ["smtp"]
action = "deny"
ttl_override = "soon"

[[rule]]
name = "a"
action = "cache"
"#,
    );
    let at: Vec<(usize, &str)> = p.iter().map(|p| (p.line, p.key.as_str())).collect();
    assert_eq!(
        at,
        [
            (4, "rule[0].match_path"),
            (5, "rule[0].action"),
            (9, "rule[1].match_method"),
            (10, "rule[1].services"),
            (12, "rule[1].ttl_override"),
            (15, "rule[2].name"),
        ],
        "{p:#?}"
    );
}

#[test]
fn parse_reports_the_first_problem_and_how_many_more() {
    let e = RuleSet::parse(
        "[[rule]]\naction = \"explode\"\n[[rule]]\naction = \"boom\"\n",
        "rules.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("rules.toml:2: rule `rule-1`: unknown action"),
        "{e}"
    );
    assert!(e.contains("and 1 more"), "{e}");
}

#[test]
fn a_rule_keeps_the_line_of_its_header() {
    let set = RuleSet::check(
        "# rules\n\n[[rule]]\nname = \"a\"\naction = \"cache\"\n\n[[rule]]\naction = \"deny\"\n",
    )
    .unwrap();
    assert_eq!(set.rules[0].line, 3);
    assert_eq!(set.rules[1].line, 7);
    assert_eq!(set.rules[1].name, "rule-2");
}
