//! The `velocache` binary: the daemon (`run`) and the commands that inspect it.
use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use velocache::config::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "velocache",
    version,
    about = "Transparent caching gateway for Linux routers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// Configuration file (TOML).
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
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
}

#[derive(Subcommand)]
enum DatapathCommand {
    /// Show which interfaces have VeloCache's classifier attached. Exit status 0 if any has.
    Show {
        /// Interfaces to inspect (default: all in this network namespace).
        interfaces: Vec<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
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
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole cause chain on one line, without a backtrace.
            eprintln!("velocache: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run { config, log_format } => run(config, log_format),
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
            command: DatapathCommand::Show { interfaces, json },
        } => {
            let found = velocache::datapath::inspect(&interfaces);
            if json {
                println!("{}", serde_json::to_string_pretty(&found)?);
            } else {
                println!(
                    "{:<16} {:<10} TCX INGRESS PROGRAMS",
                    "INTERFACE", "VELOCACHE"
                );
                for i in &found {
                    let mode = match (i.velocache_attached, i.netlink_classifier) {
                        (false, _) => "-",
                        (true, true) => "netlink",
                        (true, false) => "tcx",
                    };
                    println!(
                        "{:<16} {:<10} {}",
                        i.interface,
                        mode,
                        i.tcx_ingress.join(",")
                    );
                }
            }
            if found.iter().any(|i| i.velocache_attached) {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "VeloCache's classifier is not attached to any inspected interface"
                ))
            }
        }
    }
}

fn run(config_path: Option<PathBuf>, log_format: Option<CliLogFormat>) -> Result<()> {
    let cfg = config::load(config_path.as_deref())?;
    let format = match log_format {
        Some(CliLogFormat::Json) => LogFormat::Json,
        Some(CliLogFormat::Pretty) => LogFormat::Pretty,
        None => cfg.log.format,
    };
    velocache::telemetry::init(format, &cfg.log.level)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("velocache")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let shutdown = shutdown_signal()?;
        velocache::app::run(cfg, shutdown).await.map_err(|e| {
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
