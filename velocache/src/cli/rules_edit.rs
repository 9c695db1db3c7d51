//! `velocache rules check | apply | undo | dry-run`: the rule editor from the shell.
//!
//! `check` needs no daemon: it runs the checker on the file and prints every problem as
//! `FILE:LINE: KEY: reason` (exit 1), or a one-line summary. `apply` checks the file the same
//! way first (nothing is sent if it has errors), then hands its text to the daemon, which
//! writes its own rules file atomically and reloads it; `undo` puts the previous file back;
//! `dry-run` asks the daemon which of its recent requests and queries each rule would decide.
//! With `--json` each prints the API's answer.
use std::{fmt::Write as _, path::Path};

use super::{CliError, commands::print_json, exit, render};
use crate::{
    admin::rules_api::{ApplyReport, ApplyRequest, DryRunReport, DryRunRequest, RuleError, paths},
    control::Client,
    rules::{RuleSet, RulesError},
};

fn read(file: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(file).map_err(|source| {
        CliError::Rules(RulesError::Read {
            path: file.to_path_buf(),
            source,
        })
    })
}

/// `FILE:LINE: KEY: reason`, one line per error.
fn located(origin: &str, errors: &[RuleError]) -> String {
    let mut out = String::new();
    for e in errors {
        let key = if e.key.is_empty() {
            String::new()
        } else {
            format!("{}: ", e.key)
        };
        let _ = writeln!(out, "{origin}:{}: {key}{}", e.line, e.message);
    }
    out
}

/// Print `errors` (stderr for people; with `--json`, an error body that also lists them) and
/// give the failure exit code.
fn refused(origin: &str, errors: &[RuleError], json: bool, extra: serde_json::Value) -> u8 {
    let first = errors
        .first()
        .map(|e| format!("{origin}:{}: {}", e.line, e.message))
        .unwrap_or_else(|| format!("{origin}: refused"));
    if json {
        let mut body = serde_json::json!({
            "file": origin,
            "ok": false,
            "error": first,
            "kind": "failed",
            "exit_code": exit::FAILED,
            "errors": errors,
        });
        if let (Some(b), serde_json::Value::Object(x)) = (body.as_object_mut(), extra) {
            b.extend(x);
        }
        print_json(&body);
    }
    for line in located(origin, errors).lines() {
        eprintln!("velocache: error: {line}");
    }
    exit::FAILED
}

/// `rules check FILE`.
pub(super) fn check(file: &Path, json: bool) -> Result<u8, CliError> {
    let text = read(file)?;
    let origin = file.display().to_string();
    match RuleSet::check(&text) {
        Ok(set) => {
            if json {
                print_json(&serde_json::json!({
                    "file": origin,
                    "ok": true,
                    "rules": set.rules.len(),
                    "warmup_urls": set.warmup_urls.len(),
                    "errors": [],
                }));
            } else {
                println!(
                    "{origin}: ok, {} rules, {} warm-up URLs",
                    set.rules.len(),
                    set.warmup_urls.len()
                );
            }
            Ok(exit::OK)
        }
        Err(problems) => {
            let errors: Vec<RuleError> = problems.into_iter().map(RuleError::from).collect();
            Ok(refused(
                &origin,
                &errors,
                json,
                serde_json::json!({ "rules": 0 }),
            ))
        }
    }
}

fn print_apply(what: &str, r: &ApplyReport, json: bool) -> u8 {
    let file = r.file.as_deref().unwrap_or("(no rules file)");
    if !r.applied {
        if json {
            print_json(r);
        }
        if r.restored {
            eprintln!(
                "velocache: error: the daemon refused the new rules when reloading them; {file} is back as it was"
            );
        }
        for line in located(file, &r.errors).lines() {
            eprintln!("velocache: error: {line}");
        }
        return exit::FAILED;
    }
    if json {
        print_json(r);
    } else {
        if let Some(reload) = &r.reload {
            print!("{}", render::rules_reload(reload));
        }
        println!(
            "{what} {file} (sha256 {}){}",
            r.hash,
            if r.undo_available {
                "; `velocache rules undo` goes back"
            } else {
                ""
            }
        );
    }
    exit::OK
}

/// `rules apply FILE`.
pub(super) async fn apply(
    client: &Client,
    file: &Path,
    base_hash: Option<String>,
    json: bool,
) -> Result<u8, CliError> {
    let text = read(file)?;
    if let Err(problems) = RuleSet::check(&text) {
        let errors: Vec<RuleError> = problems.into_iter().map(RuleError::from).collect();
        let origin = file.display().to_string();
        return Ok(refused(
            &origin,
            &errors,
            json,
            serde_json::json!({ "applied": false }),
        ));
    }
    let report: ApplyReport = client
        .post(paths::RULES_APPLY, &ApplyRequest { text, base_hash })
        .await?;
    Ok(print_apply("applied to", &report, json))
}

/// `rules undo`.
pub(super) async fn undo(client: &Client, json: bool) -> Result<u8, CliError> {
    let report: ApplyReport = client.post(paths::RULES_UNDO, &()).await?;
    Ok(print_apply("previous rules back in", &report, json))
}

/// `rules dry-run FILE`.
pub(super) async fn dry_run(
    client: &Client,
    file: &Path,
    limit: usize,
    json: bool,
) -> Result<u8, CliError> {
    let text = read(file)?;
    let report: DryRunReport = client
        .post(paths::RULES_DRY_RUN, &DryRunRequest { text, limit })
        .await?;
    let origin = file.display().to_string();
    if !report.ok {
        if json {
            print_json(&report);
        }
        for line in located(&origin, &report.errors).lines() {
            eprintln!("velocache: error: {line}");
        }
        return Ok(exit::FAILED);
    }
    if json {
        print_json(&report);
    } else {
        print!("{}", render_dry_run(&report));
    }
    Ok(exit::OK)
}

fn render_dry_run(r: &DryRunReport) -> String {
    let mut out = format!(
        "{} recent records: {} decided by a rule, {} by no rule, {} not for rules (SIP)\n",
        r.sampled,
        r.rules.iter().map(|x| x.count).sum::<usize>(),
        r.unmatched,
        r.skipped
    );
    let rows: Vec<Vec<String>> = r
        .rules
        .iter()
        .map(|x| {
            vec![
                x.name.clone(),
                x.line.to_string(),
                x.action.clone(),
                x.count.to_string(),
            ]
        })
        .collect();
    out.push_str(&render::table(
        &["RULE", "LINE", "ACTION", "MATCHES"],
        &rows,
    ));
    for rule in r.rules.iter().filter(|x| !x.matches.is_empty()) {
        let _ = writeln!(out, "\n{} (latest first):", rule.name);
        for m in &rule.matches {
            let _ = writeln!(
                out,
                "  #{} {} {} {} {}",
                m.seq, m.service, m.client, m.host, m.what
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_print_as_file_line_key_reason() {
        let errors = vec![
            RuleError {
                line: 3,
                key: "rule[0].action".into(),
                message: "rule `a`: unknown action `x`".into(),
            },
            RuleError {
                line: 1,
                key: String::new(),
                message: "invalid table header".into(),
            },
        ];
        assert_eq!(
            located("r.toml", &errors),
            "r.toml:3: rule[0].action: rule `a`: unknown action `x`\nr.toml:1: invalid table header\n"
        );
    }
}
