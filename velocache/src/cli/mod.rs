//! The commands that talk to a running daemon through its admin API (and `rules check`, which
//! needs none): argument parsing (clap), the call, and the output — a table for people, the
//! API's JSON with `--json` for scripts.
//!
//! # Exit codes (scripts can rely on them)
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | failure: the daemon refused or could not do it (bad rules file on reload, …) |
//! | 2 | usage: bad arguments or a request the daemon called malformed |
//! | 3 | the daemon is not running (no admin socket, nothing answers) |
//! | 4 | not available / not found: the service is not enabled or not built in yet, or the entry does not exist |
//! | 5 | permission denied: the admin socket is root-only, or the TCP token is wrong |
//!
//! The socket is found from `--socket`, else `--config FILE`'s `[daemon] run_dir`, else
//! `/etc/velocache/velocache.toml`'s if that file exists, else the default
//! `/run/velocache/admin.sock` (environment overrides such as `VELOCACHE_DAEMON__RUN_DIR` apply).
//! `--connect HOST:PORT` uses the TCP listener instead, with the token from `--token-file` or
//! `VELOCACHE_ADMIN_TOKEN`.

mod calls;
mod commands;
mod plugins;
mod render;
mod render_dns;
mod render_live;
mod render_origins;
pub(crate) mod replay;
mod rules_edit;

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use thiserror::Error;

use crate::{
    admin::api::ErrorKind,
    config,
    control::{ClientError, Endpoint, socket_path},
    rules::RulesError,
};

/// Exit codes.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The operation failed.
    pub const FAILED: u8 = 1;
    /// Bad arguments (also clap's code for usage errors).
    pub const USAGE: u8 = 2;
    /// The daemon is not running.
    pub const NOT_RUNNING: u8 = 3;
    /// The service is not available, or the entry was not found.
    pub const NOT_AVAILABLE: u8 = 4;
    /// Permission denied.
    pub const PERMISSION: u8 = 5;
}

/// The configuration file the CLI reads to find the socket when none is given.
pub const DEFAULT_CONFIG: &str = "/etc/velocache/velocache.toml";

/// How to reach the daemon and how to print, for every admin command.
#[derive(Args, Debug, Clone, Default)]
pub struct GlobalOpts {
    /// Configuration file (the daemon's for `run`; for other commands, where to find the socket).
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// The daemon's admin socket (default: `<run_dir>/admin.sock` of the configuration).
    #[arg(long, value_name = "PATH", global = true, env = "VELOCACHE_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Use the TCP admin listener at HOST:PORT instead of the socket.
    #[arg(long, value_name = "HOST:PORT", global = true)]
    pub connect: Option<String>,
    /// File holding the bearer token for `--connect` (else `VELOCACHE_ADMIN_TOKEN`).
    #[arg(long, value_name = "FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// Print JSON (the admin API's own answer) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up on the daemon after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30, global = true)]
    pub timeout: u64,
}

/// Commands answered by the running daemon (plus `rules check`).
#[derive(Subcommand, Debug, Clone)]
pub enum AdminCommand {
    /// Per service: intercepted flows, kernel counters, the service's own counters (hits,
    /// misses, bytes, …); warm-up progress.
    Stats,
    /// The HTTP cache.
    Cache {
        /// What to do.
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// The operator's rules.
    Rules {
        /// What to do.
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// The daemon itself.
    Service {
        /// What to do.
        #[command(subcommand)]
        command: ServiceCommand,
    },
    /// SIP calls in progress and recently ended, with media statistics; one call's ladder; a
    /// call's capture to pcap.
    Calls {
        /// What to do (none: list the calls).
        #[command(subcommand)]
        command: Option<CallsCommand>,
    },
    /// The DNS answer cache.
    Dns {
        /// What to do.
        #[command(subcommand)]
        command: DnsCommand,
    },
    /// WebAssembly plugins: list them (hooks, state, calls, errors) or re-read their directory.
    Plugins {
        /// What to do.
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// The local CA of HTTPS interception.
    Ca {
        /// What to do.
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Origins: health (error ratio, latency, failures), circuit breaker state and why, active
    /// checks.
    Origins,
    /// Print the Prometheus metrics (OpenMetrics text) the daemon serves at `/metrics`.
    Metrics,
    /// What the gateway is doing now: the live feed's last records (requests, queries, SIP
    /// messages, TLS flows) as the dashboard shows them; needs `[admin] web_listen`.
    Live {
        /// Records to show (the newest).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Keep printing new records as they come (Ctrl-C to stop).
        #[arg(long, short)]
        follow: bool,
    },
    /// One HTTP(S) request from the live feed, as the dashboard's inspector shows it: heads on
    /// both sides, the cache's decision and why, timing.
    Inspect {
        /// Its trace id (the `id` of its live record, the `trace_id` of its log line).
        id: String,
    },
    /// Record one host's requests and responses to a HAR 1.2 file (secrets in headers
    /// redacted).
    Record {
        /// What to do.
        #[command(subcommand)]
        command: RecordCommand,
    },
    /// Send a HAR file's requests to a URL again and compare status, body SHA-256 and latency
    /// with the recording (needs no daemon).
    Replay {
        /// The HAR file (`record stop` prints its path).
        file: PathBuf,
        /// Where to send the requests: `http://HOST[:PORT]` (each keeps its path, query, header
        /// fields and `Host`).
        #[arg(long, value_name = "URL")]
        to: String,
        /// Send each request when it started in the recording (the default).
        #[arg(long, conflicts_with = "fast")]
        as_recorded: bool,
        /// Send each request as soon as the one before it is done.
        #[arg(long)]
        fast: bool,
    },
}

/// `velocache calls …`
#[derive(Subcommand, Debug, Clone)]
pub enum CallsCommand {
    /// One call's messages as a ladder (sngrep-like) and its per-direction media figures.
    Show {
        /// The Call-ID.
        call_id: String,
    },
    /// Capture a call in progress (its SIP messages and RTP, including what the kernel fast
    /// path relays) for a while, then write it as a pcap file.
    Capture {
        /// The Call-ID.
        call_id: String,
        /// How long to capture.
        #[arg(long, value_name = "N", default_value_t = 10)]
        seconds: u64,
        /// Where to write the pcap (default: `CALL-ID.pcap`).
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// `velocache record …`
#[derive(Subcommand, Debug, Clone)]
pub enum RecordCommand {
    /// Start recording the requests for a host (one recording at a time).
    Start {
        /// The host (as clients name it; a port is ignored).
        #[arg(long)]
        host: String,
        /// Stop by itself after this long (`90s`, `10m`); default: at `record stop`.
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
        /// Keep at most this many bytes of each response body (the SHA-256 covers all of it).
        #[arg(long, value_name = "BYTES", default_value_t = crate::http::record_defaults::BODY_CAP)]
        body_cap: u64,
        /// Record at most this many requests.
        #[arg(long, value_name = "N", default_value_t = crate::http::record_defaults::MAX_ENTRIES)]
        max_entries: u64,
    },
    /// Stop the recording and write its HAR file (prints the path).
    Stop,
    /// The recording in progress, or the last one.
    Status,
}

/// `velocache cache …`
#[derive(Subcommand, Debug, Clone)]
pub enum CacheCommand {
    /// List cached objects (all, or those matching a URL or glob).
    Ls {
        /// A URL or a glob (`*` matches any run of characters, `/` included).
        pattern: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one cached object.
    Show {
        /// Its URL.
        url: String,
    },
    /// Remove objects: one URL, or every URL a glob matches.
    Purge {
        /// A URL or a glob (`*` matches any run of characters, `/` included).
        pattern: String,
        /// Also remove it from the shared tier (`[shared]`); the other gateways drop their
        /// copies.
        #[arg(long)]
        shared: bool,
    },
    /// Fetch URLs into the cache now (default: the rules file's `warmup_urls`).
    Warm {
        /// URLs to fetch.
        urls: Vec<String>,
        /// Return once the fetches started instead of when they are done.
        #[arg(long)]
        no_wait: bool,
    },
}

/// `velocache rules …`
#[derive(Subcommand, Debug, Clone)]
pub enum RulesCommand {
    /// Check a rules file without a daemon; exit 1 with every `FILE:LINE: KEY: reason` if it
    /// is bad.
    Check {
        /// The rules file.
        file: PathBuf,
    },
    /// Replace the daemon's rules file with FILE's text and reload it: checked first (nothing
    /// is written if it has errors; exit 1), written atomically, the previous file kept for
    /// `rules undo`.
    Apply {
        /// The new rules.
        file: PathBuf,
        /// Refuse unless the daemon's file still has this SHA-256 (from `GET /v1/rules/source`):
        /// nobody changed it since.
        #[arg(long, value_name = "SHA256")]
        base_hash: Option<String>,
    },
    /// Put the daemon's previous rules file back (the one before the last apply) and reload;
    /// a second undo goes forward again.
    Undo,
    /// Which of the daemon's recent requests and queries (the live feed's history) each rule of
    /// FILE would decide, without applying it.
    DryRun {
        /// The candidate rules.
        file: PathBuf,
        /// How many of the latest records to try (0: every record the feed keeps).
        #[arg(long, value_name = "N", default_value_t = 0)]
        limit: usize,
    },
    /// Re-read the daemon's rules file (a bad file keeps the rules in force; exit 1).
    Reload,
    /// The rules in force, in evaluation order.
    Show,
}

/// `velocache service …`
#[derive(Subcommand, Debug, Clone)]
pub enum ServiceCommand {
    /// Whether the daemon runs (exit 0) or not (exit 3), and what it runs with.
    Status,
    /// Re-read configuration and rules without dropping flows (like SIGHUP).
    Reload,
    /// Stop gracefully (like SIGTERM): new flows pass untouched, flows in progress may finish.
    Stop {
        /// Return once the daemon accepted the request instead of when it has exited.
        #[arg(long)]
        no_wait: bool,
    },
}

/// `velocache dns …`
#[derive(Subcommand, Debug, Clone)]
pub enum DnsCommand {
    /// Drop the cached answers for NAME (every type and query shape), or every answer; the
    /// kernel's copies (`[dns] kernel_answers`) go too, so the next query asks upstream.
    Flush {
        /// The name (`www.example.org`); none: everything.
        name: Option<String>,
    },
    /// What the cache holds for NAME and TYPE: each stored answer, its age, the TTL left, the
    /// upstream it came from, its hits, and the records a client would get now.
    Show {
        /// The name (`www.example.org`).
        name: String,
        /// The query type (`A`, `AAAA`, `MX`, a number…).
        #[arg(default_value = "A")]
        qtype: String,
    },
}

/// `velocache plugins …`
#[derive(Subcommand, Debug, Clone)]
pub enum PluginsCommand {
    /// Every plugin: hooks, the hosts or ports it applies to, live / disabled / refused and why,
    /// calls and errors.
    Ls,
    /// Re-read `[plugins] dir` and swap the plugins in without dropping flows (exit 1 when a
    /// plugin was refused; the others load).
    Reload,
}

/// `velocache ca …`
#[derive(Subcommand, Debug, Clone)]
pub enum CaCommand {
    /// Print the CA certificate (PEM) for clients to trust.
    Export,
    /// Generate a new CA (clients must trust the new certificate); print it.
    Rotate,
}

/// Why a command failed; [`CliError::exit_code`] is what the process returns.
#[derive(Debug, Error)]
pub enum CliError {
    /// The admin API call failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A rules file is invalid.
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// The daemon did it, but reported a failure (a refused file on reload, …).
    #[error("{0}")]
    Failed(String),
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// The async runtime did not start.
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Client(ClientError::NotRunning { .. }) => exit::NOT_RUNNING,
            CliError::Client(ClientError::PermissionDenied { .. }) => exit::PERMISSION,
            CliError::Client(ClientError::Api { body, .. }) => match body.kind {
                ErrorKind::NotAvailable | ErrorKind::NotFound => exit::NOT_AVAILABLE,
                ErrorKind::Unauthorized | ErrorKind::Forbidden => exit::PERMISSION,
                ErrorKind::BadRequest => exit::USAGE,
                ErrorKind::NoSuchEndpoint | ErrorKind::Failed => exit::FAILED,
            },
            CliError::Client(ClientError::Protocol { .. }) => exit::FAILED,
            CliError::Rules(_) | CliError::Failed(_) => exit::FAILED,
            CliError::Runtime(_) => exit::FAILED,
            CliError::Usage(_) => exit::USAGE,
        }
    }

    /// A short machine-readable kind, for `--json` error output.
    pub fn kind(&self) -> &'static str {
        match self.exit_code() {
            exit::NOT_RUNNING => "not_running",
            exit::PERMISSION => "permission_denied",
            exit::NOT_AVAILABLE => match self {
                CliError::Client(ClientError::Api { body, .. })
                    if body.kind == ErrorKind::NotFound =>
                {
                    "not_found"
                }
                _ => "not_available",
            },
            exit::USAGE => "usage",
            _ => "failed",
        }
    }
}

/// Run an admin command; prints its output and returns the exit code.
pub fn run(command: AdminCommand, opts: &GlobalOpts) -> u8 {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
        .and_then(|rt| rt.block_on(commands::dispatch(command, opts)));
    match result {
        Ok(code) => code,
        Err(e) => {
            if opts.json {
                let body = serde_json::json!({
                    "error": e.to_string(),
                    "kind": e.kind(),
                    "exit_code": e.exit_code(),
                });
                println!("{body:#}");
            }
            eprintln!("velocache: error: {e}");
            e.exit_code()
        }
    }
}

/// Where the admin API is, from the options (see the module docs).
pub fn endpoint(opts: &GlobalOpts) -> Result<Endpoint, CliError> {
    if let Some(addr) = &opts.connect {
        let token = match &opts.token_file {
            Some(f) => std::fs::read_to_string(f)
                .map_err(|e| CliError::Usage(format!("token file {}: {e}", f.display())))?,
            None => std::env::var("VELOCACHE_ADMIN_TOKEN").map_err(|_| {
                CliError::Usage("--connect needs --token-file or VELOCACHE_ADMIN_TOKEN".into())
            })?,
        };
        return Ok(Endpoint::Tcp {
            addr: addr.clone(),
            token: token.trim().to_string(),
        });
    }
    if let Some(s) = &opts.socket {
        return Ok(Endpoint::Socket(s.clone()));
    }
    let file = opts.config.clone().or_else(|| {
        let default = Path::new(DEFAULT_CONFIG);
        default.exists().then(|| default.to_path_buf())
    });
    match config::load(file.as_deref()) {
        Ok(cfg) => Ok(Endpoint::Socket(socket_path(&cfg))),
        // An operator who just broke the file still needs to reach the daemon (to reload and
        // read why it refuses): take `[daemon] run_dir` alone if the file still parses as TOML.
        Err(e) => {
            let run_dir = file
                .as_deref()
                .and_then(|f| std::fs::read_to_string(f).ok())
                .and_then(|t| t.parse::<toml::Table>().ok())
                .and_then(|t| Some(PathBuf::from(t.get("daemon")?.get("run_dir")?.as_str()?)));
            let run_dir = run_dir.unwrap_or_else(|| config::DaemonConfig::default().run_dir);
            let path = run_dir.join(crate::control::SOCKET_NAME);
            eprintln!(
                "velocache: warning: {e}; using the admin socket {}",
                path.display()
            );
            Ok(Endpoint::Socket(path))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::api::ErrorBody;

    fn api(kind: ErrorKind) -> CliError {
        CliError::Client(ClientError::Api {
            status: 0,
            body: ErrorBody {
                error: String::new(),
                kind,
            },
        })
    }

    #[test]
    fn exit_codes_are_the_documented_ones() {
        let not_running = CliError::Client(ClientError::NotRunning {
            endpoint: "x".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
        assert_eq!(not_running.exit_code(), 3);
        assert_eq!(not_running.kind(), "not_running");
        assert_eq!(api(ErrorKind::NotAvailable).exit_code(), 4);
        assert_eq!(api(ErrorKind::NotFound).exit_code(), 4);
        assert_eq!(api(ErrorKind::NotFound).kind(), "not_found");
        assert_eq!(api(ErrorKind::BadRequest).exit_code(), 2);
        assert_eq!(api(ErrorKind::Unauthorized).exit_code(), 5);
        assert_eq!(api(ErrorKind::Failed).exit_code(), 1);
        assert_eq!(CliError::Failed(String::new()).exit_code(), 1);
    }

    #[test]
    fn the_socket_comes_from_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("v.toml");
        std::fs::write(&cfg, "[daemon]\nrun_dir = \"/tmp/vc-run\"\n").unwrap();
        let opts = GlobalOpts {
            config: Some(cfg),
            ..GlobalOpts::default()
        };
        match endpoint(&opts).unwrap() {
            Endpoint::Socket(p) => assert_eq!(p, Path::new("/tmp/vc-run/admin.sock")),
            e => panic!("{e:?}"),
        }
        let opts = GlobalOpts {
            socket: Some("/x.sock".into()),
            ..opts
        };
        match endpoint(&opts).unwrap() {
            Endpoint::Socket(p) => assert_eq!(p, Path::new("/x.sock")),
            e => panic!("{e:?}"),
        }
    }
}
