//! `cargo xtask`: the project's own automation. One module per subcommand.
//!
//! - `setup`: install what a fresh machine lacks (toolchain pieces, bpf-linker, Debian tools).
//! - `test`: fmt, clippy (host and BPF), unit tests, lab integration tests, one summary line.
//! - `demo`: bring the lab up, run the daemon, drive real clients, print what happened.
//! - `bench`: side-by-side measurements against the peers VeloCache is compared with.
//! - `soak`: the daemon under mixed load for minutes, with reloads and a restart; flat or not.
//! - `lab`: bring the lab up and keep it until Ctrl-C (for poking at it by hand).
//! - `package`: build the `.deb` (cargo-deb) and check its contents.
//! - `plugins`: build the example and test WebAssembly plugins (`plugins/`) into components.
//! - `fuzz`: run the fuzz targets (cargo-fuzz), minimise and record their corpora.
#![expect(
    clippy::disallowed_methods,
    reason = "xtask is synchronous: blocking sleeps are what it needs"
)]

use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench;
mod demo;
mod fuzz;
mod lab;
mod modgraph;
mod package;
mod plugins;
mod setup;
mod soak;
mod test;
mod util;

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what is missing (idempotent; needs root).
    Setup {
        /// Also install the peers the benchmarks compare against.
        #[arg(long)]
        bench: bool,
    },
    /// Run every check and test; ends with a pass/fail count.
    Test {
        /// Only run tests whose name contains this.
        filter: Option<String>,
        /// Skip fmt and clippy.
        #[arg(long)]
        no_lint: bool,
    },
    /// Run the demo in the lab.
    Demo,
    /// Run a benchmark (`breaker`, `datapath`, `dns`, `http`, `https`, `plugins`, `rtp`, `shared`, `web`).
    Bench {
        /// Which benchmark.
        name: String,
        /// Seconds per measured run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Mixed load (DNS, HTTP, HTTPS spliced and intercepted, SIP) for N minutes with reloads and
    /// a restart; prints RSS, descriptors, BPF map entries, temporary files and errors over time.
    Soak {
        /// How long.
        #[arg(long, default_value_t = 30)]
        minutes: u64,
        /// Seconds between rows.
        #[arg(long, default_value_t = 60)]
        sample_secs: u64,
    },
    /// Bring the lab up with the daemon running and wait for Ctrl-C.
    Lab,
    /// Run the fuzz targets (all, or one), minimise their corpora, update fuzz/README.md.
    Fuzz {
        /// Only this target.
        target: Option<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = 300)]
        seconds: u64,
        /// Commit the corpora, campaign file and table when no crash was found.
        #[arg(long)]
        commit: bool,
    },
    /// Build the WebAssembly plugins in `plugins/` into `target/plugins/NAME/` (component and
    /// manifest, ready for `[plugins] dir`).
    Plugins,
    /// Build the .deb (cargo-deb) and check that it holds the binary, unit and configuration.
    Package {
        /// Package the debug build (for testing the packaging; releases use the default).
        #[arg(long)]
        debug: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    util::install_ctrlc_cleanup();
    let result: Result<()> = match cli.command {
        Command::Setup { bench } => setup::run(if bench {
            setup::Profile::Bench
        } else {
            setup::Profile::Test
        }),
        Command::Test { filter, no_lint } => test::run(filter.as_deref(), !no_lint),
        Command::Demo => demo::run(),
        Command::Bench { name, seconds } => bench::run(&name, seconds),
        Command::Soak {
            minutes,
            sample_secs,
        } => soak::run(minutes, sample_secs),
        Command::Lab => lab::run(),
        Command::Package { debug } => package::run(debug).map(|_| ()),
        Command::Plugins => plugins::run(),
        Command::Fuzz {
            target,
            seconds,
            commit,
        } => fuzz::run(target.as_deref(), seconds, commit),
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}
