//! Real servers to put in a lab namespace.
use std::{path::Path, time::Duration};

use crate::{Background, Ns};

/// nginx serving `root` as static files on `[::]:port` and `0.0.0.0:port`, keep-alive and
/// sendfile on — a fast, ordinary origin. Its config, pid and temp files live in `work`.
pub fn nginx_static(ns: &Ns, root: &Path, port: u16, work: &Path) -> Background {
    let conf = work.join("nginx-origin.conf");
    let text = format!(
        "worker_processes 1;\npid {work}/nginx.pid;\nerror_log {work}/error.log warn;\ndaemon off;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 1000000;\n  client_body_temp_path {work}/body;\n  proxy_temp_path {work}/proxy;\n  fastcgi_temp_path {work}/fastcgi;\n  uwsgi_temp_path {work}/uwsgi;\n  scgi_temp_path {work}/scgi;\n  types {{ application/octet-stream bin; text/plain txt; text/html html; }}\n  server {{\n    listen {port} reuseport;\n    listen [::]:{port} reuseport;\n    root {root};\n  }}\n}}\n",
        work = work.display(),
        root = root.display(),
    );
    std::fs::write(&conf, text).unwrap_or_else(|e| panic!("writing nginx config: {e}"));
    let server = ns.spawn(&["nginx", "-c", &conf.display().to_string()]);
    wait_tcp(ns, "127.0.0.1", port);
    server
}

/// Wait until something accepts TCP connections on `host:port` inside `ns`.
pub fn wait_tcp(ns: &Ns, host: &str, port: u16) {
    for _ in 0..400 {
        let out = ns.run(&["bash", "-c", &format!("exec 3<>/dev/tcp/{host}/{port}")]);
        if out.status.success() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listens on {host}:{port} in {}", ns.name());
}

/// Peak resident memory (VmHWM) of `pid` in KiB, if the process exists.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
