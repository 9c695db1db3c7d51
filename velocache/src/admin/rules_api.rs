//! The rule editor's wire types: the rules file's text, the checker's located errors, a dry run
//! against the live feed's history, apply and undo.
//!
//! The web page and `velocache rules check|dry-run|apply|undo` speak these; the control plane
//! answers them (`control::routes_rules`). Every error of a rules text is a [`RuleError`] with
//! the line and TOML path of the key it is about, so an editor can mark it where it stands.
use serde::{Deserialize, Serialize};

use super::api::RulesReloadReport;

/// The rule editor's paths.
pub mod paths {
    /// `GET`: [`super::RulesSource`].
    pub const RULES_SOURCE: &str = "/v1/rules/source";
    /// `POST` [`super::RulesText`]: [`super::RulesCheckReport`].
    pub const RULES_CHECK: &str = "/v1/rules/check";
    /// `POST` [`super::DryRunRequest`]: [`super::DryRunReport`].
    pub const RULES_DRY_RUN: &str = "/v1/rules/dry-run";
    /// `POST` [`super::ApplyRequest`]: [`super::ApplyReport`].
    pub const RULES_APPLY: &str = "/v1/rules/apply";
    /// `POST` (no body): [`super::ApplyReport`].
    pub const RULES_UNDO: &str = "/v1/rules/undo";
}

/// The rules file as it is on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesSource {
    /// The file the daemon takes its rules from (none: no rules file configured).
    pub file: Option<String>,
    /// Its text (empty without a file).
    pub text: String,
    /// SHA-256 of the text, hex: give it back as `base_hash` when applying.
    pub hash: String,
    /// Whether `POST /v1/rules/undo` has a previous file to go back to.
    pub undo_available: bool,
}

/// One problem of a rules text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleError {
    /// 1-based line of the offending key or value (0 if unknown).
    pub line: usize,
    /// TOML path of the key: `rule[0].match_host` (0-based: the first `[[rule]]`),
    /// `warmup_urls[1]`; empty for a TOML syntax error.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl From<crate::rules::Problem> for RuleError {
    fn from(p: crate::rules::Problem) -> Self {
        RuleError {
            line: p.line,
            key: p.key,
            message: p.message,
        }
    }
}

/// `POST /v1/rules/check`: a candidate text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesText {
    /// The whole rules file as the editor has it.
    pub text: String,
}

/// The checker's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesCheckReport {
    /// No error.
    pub ok: bool,
    /// Rules in the text (0 when it has errors).
    pub rules: usize,
    /// Warm-up URLs in the text (0 when it has errors).
    pub warmup_urls: usize,
    /// Every problem found, by line.
    pub errors: Vec<RuleError>,
}

/// `POST /v1/rules/dry-run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRunRequest {
    /// The candidate rules text.
    pub text: String,
    /// How many of the latest live records to try (0 or absent: every record kept).
    #[serde(default)]
    pub limit: usize,
}

/// A record a rule would decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRunMatch {
    /// The record's position in the live feed.
    pub seq: u64,
    /// `http`, `https`, `dns`, `tls`.
    pub service: String,
    /// The client.
    pub client: String,
    /// Host, DNS name or SNI.
    pub host: String,
    /// `GET /path`, the query type, the ALPN.
    pub what: String,
}

/// One rule of the candidate text, and what it would decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRunRule {
    /// Its name.
    pub name: String,
    /// The line of its `[[rule]]` header.
    pub line: usize,
    /// Its action.
    pub action: String,
    /// Records it would decide (first matching rule wins, as in the daemon).
    pub count: usize,
    /// The latest of them, newest first (at most [`DRY_RUN_MATCHES`]).
    pub matches: Vec<DryRunMatch>,
}

/// Matches listed per rule.
pub const DRY_RUN_MATCHES: usize = 20;

/// Which recent records each rule of a candidate text would decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRunReport {
    /// The text has no error (otherwise nothing was evaluated).
    pub ok: bool,
    /// The checker's errors.
    pub errors: Vec<RuleError>,
    /// Records read from the live history.
    pub sampled: usize,
    /// Of them, records of services the rules never decide (SIP messages), not evaluated.
    pub skipped: usize,
    /// Per rule, in file order.
    pub rules: Vec<DryRunRule>,
    /// Evaluated records no rule matches (the service does its default).
    pub unmatched: usize,
}

/// `POST /v1/rules/apply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyRequest {
    /// The new rules file.
    pub text: String,
    /// The hash of the file the editor started from ([`RulesSource::hash`]): if the file has
    /// changed since, nothing is written. Absent: no such check.
    #[serde(default)]
    pub base_hash: Option<String>,
}

/// What apply (or undo) did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// The new file is written and its rules are in force.
    pub applied: bool,
    /// Why the text was refused (nothing written).
    pub errors: Vec<RuleError>,
    /// The file the rules come from.
    pub file: Option<String>,
    /// SHA-256 of the file on disk now.
    pub hash: String,
    /// The reload that followed the write (absent when nothing was written).
    pub reload: Option<RulesReloadReport>,
    /// The reload refused the new file and the previous one was put back.
    pub restored: bool,
    /// Whether an undo is available now.
    pub undo_available: bool,
}
