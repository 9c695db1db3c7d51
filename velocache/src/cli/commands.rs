//! Running one admin command: the API call and its output (table or `--json`), and the exit
//! code its outcome maps to.
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{
    AdminCommand, CaCommand, CacheCommand, CliError, DnsCommand, GlobalOpts, RecordCommand,
    RulesCommand, ServiceCommand, endpoint, exit, render, replay,
};
use crate::{
    admin::api::{
        CaReport, CacheEntry, CacheListing, CacheQuery, CacheShow, CallsReport, DnsFlushReport,
        DnsFlushRequest, DnsShowReport, OriginsReport, PurgeReport, PurgeRequest, RecordReport,
        RecordStart, ReloadReport, RulesReloadReport, RulesReport, StatsReport, StatusReport,
        StopReport, WarmReport, WarmRequest, paths,
    },
    control::{Client, ClientError},
};

pub(super) fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("velocache: error: rendering JSON: {e}"),
    }
}

pub(super) async fn dispatch(command: AdminCommand, opts: &GlobalOpts) -> Result<u8, CliError> {
    // `rules check` needs no daemon.
    if let AdminCommand::Rules {
        command: RulesCommand::Check { file },
    } = &command
    {
        return super::rules_edit::check(file, opts.json);
    }
    let timeout = Duration::from_secs(opts.timeout.max(1));
    // `replay` needs no daemon either: the CLI is the client.
    if let AdminCommand::Replay { file, to, fast, .. } = &command {
        let report = replay::replay(file, to, *fast, timeout).await?;
        if opts.json {
            print_json(&report);
        } else {
            print!("{}", replay::render(&report));
        }
        return Ok(exit::OK);
    }
    let client = Client::new(endpoint(opts)?, timeout);
    let json = opts.json;
    match command {
        AdminCommand::Stats => {
            let stats: StatsReport = client.get(paths::STATS).await?;
            if json {
                print_json(&stats);
            } else {
                print!("{}", render::stats(&stats));
            }
        }
        AdminCommand::Origins => {
            let report: OriginsReport = client.get(paths::ORIGINS).await?;
            if json {
                print_json(&report);
            } else {
                print!("{}", super::render_origins::origins(&report));
            }
        }
        AdminCommand::Metrics => print!("{}", client.get_text(paths::METRICS).await?),
        AdminCommand::Cache { command } => return cache(&client, command, opts).await,
        AdminCommand::Rules { command } => return rules(&client, command, json).await,
        AdminCommand::Service { command } => return service(&client, command, opts).await,
        AdminCommand::Calls {
            command: Some(command),
        } => return super::calls::run(&client, command, json).await,
        AdminCommand::Calls { command: None } => {
            let calls: CallsReport = client.get(paths::CALLS).await?;
            if json {
                print_json(&calls);
            } else {
                print!("{}", render::calls(&calls));
            }
        }
        AdminCommand::Dns {
            command: DnsCommand::Flush { name },
        } => {
            let report: DnsFlushReport = client
                .post(paths::DNS_FLUSH, &DnsFlushRequest { name })
                .await?;
            if json {
                print_json(&report);
            } else {
                println!(
                    "flushed {} answer(s) for {} ({} from the kernel)",
                    report.entries,
                    report.name.as_deref().unwrap_or("every name"),
                    report.kernel
                );
            }
        }
        AdminCommand::Dns {
            command: DnsCommand::Show { name, qtype },
        } => {
            let report: DnsShowReport = client
                .get_query(paths::DNS_SHOW, &[("name", &name), ("type", &qtype)])
                .await?;
            if json {
                print_json(&report);
            } else {
                print!("{}", super::render_dns::show(&report));
            }
        }
        AdminCommand::Live { limit, follow } => {
            super::render_live::live(&client, limit, follow, json).await?;
        }
        AdminCommand::Inspect { id } => {
            let ex: crate::live::Exchange = client
                .get_query(paths::LIVE_INSPECT, &[("id", &id)])
                .await?;
            if json {
                print_json(&ex);
            } else {
                print!("{}", super::render_live::exchange(&ex));
            }
        }
        AdminCommand::Record { command } => return record(&client, command, json).await,
        AdminCommand::Plugins { command } => {
            return super::plugins::run(&client, command, json).await;
        }
        AdminCommand::Replay { .. } => {}
        AdminCommand::Ca { command } => {
            let ca: CaReport = match command {
                CaCommand::Export => client.get(paths::CA).await?,
                CaCommand::Rotate => client.post(paths::CA_ROTATE, &()).await?,
            };
            if json {
                print_json(&ca);
            } else {
                print!("{}", ca.pem);
            }
        }
    }
    Ok(exit::OK)
}

async fn cache(client: &Client, command: CacheCommand, opts: &GlobalOpts) -> Result<u8, CliError> {
    let json = opts.json;
    match command {
        CacheCommand::Ls { pattern, limit } => {
            let listing: CacheListing = client
                .post(paths::CACHE_LIST, &CacheQuery { pattern, limit })
                .await?;
            if json {
                print_json(&listing);
            } else {
                print!("{}", render::cache_listing(&listing));
            }
        }
        CacheCommand::Show { url } => {
            let entry: CacheEntry = client.post(paths::CACHE_SHOW, &CacheShow { url }).await?;
            if json {
                print_json(&entry);
            } else {
                print!("{}", render::cache_entry(&entry));
            }
        }
        CacheCommand::Purge { pattern, shared } => {
            let report: PurgeReport = client
                .post(paths::CACHE_PURGE, &PurgeRequest { pattern, shared })
                .await?;
            if json {
                print_json(&report);
            } else {
                println!(
                    "purged {} objects ({}) matching {}",
                    report.purged,
                    render::bytes(report.bytes),
                    report.pattern
                );
                if shared {
                    println!(
                        "removed {} objects from the shared tier; the other gateways drop their copies",
                        report.shared
                    );
                }
            }
        }
        CacheCommand::Warm { urls, no_wait } => {
            // Warming may take as long as the downloads; the client's timeout is per call.
            let client = Client::new(client.endpoint().clone(), Duration::from_secs(24 * 3600));
            let report: WarmReport = client
                .post(
                    paths::CACHE_WARM,
                    &WarmRequest {
                        urls,
                        wait: !no_wait,
                    },
                )
                .await?;
            if json {
                print_json(&report);
            } else {
                print!("{}", render::warm(&report, no_wait));
            }
            if report.results.iter().any(|r| !r.ok) {
                return Ok(exit::FAILED);
            }
        }
    }
    Ok(exit::OK)
}

async fn record(client: &Client, command: RecordCommand, json: bool) -> Result<u8, CliError> {
    let report: RecordReport = match command {
        RecordCommand::Start {
            host,
            duration,
            body_cap,
            max_entries,
        } => {
            let for_secs = duration
                .map(|d| {
                    humantime::parse_duration(&d)
                        .map(|d| d.as_secs().max(1))
                        .map_err(|e| CliError::Usage(format!("--for `{d}`: {e}")))
                })
                .transpose()?;
            let req = RecordStart {
                host,
                for_secs,
                body_cap_bytes: Some(body_cap),
                max_entries: Some(max_entries),
            };
            client.post(paths::RECORD_START, &req).await?
        }
        RecordCommand::Stop => client.post(paths::RECORD_STOP, &()).await?,
        RecordCommand::Status => client.get(paths::RECORD).await?,
    };
    if json {
        print_json(&report);
    } else {
        print!("{}", render::record(&report));
    }
    Ok(exit::OK)
}

async fn rules(client: &Client, command: RulesCommand, json: bool) -> Result<u8, CliError> {
    match command {
        RulesCommand::Check { file } => super::rules_edit::check(&file, json),
        RulesCommand::Apply { file, base_hash } => {
            super::rules_edit::apply(client, &file, base_hash, json).await
        }
        RulesCommand::Undo => super::rules_edit::undo(client, json).await,
        RulesCommand::DryRun { file, limit } => {
            super::rules_edit::dry_run(client, &file, limit, json).await
        }
        RulesCommand::Show => {
            let rules: RulesReport = client.get(paths::RULES).await?;
            if json {
                print_json(&rules);
            } else {
                print!("{}", render::rules(&rules));
            }
            Ok(exit::OK)
        }
        RulesCommand::Reload => {
            let report: RulesReloadReport = client.post(paths::RULES_RELOAD, &()).await?;
            if json {
                print_json(&report);
            } else {
                print!("{}", render::rules_reload(&report));
            }
            Ok(if report.error.is_some() {
                exit::FAILED
            } else {
                exit::OK
            })
        }
    }
}

async fn service(
    client: &Client,
    command: ServiceCommand,
    opts: &GlobalOpts,
) -> Result<u8, CliError> {
    let json = opts.json;
    match command {
        ServiceCommand::Status => {
            let status: StatusReport = client.get(paths::STATUS).await?;
            if json {
                print_json(&status);
            } else {
                print!("{}", render::status(&status));
            }
            Ok(exit::OK)
        }
        ServiceCommand::Reload => {
            let report: ReloadReport = client.post(paths::RELOAD, &()).await?;
            if json {
                print_json(&report);
            } else {
                print!("{}", render::reload(&report));
            }
            Ok(if report.ok() { exit::OK } else { exit::FAILED })
        }
        ServiceCommand::Stop { no_wait } => {
            let report: StopReport = client.post(paths::STOP, &()).await?;
            let stopped = if no_wait {
                None
            } else {
                // Flows get the grace period, then the datapath is detached.
                let limit = Duration::from_secs(report.grace_secs + 30);
                Some(wait_stopped(client, limit).await)
            };
            if json {
                print_json(&serde_json::json!({
                    "stopping": report.stopping,
                    "active_sessions": report.active_sessions,
                    "grace_secs": report.grace_secs,
                    "stopped": stopped,
                }));
            } else {
                match stopped {
                    None => println!(
                        "stopping: {} flows get up to {} s to finish",
                        report.active_sessions, report.grace_secs
                    ),
                    Some(true) => println!("stopped"),
                    Some(false) => println!("still running; see the daemon's log"),
                }
            }
            Ok(if stopped == Some(false) {
                exit::FAILED
            } else {
                exit::OK
            })
        }
    }
}

/// Poll until the daemon no longer answers.
async fn wait_stopped(client: &Client, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        match client.get::<StatusReport>(paths::STATUS).await {
            Err(ClientError::NotRunning { .. }) => return true,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    false
}
