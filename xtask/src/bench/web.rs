//! `bench web`: what a browser on the live feed costs the daemon. The HTTP hit rate (`wrk`
//! from `client`, 32 connections, a 1 KiB object, every request a hit and a live record) with
//! the web dashboard on and nobody watching, and with headless chromium signed in on the Live
//! view receiving the feed (`tests/web/attach.mjs`). The settings take turns for three rounds
//! and each reports its median: on a machine other work shares, a passing load hits them alike.
//!
//! The browser runs in `client`, like an operator's laptop on the LAN, but on the same two
//! cores as wrk and the daemon: the CPU it spends parsing the feed (up to 200 records a second)
//! and drawing it is CPU a laptop would have given it. So it runs twice: niced (`nice -n 19`:
//! closer to a machine of its own), and at the same priority as everything else (that figure
//! includes the browser's own CPU). The page's own counters (records received, dropped for it)
//! are printed for each setting, and the daemon's peak RSS at the end.
use std::{path::PathBuf, time::Duration};

use anyhow::{Result, bail};
use velocache_tests::{Background, Daemon, Lab, addr, servers};

use super::{http, print_table, wrk};

/// The dashboard's port on the gateway's LAN address.
const WEB_PORT: u16 = 9182;
/// The admin token the browser signs in with.
const TOKEN: &str = "bench-web-0b5e7c1d9a";
/// Connections wrk keeps open.
const CONNECTIONS: u32 = 32;
/// Rounds of the three settings.
const ROUNDS: usize = 3;

/// One measured run.
struct Run {
    label: &'static str,
    result: wrk::WrkResult,
    /// The page's counters at the end of the run: (received, dropped).
    page: Option<(u64, u64)>,
}

/// Run the benchmark.
pub fn run(seconds: u64) -> Result<()> {
    velocache_tests::require_tools(&["wrk", "nginx", "curl", "node", "chromium", "nice"]);
    let web = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/web");
    if !web
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        bail!(
            "playwright-core is not installed in {}: run `cargo xtask setup`",
            web.display()
        );
    }
    let www = tempfile::tempdir()?;
    http::write_file(&www.path().join("1k.bin"), 1024)?;
    let work = tempfile::tempdir()?;
    let lab = Lab::new();
    let _origin = http::origin(&lab.origin, www.path(), work.path())?;
    let token = work.path().join("admin.token");
    std::fs::write(&token, TOKEN)?;
    let daemon = Daemon::start_env(
        &lab,
        &format!(
            "[daemon]\nstats_interval_secs = 0\n[http]\nfsync = false\n[admin]\nweb_listen = \"{}:{WEB_PORT}\"\ntoken_file = \"{}\"\n",
            addr::GW_LAN,
            token.display()
        ),
        &[("RUST_LOG", "warn,velocache::app=info")],
    );
    servers::wait_tcp(&lab.client, addr::GW_LAN, WEB_PORT);
    let url = format!("http://{}/1k.bin", addr::ORIGIN);
    for _ in 0..2 {
        let out = lab
            .client
            .run(&["curl", "-sS", "--fail", "-o", "/dev/null", &url]);
        if !out.status.success() {
            bail!("warming {url}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    std::thread::sleep(Duration::from_millis(500));

    // The three settings take turns, ROUNDS times, and each reports its median: on a machine
    // other work shares, a load that comes and goes then hits every setting alike.
    let modes: [(&str, Option<(bool, &str)>); 4] = [
        ("dashboard on, no browser", None),
        ("chromium on Live (nice 19)", Some((true, "live"))),
        ("chromium on Live (same priority)", Some((false, "live"))),
        (
            "chromium on Analytics, feed not drawn (nice 19)",
            Some((true, "analytics")),
        ),
    ];
    let mut runs: Vec<Vec<Run>> = modes.iter().map(|_| Vec::new()).collect();
    for _ in 0..ROUNDS {
        for ((label, browser), results) in modes.iter().zip(runs.iter_mut()) {
            let attached = match browser {
                Some((niced, view)) => Some(attach(&lab, &web, *niced, view)?),
                None => None,
            };
            let result = wrk::run(&lab.client, &url, CONNECTIONS, seconds, &[])?;
            let page = attached.map(|b| {
                // The page's counters lag its JSON parsing by up to a second.
                std::thread::sleep(Duration::from_millis(1500));
                last_counters(&b.stdout())
            });
            results.push(Run {
                label,
                result,
                page: page.flatten(),
            });
        }
    }
    let rss_kib = servers::peak_rss_kib(daemon.pid());
    let medians: Vec<&Run> = runs.iter().map(|r| median(r)).collect();
    let base = medians[0].result.requests_per_sec;

    println!(
        "\nbench web: wrk from `client`, {CONNECTIONS} connections, 1 KiB hits, {seconds} s per run, {ROUNDS} rounds; the dashboard on {}:{WEB_PORT}",
        addr::GW_LAN
    );
    let rows: Vec<Vec<String>> = medians
        .iter()
        .zip(&runs)
        .map(|(r, all)| {
            vec![
                r.label.to_string(),
                format!("{:.0}", r.result.requests_per_sec),
                all.iter()
                    .map(|x| format!("{:.0}", x.result.requests_per_sec))
                    .collect::<Vec<_>>()
                    .join(" "),
                format!("{:.2}", r.result.p99_ms),
                format!("{:.3}", r.result.requests_per_sec / base),
                r.page.map_or("-".into(), |(got, _)| got.to_string()),
                r.page
                    .map_or("-".into(), |(_, dropped)| dropped.to_string()),
                all.iter().map(|x| x.result.errors).sum::<u64>().to_string(),
            ]
        })
        .collect();
    print_table(
        &[
            "setting",
            "median req/s",
            "each round",
            "p99 ms",
            "/ no browser",
            "page received",
            "page dropped",
            "errors",
        ],
        &rows,
    );
    println!(
        "no browser: {base:.0} req/s; chromium on Live (nice 19): {:.0} req/s ({:+.1} %); at the same priority: {:.0} req/s ({:+.1} %)",
        medians[1].result.requests_per_sec,
        (medians[1].result.requests_per_sec / base - 1.0) * 100.0,
        medians[2].result.requests_per_sec,
        (medians[2].result.requests_per_sec / base - 1.0) * 100.0,
    );
    println!(
        "velocache peak RSS: {}",
        rss_kib.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
    );
    Ok(())
}

/// The run with the median request rate.
fn median(runs: &[Run]) -> &Run {
    let mut order: Vec<&Run> = runs.iter().collect();
    order.sort_by(|a, b| {
        a.result
            .requests_per_sec
            .total_cmp(&b.result.requests_per_sec)
    });
    order[order.len() / 2]
}

/// Start chromium (in `client`) signed in, its WebSocket connected, showing `view` (`live`, or
/// another tab: the feed arrives but the Live table is not drawn).
fn attach(lab: &Lab, web: &std::path::Path, niced: bool, view: &str) -> Result<Background> {
    let script = web.join("attach.mjs").display().to_string();
    let mut cmd = if niced {
        let mut c = lab.client.command("nice");
        c.args(["-n", "19", "node", &script]);
        c
    } else {
        let mut c = lab.client.command("node");
        c.arg(&script);
        c
    };
    cmd.current_dir(web)
        .env("VC_URL", format!("http://{}:{WEB_PORT}", addr::GW_LAN))
        .env("VC_ADMIN_TOKEN", TOKEN)
        .env("VC_VIEW", view);
    let mut browser = Background::spawn(cmd, "chromium on Live");
    for _ in 0..300 {
        if browser.stdout().lines().any(|l| l == "attached") {
            return Ok(browser);
        }
        if let Some(status) = browser.try_wait() {
            bail!(
                "the browser exited ({status}) before attaching:\n{}{}",
                browser.stdout(),
                browser.stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "the browser did not attach to the live feed within 30 s:\n{}{}",
        browser.stdout(),
        browser.stderr()
    )
}

/// The last `{"received", "dropped"}` line attach.mjs printed.
fn last_counters(out: &str) -> Option<(u64, u64)> {
    out.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        Some((v["received"].as_u64()?, v["dropped"].as_u64()?))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_last_counter_line() {
        let out = "attached\n{\"received\":10,\"dropped\":0,\"kept\":10}\n{\"received\":900,\"dropped\":52,\"kept\":900}\n";
        assert_eq!(super::last_counters(out), Some((900, 52)));
        assert_eq!(super::last_counters("attached\n"), None);
    }
}
