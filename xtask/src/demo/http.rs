//! Demo part: the HTTP cache — a download that misses, then hits, then a Range served from the
//! cache, with the access-log lines that say so.
use anyhow::Result;
use velocache_tests::{Lab, addr, servers};

use super::{Demo, Part, Setup};

pub const PART: Part = Part {
    name: "HTTP cache: miss, hit, Range",
    setup,
    run,
};

/// The demo origin listens on 8080 (the pass-through part's origin has 80).
const PORT: u16 = 8080;

fn setup(lab: &Lab, dir: &std::path::Path) -> Result<Setup> {
    velocache_tests::require_tools(&["nginx", "curl"]);
    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    let data: Vec<u8> = (0..(32u32 << 20))
        .map(|i| (i * 31 + i / 977) as u8)
        .collect();
    std::fs::write(www.join("release.iso"), data)?;
    let conf = dir.join("origin.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\npid {d}/nginx-http.pid;\nerror_log {d}/error-http.log warn;\ndaemon off;\nevents {{ worker_connections 1024; }}\nhttp {{\n  access_log off;\n  sendfile on;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  server {{\n    listen {PORT};\n    root {www};\n    add_header Cache-Control \"max-age=3600\";\n  }}\n}}\n",
            d = dir.display(),
            www = www.display(),
        ),
    )?;
    let nginx = lab
        .origin
        .spawn(&["nginx", "-c", &conf.display().to_string()]);
    servers::wait_tcp(&lab.origin, "127.0.0.1", PORT);
    Ok((vec![nginx], format!("[http]\nports = [80, {PORT}]\n")))
}

fn run(demo: &mut Demo<'_>) -> Result<()> {
    let url = format!("http://{}:{PORT}/release.iso", addr::ORIGIN);
    let fetch = |demo: &Demo<'_>, extra: &[&str]| -> Result<String> {
        let mut args = vec![
            "curl",
            "-sS",
            "--max-time",
            "60",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "-w",
            "%{http_code} %{size_download} bytes in %{time_total} s\n",
        ];
        args.extend_from_slice(extra);
        args.push(&url);
        let out = demo.client(&args)?;
        Ok(out
            .lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                l.starts_with("x-cache-status")
                    || l.starts_with("content-range")
                    || l.contains(" bytes in ")
            })
            .map(|l| format!("    {l}\n"))
            .collect())
    };
    demo.step(&format!(
        "client: curl {url} (32 MiB, never fetched before)"
    ));
    print!("{}", fetch(demo, &[])?);
    demo.settle(500);
    demo.print_log();

    demo.step("the same download again: served from the gateway's disk cache");
    print!("{}", fetch(demo, &[])?);
    demo.settle(300);
    demo.print_log();

    demo.step("a Range request for 1 MiB in the middle: a hit too (206 from the stored slices)");
    print!("{}", fetch(demo, &["-r", "16777216-17825791"])?);
    demo.settle(300);
    demo.print_log();
    Ok(())
}
