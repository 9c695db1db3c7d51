//! The rule editor's routes: the rules file's source, check, dry run, apply and undo.
//!
//! A request enters from `routes::route` when its path is one of
//! [`crate::admin::rules_api::paths`]; check and dry run read only the text they are given (and
//! the live history); apply and undo change the file on disk (`rules_file`: atomic writes, the
//! previous content in `<file>.prev`) and then reload it exactly as `POST /v1/rules/reload`
//! does, under the same lock, so the file stays the source of truth. A text with errors is
//! never written; a reload that still refuses the written file puts the previous one back.
use std::sync::Arc;

use http::{Method, Request};
use tracing::{info, warn};

use super::{ApiError, Reply, body, ok};
use crate::{
    admin::{
        api::{ErrorKind, RulesReloadReport},
        rules_api::{
            ApplyReport, ApplyRequest, DryRunReport, DryRunRequest, RuleError, RulesCheckReport,
            RulesSource, RulesText, paths,
        },
    },
    control::plane::ControlPlane,
    rules::RuleSet,
};

#[path = "dry_run.rs"]
mod dry_run;
#[path = "rules_file.rs"]
mod rules_file;
#[cfg(test)]
#[path = "tests_rules.rs"]
mod tests;

use rules_file::RulesFileError;

const PATHS: &[&str] = &[
    paths::RULES_SOURCE,
    paths::RULES_CHECK,
    paths::RULES_DRY_RUN,
    paths::RULES_APPLY,
    paths::RULES_UNDO,
];

/// Whether `path` is the rule editor's.
pub(super) fn handles(path: &str) -> bool {
    PATHS.contains(&path)
}

impl From<RulesFileError> for ApiError {
    fn from(e: RulesFileError) -> Self {
        ApiError::new(ErrorKind::Failed, e.to_string())
    }
}

/// Answer one of the rule editor's requests.
pub(super) async fn route_rules(
    plane: &Arc<ControlPlane>,
    method: &Method,
    path: &str,
    req: Request<hyper::body::Incoming>,
) -> Result<Reply, ApiError> {
    match (method.clone(), path) {
        (Method::GET, paths::RULES_SOURCE) => ok(&source(plane)?),
        (Method::POST, paths::RULES_CHECK) => {
            let q: RulesText = body(req).await?;
            ok(&check(&q.text))
        }
        (Method::POST, paths::RULES_DRY_RUN) => {
            let q: DryRunRequest = body(req).await?;
            let live = plane
                .hub
                .live()
                .ok_or_else(|| ApiError::not_available("the live feed ([admin] web_listen)"))?;
            let history = live.history(q.limit);
            ok(&dry_run_report(&q.text, &history.records))
        }
        (Method::POST, paths::RULES_APPLY) => {
            let q: ApplyRequest = body(req).await?;
            ok(&apply(plane, &q).await?)
        }
        (Method::POST, paths::RULES_UNDO) => ok(&undo(plane).await?),
        (m, p) => Err(ApiError::new(
            ErrorKind::BadRequest,
            format!("{p} does not take {m}"),
        )),
    }
}

/// The checker over `text`, its problems as the API gives them.
fn checked(text: &str) -> Result<RuleSet, Vec<RuleError>> {
    RuleSet::check(text).map_err(|ps| ps.into_iter().map(RuleError::from).collect())
}

fn check(text: &str) -> RulesCheckReport {
    match checked(text) {
        Ok(set) => RulesCheckReport {
            ok: true,
            rules: set.rules.len(),
            warmup_urls: set.warmup_urls.len(),
            errors: Vec::new(),
        },
        Err(errors) => RulesCheckReport {
            ok: false,
            rules: 0,
            warmup_urls: 0,
            errors,
        },
    }
}

fn dry_run_report(text: &str, records: &[crate::live::Record]) -> DryRunReport {
    match checked(text) {
        Ok(set) => {
            let out = dry_run::run(&set, records);
            DryRunReport {
                ok: true,
                errors: Vec::new(),
                sampled: out.sampled,
                skipped: out.skipped,
                rules: out.rules,
                unmatched: out.unmatched,
            }
        }
        Err(errors) => DryRunReport {
            ok: false,
            errors,
            sampled: 0,
            skipped: 0,
            rules: Vec::new(),
            unmatched: 0,
        },
    }
}

fn source(plane: &ControlPlane) -> Result<RulesSource, ApiError> {
    let Some(file) = plane.rules.file() else {
        return Ok(RulesSource {
            file: None,
            text: String::new(),
            hash: rules_file::hash(""),
            undo_available: false,
        });
    };
    let real = rules_file::real_path(&file);
    let text = rules_file::read(&real)?.unwrap_or_default();
    Ok(RulesSource {
        file: Some(file.display().to_string()),
        hash: rules_file::hash(&text),
        text,
        undo_available: rules_file::prev_path(&real).exists(),
    })
}

/// The configured rules file, or the error that says there is none.
fn configured(plane: &ControlPlane) -> Result<std::path::PathBuf, ApiError> {
    plane.rules.file().ok_or_else(|| {
        ApiError::new(
            ErrorKind::BadRequest,
            "no rules file is configured ([rules] file): there is no file to change",
        )
    })
}

/// The files as they were, to put back when a reload refuses what was written.
pub(super) struct Before {
    /// The rules file's text (none: there was no file).
    text: Option<String>,
    /// `<file>.prev`'s text (none: there was none).
    prev: Option<String>,
}

/// Replace the rules file with `new` (keeping `keep_as_prev` as the previous content), reload
/// (`reload`: the daemon's rules reload, under the lock the caller holds), and put both files
/// back as they were if the reload refuses what was written.
fn replace_and_reload(
    file: &std::path::Path,
    real: &std::path::Path,
    new: &str,
    keep_as_prev: Option<&str>,
    before: Before,
    reload: impl FnOnce() -> RulesReloadReport,
) -> Result<ApplyReport, ApiError> {
    let prev = rules_file::prev_path(real);
    if let Some(old) = keep_as_prev {
        rules_file::write_atomic(&prev, old, real)?;
    }
    rules_file::write_atomic(real, new, real)?;
    let reload = reload();
    let Some(refusal) = reload.error.clone() else {
        return Ok(ApplyReport {
            applied: true,
            errors: Vec::new(),
            file: Some(file.display().to_string()),
            hash: rules_file::hash(new),
            reload: Some(reload),
            restored: false,
            undo_available: prev.exists(),
        });
    };
    warn!(file = %file.display(), error = %refusal,
        "the reload refused the rules file just written; putting the previous one back");
    match &before.text {
        Some(t) => rules_file::write_atomic(real, t, real)?,
        None => rules_file::remove(real)?,
    }
    match &before.prev {
        Some(t) => rules_file::write_atomic(&prev, t, real)?,
        None => rules_file::remove(&prev)?,
    }
    Ok(ApplyReport {
        applied: false,
        errors: vec![RuleError {
            line: 0,
            key: String::new(),
            message: refusal,
        }],
        file: Some(file.display().to_string()),
        hash: rules_file::hash(before.text.as_deref().unwrap_or("")),
        reload: Some(reload),
        restored: true,
        undo_available: prev.exists(),
    })
}

async fn apply(plane: &ControlPlane, q: &ApplyRequest) -> Result<ApplyReport, ApiError> {
    let file = configured(plane)?;
    let real = rules_file::real_path(&file);
    let _one = plane.reload_lock.lock().await;
    let text = rules_file::read(&real)?;
    let hash = rules_file::hash(text.as_deref().unwrap_or(""));
    if let Err(errors) = checked(&q.text) {
        return Ok(ApplyReport {
            applied: false,
            errors,
            file: Some(file.display().to_string()),
            hash,
            reload: None,
            restored: false,
            undo_available: rules_file::prev_path(&real).exists(),
        });
    }
    if let Some(base) = &q.base_hash
        && !base.eq_ignore_ascii_case(&hash)
    {
        return Err(ApiError::new(
            ErrorKind::BadRequest,
            format!(
                "{} changed since the editor loaded it (loaded {}, now {}): someone else changed it; load it again and redo your change",
                file.display(),
                short(base),
                short(&hash)
            ),
        ));
    }
    let before = Before {
        prev: rules_file::read(&rules_file::prev_path(&real))?,
        text: text.clone(),
    };
    // Applying the text the file already has keeps the previous file as it is (an undo still
    // goes back to it).
    let keep = text.as_deref().filter(|t| *t != q.text);
    let report = replace_and_reload(&file, &real, &q.text, keep, before, || {
        plane.reload_rules_locked()
    })?;
    info!(file = %file.display(), applied = report.applied, restored = report.restored,
        rules = report.reload.as_ref().map_or(0, |r| r.rules), "rules file applied through the admin API");
    Ok(report)
}

async fn undo(plane: &ControlPlane) -> Result<ApplyReport, ApiError> {
    let file = configured(plane)?;
    let real = rules_file::real_path(&file);
    let prev_file = rules_file::prev_path(&real);
    let _one = plane.reload_lock.lock().await;
    let Some(prev) = rules_file::read(&prev_file)? else {
        return Err(ApiError::new(
            ErrorKind::BadRequest,
            format!(
                "nothing to undo: there is no previous rules file ({}); apply a change first",
                prev_file.display()
            ),
        ));
    };
    let text = rules_file::read(&real)?;
    if let Err(errors) = checked(&prev) {
        return Ok(ApplyReport {
            applied: false,
            errors,
            file: Some(file.display().to_string()),
            hash: rules_file::hash(text.as_deref().unwrap_or("")),
            reload: None,
            restored: false,
            undo_available: true,
        });
    }
    let before = Before {
        text: text.clone(),
        prev: Some(prev.clone()),
    };
    // The file being replaced becomes the previous one: a second undo goes forward again.
    let report = replace_and_reload(&file, &real, &prev, text.as_deref(), before, || {
        plane.reload_rules_locked()
    })?;
    info!(file = %file.display(), applied = report.applied, restored = report.restored,
        "rules file put back to its previous version through the admin API");
    Ok(report)
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}
