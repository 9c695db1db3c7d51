//! `bench http`: the cache under load, VeloCache against nginx (`proxy_cache`), Squid and
//! Varnish, in one run, each as the cache in `gw`, `wrk` in `client`, nginx serving files in
//! `origin`.
//!
//! - VeloCache: the daemon in `gw`, transparent — `wrk` asks the origin's address and is
//!   intercepted.
//! - nginx: a reverse proxy with `proxy_cache` on the gateway's LAN address, port 8080,
//!   `proxy_pass` to the origin (2 workers: the machine has 2 cores, VeloCache's runtime has
//!   2 worker threads).
//! - Squid: an accelerator (`http_port … accel`, origin as `cache_peer … originserver`) on
//!   the gateway's LAN address, port 3128, memory cache for small objects and a `ufs`
//!   cache_dir for large ones.
//! - Varnish: `varnishd -b origin` (the default VCL) with `malloc` storage, port 6081 — every
//!   object in RAM, which is Varnish's usual deployment.
//!
//! Every cache is warmed with one request per object first, so the measured requests are hits.
//! The origin sends `Cache-Control: max-age=3600`.
use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result, bail};
use velocache_tests::{Background, Daemon, Lab, Ns, addr, servers};

use super::{print_table, wrk};

/// One measured load: a file fetched by `connections` clients.
pub(super) struct Load {
    pub(super) name: &'static str,
    pub(super) path: &'static str,
    pub(super) connections: u32,
}

const LOADS: &[Load] = &[
    Load {
        name: "1 KiB hits",
        path: "/1k.bin",
        connections: 32,
    },
    Load {
        name: "100 MiB hits",
        path: "/100m.bin",
        connections: 4,
    },
];

/// One cache under test.
struct Measured {
    cache: &'static str,
    results: Vec<wrk::WrkResult>,
    rss_kib: Option<u64>,
}

/// Run the benchmark.
pub fn run(seconds: u64) -> Result<()> {
    velocache_tests::require_tools(&["wrk", "nginx", "squid", "varnishd", "curl"]);
    let www = tempfile::tempdir()?;
    write_file(&www.path().join("1k.bin"), 1024)?;
    write_file(&www.path().join("100m.bin"), 100 << 20)?;
    let work = tempfile::tempdir()?;
    let lab = Lab::new();
    let _origin = origin(&lab.origin, www.path(), work.path())?;

    let all = vec![
        velocache(&lab, seconds)?,
        nginx(&lab, seconds, work.path())?,
        squid(&lab, seconds, work.path())?,
        varnish(&lab, seconds, work.path())?,
    ];

    println!(
        "\nbench http: wrk from `client`, every request a cache hit, {seconds} s per run (origin: nginx in `origin`)"
    );
    let mut rows = Vec::new();
    for (i, load) in LOADS.iter().enumerate() {
        let ours = all[0].results[i];
        for m in &all {
            let r = m.results[i];
            rows.push(vec![
                load.name.to_string(),
                m.cache.to_string(),
                format!("{:.0}", r.requests_per_sec),
                format!("{:.1}", r.mb_per_sec),
                format!("{:.2}", r.p99_ms),
                m.rss_kib
                    .map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
                if m.cache == "velocache" {
                    "1.00".into()
                } else {
                    format!("{:.2}", ours.requests_per_sec / r.requests_per_sec)
                },
                r.errors.to_string(),
            ]);
        }
    }
    print_table(
        &[
            "load",
            "cache",
            "req/s",
            "MB/s",
            "p99 ms",
            "peak RSS",
            "velocache / this",
            "errors",
        ],
        &rows,
    );
    Ok(())
}

/// A file of `len` bytes of a fixed pattern.
pub(super) fn write_file(path: &Path, len: usize) -> Result<()> {
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

pub(super) fn origin(ns: &Ns, root: &Path, work: &Path) -> Result<Background> {
    let conf = work.join("origin.conf");
    let w = work.join("origin");
    std::fs::create_dir_all(&w)?;
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\npid {w}/nginx.pid;\nerror_log {w}/error.log warn;\ndaemon off;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  sendfile on;\n  keepalive_requests 1000000;\n  client_body_temp_path {w}/body;\n  proxy_temp_path {w}/proxy;\n  fastcgi_temp_path {w}/fastcgi;\n  uwsgi_temp_path {w}/uwsgi;\n  scgi_temp_path {w}/scgi;\n  server {{\n    listen 80 reuseport;\n    root {root};\n    add_header Cache-Control \"max-age=3600\";\n  }}\n}}\n",
            w = w.display(),
            root = root.display()
        ),
    )?;
    let server = ns.spawn(&["nginx", "-c", &conf.display().to_string()]);
    servers::wait_tcp(ns, "127.0.0.1", 80);
    Ok(server)
}

fn warm(lab: &Lab, base: &str) -> Result<()> {
    for load in LOADS {
        // Twice: the second must be a hit for every cache (nginx/Squid store on the first).
        for _ in 0..2 {
            let out = lab.client.run(&[
                "curl",
                "-sS",
                "--fail",
                "-o",
                "/dev/null",
                "--max-time",
                "120",
                &format!("{base}{}", load.path),
            ]);
            if !out.status.success() {
                bail!(
                    "warming {base}{} failed: {}",
                    load.path,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    Ok(())
}

fn measure(lab: &Lab, base: &str, seconds: u64) -> Result<Vec<wrk::WrkResult>> {
    LOADS
        .iter()
        .map(|l| {
            wrk::run(
                &lab.client,
                &format!("{base}{}", l.path),
                l.connections,
                seconds,
                &[],
            )
        })
        .collect()
}

fn velocache(lab: &Lab, seconds: u64) -> Result<Measured> {
    let daemon = Daemon::start_env(
        lab,
        "[daemon]\nstats_interval_secs = 0\n[http]\nfsync = false\n",
        &[("RUST_LOG", "warn,velocache::app=info")],
    );
    let base = format!("http://{}", addr::ORIGIN);
    warm(lab, &base)?;
    let results = measure(lab, &base, seconds)?;
    let rss_kib = servers::peak_rss_kib(daemon.pid());
    Ok(Measured {
        cache: "velocache",
        results,
        rss_kib,
    })
}

fn nginx(lab: &Lab, seconds: u64, work: &Path) -> Result<Measured> {
    let w = work.join("nginx-cache");
    std::fs::create_dir_all(&w)?;
    let conf = w.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 2;\npid {w}/nginx.pid;\nerror_log {w}/error.log warn;\ndaemon off;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 1000000;\n  client_body_temp_path {w}/body;\n  proxy_temp_path {w}/proxy;\n  fastcgi_temp_path {w}/fastcgi;\n  uwsgi_temp_path {w}/uwsgi;\n  scgi_temp_path {w}/scgi;\n  proxy_cache_path {w}/cache levels=1:2 keys_zone=bench:16m max_size=2g inactive=1h use_temp_path=off;\n  upstream origin {{ server {origin}:80; keepalive 32; }}\n  server {{\n    listen {gw}:8080 reuseport;\n    location / {{\n      proxy_pass http://origin;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_cache bench;\n      proxy_cache_lock on;\n      proxy_cache_valid 200 1h;\n      add_header X-Cache-Status $upstream_cache_status;\n    }}\n  }}\n}}\n",
            w = w.display(),
            origin = addr::ORIGIN,
            gw = addr::GW_LAN,
        ),
    )?;
    let server = lab.gw.spawn(&["nginx", "-c", &conf.display().to_string()]);
    servers::wait_tcp(&lab.gw, addr::GW_LAN, 8080);
    let base = format!("http://{}:8080", addr::GW_LAN);
    warm(lab, &base)?;
    let results = measure(lab, &base, seconds)?;
    let rss_kib = tree_rss_kib(server.pid());
    drop(server);
    Ok(Measured {
        cache: "nginx proxy_cache",
        results,
        rss_kib,
    })
}

fn squid(lab: &Lab, seconds: u64, work: &Path) -> Result<Measured> {
    let w = work.join("squid");
    std::fs::create_dir_all(w.join("cache"))?;
    let conf = w.join("squid.conf");
    std::fs::write(
        &conf,
        format!(
            "http_port {gw}:3128 accel defaultsite={origin} no-vhost\ncache_peer {origin} parent 80 0 no-query originserver name=origin\nacl all_dst dst all\nhttp_access allow all\ncache_peer_access origin allow all\ncache_mem 256 MB\nmaximum_object_size_in_memory 1 MB\nmaximum_object_size 200 MB\ncache_dir ufs {w}/cache 2048 16 256\ncache_effective_user proxy\npid_filename {w}/squid.pid\naccess_log none\ncache_log {w}/cache.log\ncache_store_log none\ncoredump_dir {w}\nworkers 1\nshutdown_lifetime 1 seconds\n",
            gw = addr::GW_LAN,
            origin = addr::ORIGIN,
            w = w.display(),
        ),
    )?;
    let chown = std::process::Command::new("chown")
        .args(["-R", "proxy:proxy", &w.display().to_string()])
        .status()?;
    if !chown.success() {
        bail!("chown proxy {}", w.display());
    }
    let confs = conf.display().to_string();
    let init = lab.gw.run(&["squid", "-f", &confs, "-z", "-N"]);
    if !init.status.success() {
        bail!("squid -z: {}", String::from_utf8_lossy(&init.stderr));
    }
    let server = lab.gw.spawn(&["squid", "-f", &confs, "-N"]);
    servers::wait_tcp(&lab.gw, addr::GW_LAN, 3128);
    let base = format!("http://{}:3128", addr::GW_LAN);
    warm(lab, &base)?;
    let results = measure(lab, &base, seconds)?;
    let rss_kib = tree_rss_kib(server.pid());
    drop(server);
    Ok(Measured {
        cache: "squid",
        results,
        rss_kib,
    })
}

/// Varnish as Debian ships it, with its default VCL in front of the origin (`-b`) and malloc
/// storage large enough for every object of the run.
fn varnish(lab: &Lab, seconds: u64, work: &Path) -> Result<Measured> {
    let w = work.join("varnish");
    std::fs::create_dir_all(&w)?;
    let listen = format!("{}:6081", addr::GW_LAN);
    let backend = format!("{}:80", addr::ORIGIN);
    let server = lab.gw.spawn(&[
        "varnishd",
        "-F",
        // No privilege separation: the lab runs it as root in a namespace of its own.
        "-j",
        "none",
        "-n",
        &w.display().to_string(),
        "-a",
        &listen,
        "-b",
        &backend,
        "-s",
        "malloc,1G",
        // A 100 MiB body is fetched once, stored whole, then streamed from RAM.
        "-p",
        "default_ttl=3600",
    ]);
    servers::wait_tcp(&lab.gw, addr::GW_LAN, 6081);
    let base = format!("http://{listen}");
    warm(lab, &base)?;
    let results = measure(lab, &base, seconds)?;
    let rss_kib = tree_rss_kib(server.pid());
    drop(server);
    Ok(Measured {
        cache: "varnish (malloc)",
        results,
        rss_kib,
    })
}

/// Peak RSS of a process and all its descendants (nginx workers, Squid kids).
pub(super) fn tree_rss_kib(pid: u32) -> Option<u64> {
    let mut total = servers::peak_rss_kib(pid)?;
    let mut stack = children(pid);
    while let Some(c) = stack.pop() {
        total += servers::peak_rss_kib(c).unwrap_or(0);
        stack.extend(children(c));
    }
    Some(total)
}

fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}
