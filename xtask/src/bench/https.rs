//! `bench https`: intercepted HTTPS with a `cache` rule, VeloCache against nginx terminating
//! TLS with `proxy_cache` on the same objects, in one run.
//!
//! - The origin: nginx in `origin` serving `cdn.lab` over TLS (a certificate from a test CA),
//!   `Cache-Control: max-age=3600`.
//! - VeloCache: the daemon in `gw`, `[tls] extra_roots` = the test CA, a rule caching
//!   `cdn.lab`; the client's `/etc/hosts` names the origin's address, which is intercepted
//!   (`[tls] steer_prefixes` lists it: the gateway's DNS never answers for it here).
//! - nginx: on the gateway's LAN address, port 443, a certificate for `cdn.lab` from the same
//!   test CA, `proxy_cache` to the origin over verified TLS (2 workers: 2 cores here, and
//!   VeloCache's runtime has 2 worker threads); the client's `/etc/hosts` names the gateway.
//!
//! Measured from `client`: new TLS connections per second (`openssl s_time -new`, each
//! connection a full handshake and a GET of 1 KiB, two clients at once), then hits with `wrk`
//! over kept-alive TLS connections (1 KiB: requests/s, 64 MiB: MB/s). Each side is warmed and
//! checked to answer from its cache (`X-Cache-Status`) before it is measured.
use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result, bail};
use velocache_tests::{Background, Daemon, Lab, Ns, addr, servers};

use super::{
    http::{Load, write_file},
    print_table, wrk,
};

const HOST: &str = "cdn.lab";

const LOADS: &[Load] = &[
    Load {
        name: "1 KiB hits",
        path: "/1k.bin",
        connections: 32,
    },
    Load {
        name: "64 MiB hits",
        path: "/64m.bin",
        connections: 4,
    },
];

/// One side's figures.
struct Measured {
    cache: &'static str,
    handshakes_per_sec: f64,
    hits: Vec<wrk::WrkResult>,
    rss_kib: Option<u64>,
}

/// Run the benchmark.
pub fn run(seconds: u64) -> Result<()> {
    velocache_tests::require_tools(&["wrk", "nginx", "openssl", "curl"]);
    let www = tempfile::tempdir()?;
    write_file(&www.path().join("1k.bin"), 1024)?;
    write_file(&www.path().join("64m.bin"), 64 << 20)?;
    let work = tempfile::tempdir()?;
    let pki = servers::TestPki::new(work.path(), "bench CA");
    let (cert, key) = pki.server("cdn", &[HOST]);
    let lab = Lab::new();
    let _origin = origin(&lab.origin, www.path(), work.path(), &cert, &key)?;

    let ours = velocache(&lab, &pki, seconds)?;
    let theirs = nginx(&lab, &pki, &cert, &key, work.path(), seconds)?;

    println!(
        "\nbench https: `client` → intercepted TLS for {HOST}, {seconds} s per run (origin: nginx over TLS in `origin`)"
    );
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2}", a / b)
        } else {
            "-".into()
        }
    };
    let rss = |m: &Measured| {
        m.rss_kib
            .map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
    };
    let mut rows = Vec::new();
    for m in [&ours, &theirs] {
        rows.push(vec![
            "new TLS connections (full handshake + 1 KiB GET)".into(),
            m.cache.into(),
            format!("{:.0} conn/s", m.handshakes_per_sec),
            rss(m),
            ratio(ours.handshakes_per_sec, m.handshakes_per_sec),
        ]);
    }
    for (i, load) in LOADS.iter().enumerate() {
        for m in [&ours, &theirs] {
            let r = m.hits[i];
            let figure = if load.path == "/1k.bin" {
                format!("{:.0} req/s (p99 {:.2} ms)", r.requests_per_sec, r.p99_ms)
            } else {
                format!("{:.1} MB/s", r.mb_per_sec)
            };
            let ours_r = ours.hits[i];
            rows.push(vec![
                format!("{} over kept-alive TLS", load.name),
                m.cache.into(),
                figure,
                rss(m),
                if load.path == "/1k.bin" {
                    ratio(ours_r.requests_per_sec, r.requests_per_sec)
                } else {
                    ratio(ours_r.mb_per_sec, r.mb_per_sec)
                },
            ]);
            if r.errors > 0 {
                println!(
                    "warning: {} had {} errors on {}",
                    m.cache, r.errors, load.name
                );
            }
        }
    }
    print_table(
        &["load", "cache", "figure", "peak RSS", "velocache / this"],
        &rows,
    );
    Ok(())
}

fn origin(ns: &Ns, root: &Path, work: &Path, cert: &Path, key: &Path) -> Result<Background> {
    let server = format!(
        "  server {{\n    listen 443 ssl http2 reuseport;\n    ssl_certificate {cert};\n    ssl_certificate_key {key};\n    root {root};\n    add_header Cache-Control \"max-age=3600\";\n  }}\n",
        cert = cert.display(),
        key = key.display(),
        root = root.display(),
    );
    Ok(servers::run_nginx(ns, work, "bench-origin", &server, 443))
}

/// GET `path` twice through whatever `cdn.lab` resolves to for the client, trusting `ca`;
/// the second answer must come from the cache.
fn warm(lab: &Lab, ca: &Path) -> Result<()> {
    let ca = ca.display().to_string();
    for load in LOADS {
        let url = format!("https://{HOST}{}", load.path);
        let mut last = String::new();
        for _ in 0..2 {
            let out = lab.client.run(&[
                "curl",
                "-sS",
                "--fail",
                "--cacert",
                &ca,
                "-o",
                "/dev/null",
                "-D",
                "-",
                "--max-time",
                "120",
                &url,
            ]);
            if !out.status.success() {
                bail!(
                    "warming {url} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            last = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        }
        if !last.contains("x-cache-status: hit") {
            bail!("{url} is not answered from the cache after warming:\n{last}");
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    Ok(())
}

/// Full handshakes per second: two `openssl s_time -new` clients at once, each connecting,
/// fetching 1 KiB and closing for `seconds`.
fn handshakes(lab: &Lab, seconds: u64) -> Result<f64> {
    let secs = seconds.to_string();
    let target = format!("{HOST}:443");
    let args = [
        "openssl", "s_time", "-connect", &target, "-new", "-time", &secs, "-www", "/1k.bin",
    ];
    let reports: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..2).map(|_| s.spawn(|| lab.client.run(&args))).collect();
        runs.into_iter()
            .map(|r| {
                r.join()
                    .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
                    .unwrap_or_default()
            })
            .collect()
    });
    let mut total = 0.0;
    for text in reports {
        total += parse_s_time(&text)
            .with_context(|| format!("cannot read openssl s_time's report:\n{text}"))?;
    }
    Ok(total)
}

/// `N connections in T real seconds, …` → N / T.
fn parse_s_time(text: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (n, rest) = l.trim().split_once(" connections in ")?;
        if !rest.contains(" real seconds") {
            return None;
        }
        let t: f64 = rest.split_whitespace().next()?.parse().ok()?;
        let n: f64 = n.parse().ok()?;
        (t > 0.0).then(|| n / t)
    })
}

fn measure(lab: &Lab, seconds: u64) -> Result<(f64, Vec<wrk::WrkResult>)> {
    let hs = handshakes(lab, seconds)?;
    let hits = LOADS
        .iter()
        .map(|l| {
            wrk::run(
                &lab.client,
                &format!("https://{HOST}{}", l.path),
                l.connections,
                seconds,
                &[],
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((hs, hits))
}

fn velocache(lab: &Lab, pki: &servers::TestPki, seconds: u64) -> Result<Measured> {
    lab.client.set_hosts(&[(HOST, addr::ORIGIN)]);
    let dir = tempfile::tempdir()?;
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        format!("[[rule]]\nname = \"cdn\"\nmatch_host = \"{HOST}\"\naction = \"cache\"\n"),
    )?;
    let extra = format!(
        "[daemon]\nstats_interval_secs = 0\n[http]\nfsync = false\n[rules]\nfile = \"{}\"\n[tls]\nextra_roots = [\"{}\"]\nsteer_prefixes = [\"{}/32\"]\n",
        rules.display(),
        pki.ca_cert().display(),
        addr::ORIGIN
    );
    let daemon = Daemon::start_env(lab, &extra, &[("RUST_LOG", "warn,velocache::app=info")]);
    warm(lab, &daemon.dir().join("state/ca/ca.crt"))?;
    let (handshakes_per_sec, hits) = measure(lab, seconds)?;
    let rss_kib = servers::peak_rss_kib(daemon.pid());
    Ok(Measured {
        cache: "velocache",
        handshakes_per_sec,
        hits,
        rss_kib,
    })
}

fn nginx(
    lab: &Lab,
    pki: &servers::TestPki,
    cert: &Path,
    key: &Path,
    work: &Path,
    seconds: u64,
) -> Result<Measured> {
    lab.client.set_hosts(&[(HOST, addr::GW_LAN)]);
    let w = work.join("nginx-cache");
    std::fs::create_dir_all(&w)?;
    let conf = w.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 2;\npid {w}/nginx.pid;\nerror_log {w}/error.log warn;\ndaemon off;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 1000000;\n  client_body_temp_path {w}/body;\n  proxy_temp_path {w}/proxy;\n  fastcgi_temp_path {w}/fastcgi;\n  uwsgi_temp_path {w}/uwsgi;\n  scgi_temp_path {w}/scgi;\n  proxy_cache_path {w}/cache levels=1:2 keys_zone=bench:16m max_size=2g inactive=1h use_temp_path=off;\n  upstream origin {{ server {origin}:443; keepalive 32; }}\n  server {{\n    listen {gw}:443 ssl http2 reuseport;\n    ssl_certificate {cert};\n    ssl_certificate_key {key};\n    location / {{\n      proxy_pass https://origin;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header Host {host};\n      proxy_ssl_server_name on;\n      proxy_ssl_name {host};\n      proxy_ssl_verify on;\n      proxy_ssl_trusted_certificate {ca};\n      proxy_ssl_session_reuse on;\n      proxy_cache bench;\n      proxy_cache_lock on;\n      proxy_cache_valid 200 1h;\n      add_header X-Cache-Status $upstream_cache_status;\n    }}\n  }}\n}}\n",
            w = w.display(),
            origin = addr::ORIGIN,
            gw = addr::GW_LAN,
            cert = cert.display(),
            key = key.display(),
            host = HOST,
            ca = pki.ca_cert().display(),
        ),
    )?;
    let server = lab.gw.spawn(&["nginx", "-c", &conf.display().to_string()]);
    servers::wait_tcp(&lab.gw, addr::GW_LAN, 443);
    warm(lab, &pki.ca_cert())?;
    let (handshakes_per_sec, hits) = measure(lab, seconds)?;
    let rss_kib = super::http::tree_rss_kib(server.pid());
    drop(server);
    Ok(Measured {
        cache: "nginx TLS + proxy_cache",
        handshakes_per_sec,
        hits,
        rss_kib,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_openssl_s_time() {
        let text = "Collecting connection statistics for 5 seconds\n\
            tttttttt\n\n\
            1713 connections in 2.15s; 796.74 connections/user sec, bytes read 1753088\n\
            1713 connections in 6 real seconds, 1023 bytes read per connection\n";
        let r = super::parse_s_time(text).unwrap();
        assert!((r - 285.5).abs() < 0.1, "{r}");
        assert_eq!(super::parse_s_time("nothing"), None);
    }
}
