//! `cargo xtask bench NAME`: side-by-side measurements, all figures from one run.
//!
//! Each benchmark builds the release daemon, installs its peers (`setup --bench`), runs the
//! same load against VeloCache and against each peer in the same lab, and prints our figure,
//! theirs, the ratio, and peak memory.
use anyhow::{Result, bail};

use crate::{setup, util};

mod breaker;
mod datapath;
mod dns;
mod http;
mod https;
mod plugins;
mod plugins_sip;
mod rtp;
mod shared;
mod web;
pub mod wrk;

/// Run the benchmark called `name` with `seconds` per measured run.
pub fn run(name: &str, seconds: u64) -> Result<()> {
    util::require_root("benchmarks")?;
    setup::run(setup::Profile::Bench)?;
    let bin = util::build_daemon(true)?;
    velocache_tests::set_velocache_bin(bin);
    match name {
        "breaker" => breaker::run(seconds),
        "datapath" => datapath::run(seconds),
        "dns" => dns::run(seconds),
        "http" => http::run(seconds),
        "https" => https::run(seconds),
        "plugins" => plugins::run(seconds),
        "rtp" => rtp::run(seconds),
        "shared" => shared::run(seconds),
        "web" => web::run(seconds),
        other => {
            bail!(
                "unknown benchmark `{other}` (known: breaker, datapath, dns, http, https, plugins, rtp, shared, web)"
            )
        }
    }
}

/// Print a table: a header and rows of cells, columns padded.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.len());
            }
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("{}", line(header.iter().map(|s| s.to_string()).collect()));
    for row in rows {
        println!("{}", line(row.clone()));
    }
}
