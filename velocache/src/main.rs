//! The `velocache` binary: the daemon (`run`), the commands that ask the running daemon
//! (`stats`, `cache`, `rules`, `service`, `calls`, `ca`, `metrics`; see `velocache::cli` for
//! their exit codes) and the ones that need no daemon (`config check`, `rules check`,
//! `datapath show`).
use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use velocache::{
    cli::{self, AdminCommand, GlobalOpts, exit},
    config::{self, LogFormat},
};

#[derive(Parser)]
#[command(
    name = "velocache",
    version,
    about = "Transparent caching gateway for Linux routers",
    after_help = "Exit codes: 0 ok, 1 failed, 2 usage, 3 daemon not running, \
                  4 not available or not found, 5 permission denied."
)]
struct Cli {
    #[command(flatten)]
    global: GlobalOpts,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (with `--config FILE`).
    Run {
        /// Log format; overrides `[log] format` and `VELOCACHE_ENV`.
        #[arg(long, value_enum)]
        log_format: Option<CliLogFormat>,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Kernel-side state, read from the kernel (works without a running daemon).
    Datapath {
        #[command(subcommand)]
        command: DatapathCommand,
    },
    #[command(flatten)]
    Admin(AdminCommand),
}

#[derive(Subcommand)]
enum DatapathCommand {
    /// Show which interfaces have VeloCache's classifier and its XDP dispatcher (with the slots
    /// enabled there) attached. Exit status 0 if any has either.
    Show {
        /// Interfaces to inspect (default: all in this network namespace).
        interfaces: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a configuration file (with the environment applied) and print the result.
    Check {
        /// Configuration file.
        file: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum CliLogFormat {
    Json,
    Pretty,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Admin(command) => cli::run(command, &cli.global),
        command => match dispatch(command, &cli.global) {
            Ok(()) => exit::OK,
            Err(e) => {
                // `{:#}` prints the whole cause chain on one line, without a backtrace.
                eprintln!("velocache: error: {e:#}");
                exit::FAILED
            }
        },
    };
    ExitCode::from(code)
}

fn dispatch(command: Command, global: &GlobalOpts) -> Result<()> {
    match command {
        Command::Run { log_format } => run(global.config.clone(), log_format),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => {
            let cfg = config::load(Some(&file))?;
            println!("{}: ok", file.display());
            let rendered = toml::to_string_pretty(&cfg).context("rendering the configuration")?;
            println!("{rendered}");
            Ok(())
        }
        Command::Datapath {
            command: DatapathCommand::Show { interfaces },
        } => {
            let found = velocache::datapath::inspect(&interfaces);
            if global.json {
                println!("{}", serde_json::to_string_pretty(&found)?);
            } else {
                println!(
                    "{:<16} {:<10} {:<24} TCX INGRESS PROGRAMS",
                    "INTERFACE", "VELOCACHE", "XDP"
                );
                for i in &found {
                    let mode = match (i.velocache_attached, i.netlink_classifier) {
                        (false, _) => "-",
                        (true, true) => "netlink",
                        (true, false) => "tcx",
                    };
                    // `native rtp,dns` for our dispatcher, `generic other_prog` for another.
                    let xdp = match &i.xdp {
                        None => "-".to_string(),
                        Some(x) if x.velocache_dispatcher => {
                            let slots = if x.slots.is_empty() {
                                "(no slot)".to_string()
                            } else {
                                x.slots.join(",")
                            };
                            format!("{} {slots}", x.mode)
                        }
                        Some(x) => format!("{} {}", x.mode, x.program),
                    };
                    println!(
                        "{:<16} {:<10} {:<24} {}",
                        i.interface,
                        mode,
                        xdp,
                        i.tcx_ingress.join(",")
                    );
                }
            }
            let ours = |i: &velocache::datapath::InterfaceAttachments| {
                i.velocache_attached || i.xdp.as_ref().is_some_and(|x| x.velocache_dispatcher)
            };
            if found.iter().any(ours) {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "neither VeloCache's classifier nor its XDP dispatcher is attached to any inspected interface"
                ))
            }
        }
        Command::Admin(_) => unreachable_admin(),
    }
}

/// Admin commands are dispatched by `cli::run` before `dispatch` is called.
fn unreachable_admin() -> Result<()> {
    Err(anyhow::anyhow!(
        "internal: admin command in the wrong dispatcher"
    ))
}

fn run(config_path: Option<PathBuf>, log_format: Option<CliLogFormat>) -> Result<()> {
    let cfg = config::load(config_path.as_deref())?;
    let format = match log_format {
        Some(CliLogFormat::Json) => LogFormat::Json,
        Some(CliLogFormat::Pretty) => LogFormat::Pretty,
        None => cfg.log.format,
    };
    let log = velocache::telemetry::init(format, &cfg.log.level)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("velocache")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let shutdown = shutdown_signal()?;
        let launch = velocache::app::Launch {
            config_file: config_path,
            log: Some(log),
        };
        velocache::app::start(cfg, launch, shutdown)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "velocache failed");
                anyhow::Error::from(e)
            })
    })
}

/// Resolves on the first SIGINT or SIGTERM.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => tracing::info!(signal = "SIGINT", "signal received"),
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "signal received"),
        }
    })
}
