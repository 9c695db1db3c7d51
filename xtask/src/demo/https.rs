//! Demo part: HTTPS — a host no rule names is not even steered: the kernel forwards it and
//! reads its SNI as it passes; for a host a rule caches (steered: its address is in
//! `[tls] steer_prefixes` here, as it would be once the gateway's DNS answered for it), the
//! client fetches the gateway's CA from the CA page once and then gets a miss over HTTP/2 and a
//! hit over HTTP/1.1, through the same cache as plain HTTP.
use std::{
    path::PathBuf,
    sync::OnceLock,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};
use velocache_tests::{Lab, addr, dns::dig, servers};

use super::{Demo, Part, Setup};

pub const PART: Part = Part {
    name: "HTTPS: splice by default, cache where a rule says",
    setup,
    run,
};

/// Where `models.lab` lives (the origin's second address, steered); `bank.lab` is on the first.
const MODELS_ADDR: &str = addr::ORIGIN2;

/// The origin's CA, which the client trusts as it trusts public CAs (set by `setup`).
static ORIGIN_CA_PATH: OnceLock<PathBuf> = OnceLock::new();

fn setup(lab: &Lab, dir: &std::path::Path) -> Result<Setup> {
    velocache_tests::require_tools(&["nginx", "openssl", "curl", "dig", "ip"]);
    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    let model = www.join("model.bin");
    let data: Vec<u8> = (0..(8u32 << 20)).map(|i| (i * 7 + i / 311) as u8).collect();
    std::fs::write(&model, data)?;
    // Published two days ago: fresh for a few hours by the usual heuristic.
    std::fs::File::options()
        .write(true)
        .open(&model)?
        .set_modified(SystemTime::now() - Duration::from_secs(2 * 86_400))?;
    std::fs::write(www.join("hello.txt"), "hello from the origin\n")?;
    let pki = servers::TestPki::new(dir, "demo origin CA");
    let (cert, key) = pki.server("origin", &["models.lab", "bank.lab"]);
    let _ = ORIGIN_CA_PATH.set(pki.ca_cert());
    let nginx = servers::nginx_tls(&lab.origin, &www, 443, &cert, &key, dir);
    // The route every real gateway has (a default one): the CA page's address goes through it.
    lab.gw
        .run_ok(&["ip", "route", "add", "198.18.0.0/15", "via", addr::ORIGIN]);
    let rules = dir.join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"models\"\nmatch_host = \"models.lab\"\naction = \"cache\"\n",
    )?;
    let config = format!(
        "[rules]\nfile = \"{}\"\n\n[tls]\nextra_roots = [\"{}\"]\nsteer_prefixes = [\"{}/32\"]\n",
        rules.display(),
        pki.ca_cert().display(),
        MODELS_ADDR
    );
    Ok((vec![nginx], config))
}

fn run(demo: &mut Demo<'_>) -> Result<()> {
    let origin_ca = ORIGIN_CA_PATH
        .get()
        .context("the HTTPS part was not set up")?
        .display()
        .to_string();
    demo.step(
        "client: curl https://bank.lab/ — no rule names it: not steered; the kernel forwards it, \
         reads its SNI and counts its bytes (a `flow` line with path \"observed\")",
    );
    print!(
        "{}",
        fetch(demo, &origin_ca, "bank.lab", addr::ORIGIN, "hello.txt", &[])?
    );
    demo.settle(300);
    demo.print_log();

    demo.step("client: dig velocache.ca, then fetch the gateway's CA from the page it names");
    let answer = dig(
        &demo.lab.client,
        &[&format!("@{}", addr::ORIGIN), "velocache.ca"],
    );
    let page_addr = answer
        .answers
        .first()
        .map(|a| a.3.clone())
        .context("no answer for velocache.ca")?;
    println!("    velocache.ca → {page_addr}");
    let dir = tempfile::tempdir()?;
    let our_ca = dir.path().join("velocache-ca.pem").display().to_string();
    let resolve = format!("velocache.ca:80:{page_addr}");
    demo.client(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--resolve",
        &resolve,
        "-o",
        &our_ca,
        "http://velocache.ca/velocache-ca.pem",
    ])?;
    println!("    saved {our_ca}");

    demo.step("client: curl --http2 https://models.lab/model.bin (8 MiB) — a `cache` rule: a miss");
    print!(
        "{}",
        fetch(
            demo,
            &our_ca,
            "models.lab",
            MODELS_ADDR,
            "model.bin",
            &["--http2"]
        )?
    );
    demo.settle(500);
    demo.print_log();

    demo.step("the same file over HTTP/1.1: a hit from the gateway's disk");
    print!(
        "{}",
        fetch(
            demo,
            &our_ca,
            "models.lab",
            MODELS_ADDR,
            "model.bin",
            &["--http1.1"]
        )?
    );
    demo.settle(300);
    demo.print_log();
    Ok(())
}

/// `curl` `https://host/file` (at `ip`) from the client trusting `cacert`; the lines worth
/// showing.
fn fetch(
    demo: &Demo<'_>,
    cacert: &str,
    host: &str,
    ip: &str,
    file: &str,
    extra: &[&str],
) -> Result<String> {
    let resolve = format!("{host}:443:{ip}");
    let url = format!("https://{host}/{file}");
    let mut args = vec![
        "curl",
        "-sS",
        "--max-time",
        "30",
        "--cacert",
        cacert,
        "--resolve",
        &resolve,
        "-o",
        "/dev/null",
        "-D",
        "-",
        "-w",
        "HTTP/%{http_version} %{http_code} %{size_download} bytes in %{time_total} s\n",
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    let out = demo.client(&args)?;
    Ok(out
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("x-cache-status") || l.contains(" bytes in ")
        })
        .map(|l| format!("    {l}\n"))
        .collect())
}
