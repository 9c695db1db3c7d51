//! The rule editor's API end to end in one process: a control plane whose rules come from a
//! real file in a temporary directory, served on a temporary socket, asked through the real
//! client.
use std::{os::unix::fs::PermissionsExt as _, path::PathBuf, sync::Arc};

use tokio_util::sync::CancellationToken;

use crate::{
    admin::{
        AdminHub,
        api::ErrorKind,
        rules_api::{
            ApplyReport, ApplyRequest, DryRunReport, DryRunRequest, RulesCheckReport, RulesSource,
            RulesText, paths,
        },
    },
    control::{Client, ClientError, ControlPlane, tests::serve},
    live::{Live, Record},
    rules::Rules,
};

use crate::admin::api::RulesReloadReport;

const FIRST: &str = "[[rule]]\nname = \"ads\"\nmatch_host = \"*.ads.lab\"\naction = \"deny\"\n";
const SECOND: &str = "[[rule]]\nname = \"ads\"\nmatch_host = \"*.ads.lab\"\naction = \"deny\"\n\n[[rule]]\nname = \"media\"\nmatch_host = \"media.lab\"\naction = \"cache\"\n";
const BROKEN: &str = "[[rule]]\nname = \"ads\"\nmatch_host = \"*.ads.lab\"\naction = \"deny\"\n\n[[rule]]\nname = \"media\"\nmatch_host = \"media.lab\"\naction = \"cahce\"\n";

struct Running {
    plane: Arc<ControlPlane>,
    client: Client,
    cancel: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    rules_file: PathBuf,
    _dir: tempfile::TempDir,
}

/// A control plane whose rules come from a file holding `rules` (none: no rules file), with
/// the live feed on when `live` is given.
async fn start(rules: Option<&str>, live: Option<Live>) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let rules_file = dir.path().join("rules.toml");
    let loaded = match rules {
        Some(t) => {
            std::fs::write(&rules_file, t).unwrap();
            std::fs::set_permissions(&rules_file, std::fs::Permissions::from_mode(0o640)).unwrap();
            Rules::load(&rules_file).unwrap()
        }
        None => Rules::empty(),
    };
    let hub = AdminHub::new();
    if let Some(live) = live {
        hub.enable_live(live);
    }
    let s = serve(dir.path(), "", loaded, hub, |_| {}).await;
    Running {
        plane: s.plane,
        client: s.client,
        cancel: s.cancel,
        server: s.server,
        rules_file,
        _dir: dir,
    }
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        self.server.await.unwrap();
    }

    fn names(&self) -> Vec<String> {
        self.plane
            .rules
            .current()
            .rules
            .iter()
            .map(|r| r.name.clone())
            .collect()
    }

    fn on_disk(&self) -> String {
        std::fs::read_to_string(&self.rules_file).unwrap()
    }

    async fn source(&self) -> RulesSource {
        self.client.get(paths::RULES_SOURCE).await.unwrap()
    }

    async fn apply(
        &self,
        text: &str,
        base_hash: Option<String>,
    ) -> Result<ApplyReport, ClientError> {
        self.client
            .post(
                paths::RULES_APPLY,
                &ApplyRequest {
                    text: text.into(),
                    base_hash,
                },
            )
            .await
    }
}

fn api_error(r: Result<impl std::fmt::Debug, ClientError>) -> (u16, ErrorKind, String) {
    match r {
        Err(ClientError::Api { status, body }) => (status, body.kind, body.error),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_source_is_the_file_its_hash_and_whether_undo_can_go_back() {
    let r = start(Some(FIRST), None).await;
    let s = r.source().await;
    assert_eq!(s.text, FIRST);
    assert_eq!(
        s.file.as_deref(),
        Some(r.rules_file.display().to_string().as_str())
    );
    assert_eq!(s.hash.len(), 64);
    assert!(!s.undo_available);
    r.stop().await;
}

#[tokio::test]
async fn check_answers_every_error_with_its_line_and_key() {
    let r = start(Some(FIRST), None).await;
    let report: RulesCheckReport = r
        .client
        .post(
            paths::RULES_CHECK,
            &RulesText {
                text: "[[rule]]\nname = \"a\"\nmatch_host = \"[x\"\naction = \"nope\"\n".into(),
            },
        )
        .await
        .unwrap();
    assert!(!report.ok);
    let at: Vec<(usize, &str)> = report
        .errors
        .iter()
        .map(|e| (e.line, e.key.as_str()))
        .collect();
    assert_eq!(
        at,
        [(3, "rule[0].match_host"), (4, "rule[0].action")],
        "{report:?}"
    );
    let good: RulesCheckReport = r
        .client
        .post(
            paths::RULES_CHECK,
            &RulesText {
                text: SECOND.into(),
            },
        )
        .await
        .unwrap();
    assert!(good.ok && good.errors.is_empty());
    assert_eq!(good.rules, 2);
    r.stop().await;
}

#[tokio::test]
async fn a_text_with_errors_is_never_written_and_the_rules_in_force_stay() {
    let r = start(Some(FIRST), None).await;
    let report = r.apply(BROKEN, None).await.unwrap();
    assert!(!report.applied);
    assert_eq!(report.errors[0].line, 9);
    assert_eq!(report.errors[0].key, "rule[1].action");
    assert!(report.reload.is_none());
    assert_eq!(r.on_disk(), FIRST);
    assert_eq!(r.names(), ["ads"]);
    assert!(!report.undo_available);
    r.stop().await;
}

#[tokio::test]
async fn apply_writes_the_file_reloads_it_and_undo_goes_back() {
    let r = start(Some(FIRST), None).await;
    let base = r.source().await.hash;
    let report = r.apply(SECOND, Some(base)).await.unwrap();
    assert!(report.applied, "{report:?}");
    assert!(!report.restored);
    assert_eq!(report.reload.as_ref().unwrap().rules, 2);
    assert!(report.undo_available);
    assert_eq!(r.on_disk(), SECOND);
    assert_eq!(r.names(), ["ads", "media"]);
    let mode = std::fs::metadata(&r.rules_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o640, "the file keeps its mode");
    let s = r.source().await;
    assert_eq!(s.hash, report.hash);
    assert!(s.undo_available);

    let undone: ApplyReport = r.client.post(paths::RULES_UNDO, &()).await.unwrap();
    assert!(undone.applied, "{undone:?}");
    assert_eq!(r.on_disk(), FIRST);
    assert_eq!(r.names(), ["ads"]);
    // Undo again: forward to the text it replaced.
    let redone: ApplyReport = r.client.post(paths::RULES_UNDO, &()).await.unwrap();
    assert!(redone.applied);
    assert_eq!(r.names(), ["ads", "media"]);
    r.stop().await;
}

#[tokio::test]
async fn a_stale_base_hash_is_refused_and_nothing_is_written() {
    let r = start(Some(FIRST), None).await;
    let base = r.source().await.hash;
    // Someone else changes the file meanwhile.
    std::fs::write(&r.rules_file, SECOND).unwrap();
    let (status, kind, error) = api_error(r.apply(FIRST, Some(base)).await);
    assert_eq!((status, kind), (400, ErrorKind::BadRequest));
    assert!(
        error.contains("changed since the editor loaded it"),
        "{error}"
    );
    assert_eq!(r.on_disk(), SECOND);
    r.stop().await;
}

#[tokio::test]
async fn without_a_rules_file_apply_and_undo_are_bad_requests() {
    let r = start(None, None).await;
    let s = r.source().await;
    assert_eq!(s.file, None);
    let (status, _, error) = api_error(r.apply(FIRST, None).await);
    assert_eq!(status, 400);
    assert!(error.contains("no rules file is configured"), "{error}");
    let (status, _, _) = api_error(
        r.client
            .post::<_, ApplyReport>(paths::RULES_UNDO, &())
            .await,
    );
    assert_eq!(status, 400);
    r.stop().await;
}

#[tokio::test]
async fn undo_with_nothing_to_go_back_to_says_so() {
    let r = start(Some(FIRST), None).await;
    let (status, kind, error) = api_error(
        r.client
            .post::<_, ApplyReport>(paths::RULES_UNDO, &())
            .await,
    );
    assert_eq!((status, kind), (400, ErrorKind::BadRequest));
    assert!(error.contains("nothing to undo"), "{error}");
    r.stop().await;
}

#[tokio::test]
async fn dry_run_counts_the_live_history_per_rule_and_needs_the_feed() {
    let off = start(Some(FIRST), None).await;
    let req = DryRunRequest {
        text: SECOND.into(),
        limit: 10,
    };
    let (status, kind, _) = api_error(
        off.client
            .post::<_, DryRunReport>(paths::RULES_DRY_RUN, &req)
            .await,
    );
    assert_eq!((status, kind), (503, ErrorKind::NotAvailable));
    off.stop().await;

    let live = Live::unregistered(100);
    for (service, host, what) in [
        ("dns", "x.ads.lab.", "A"),
        ("http", "media.lab", "GET /a.mp4"),
        ("http", "other.lab", "GET /"),
        ("sip", "call-1@lab", "INVITE"),
        ("http", "media.lab", "GET /b.mp4"),
    ] {
        live.publish(Record {
            service: service.into(),
            host: host.into(),
            what: what.into(),
            ..Record::default()
        });
    }
    let r = start(Some(FIRST), Some(live)).await;
    let report: DryRunReport = r.client.post(paths::RULES_DRY_RUN, &req).await.unwrap();
    assert!(report.ok);
    assert_eq!(
        (report.sampled, report.skipped, report.unmatched),
        (5, 1, 1)
    );
    assert_eq!(report.rules[0].count, 1);
    assert_eq!(report.rules[1].name, "media");
    assert_eq!(report.rules[1].count, 2);
    assert_eq!(report.rules[1].matches[0].what, "GET /b.mp4");
    // Only the latest `limit` records.
    let two: DryRunReport = r
        .client
        .post(
            paths::RULES_DRY_RUN,
            &DryRunRequest {
                text: SECOND.into(),
                limit: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!((two.sampled, two.skipped), (2, 1));
    // A text with errors is not evaluated.
    let bad: DryRunReport = r
        .client
        .post(
            paths::RULES_DRY_RUN,
            &DryRunRequest {
                text: BROKEN.into(),
                limit: 0,
            },
        )
        .await
        .unwrap();
    assert!(!bad.ok && bad.rules.is_empty());
    assert_eq!(bad.errors[0].line, 9);
    // The rules in force did not change.
    assert_eq!(r.names(), ["ads"]);
    r.stop().await;
}

#[test]
fn a_file_the_reload_still_refuses_is_replaced_by_the_previous_one() {
    use super::{Before, replace_and_reload, rules_file};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.toml");
    let prev = rules_file::prev_path(&file);
    std::fs::write(&file, FIRST).unwrap();
    std::fs::write(&prev, "# older\n").unwrap();
    let before = Before {
        text: Some(FIRST.into()),
        prev: Some("# older\n".into()),
    };
    let report = replace_and_reload(&file, &file, SECOND, Some(FIRST), before, || {
        // What the daemon saw when it reloaded: the new file.
        assert_eq!(std::fs::read_to_string(&file).unwrap(), SECOND);
        RulesReloadReport {
            file: Some(file.display().to_string()),
            rules: 1,
            error: Some("rules.toml:1: refused".into()),
        }
    })
    .unwrap_or_else(|e| panic!("{}", e.body.error));
    assert!(!report.applied && report.restored, "{report:?}");
    assert_eq!(report.errors[0].message, "rules.toml:1: refused");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), FIRST);
    assert_eq!(std::fs::read_to_string(&prev).unwrap(), "# older\n");
}
