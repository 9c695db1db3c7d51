//! Real servers to put in a lab namespace.
use std::{path::Path, time::Duration};

use crate::{Background, Ns};

/// nginx serving `root` as static files on `[::]:port` and `0.0.0.0:port`, keep-alive and
/// sendfile on — a fast, ordinary origin. Its config, pid and temp files live in `work`.
pub fn nginx_static(ns: &Ns, root: &Path, port: u16, work: &Path) -> Background {
    let server = format!(
        "  server {{\n    listen {port} reuseport;\n    listen [::]:{port} reuseport;\n    root {root};\n  }}\n",
        root = root.display()
    );
    run_nginx(ns, work, &format!("origin-{port}"), &server, port)
}

/// Start nginx in `ns` with `server` (one or more `server { }` blocks) inside a minimal `http`
/// block whose pid, logs and temp files live in `work`; wait until `port` accepts.
pub fn run_nginx(ns: &Ns, work: &Path, tag: &str, server: &str, port: u16) -> Background {
    let conf = work.join(format!("nginx-{tag}.conf"));
    let text = format!(
        "worker_processes 1;\npid {work}/nginx-{tag}.pid;\nerror_log {work}/error-{tag}.log warn;\ndaemon off;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 1000000;\n  client_body_temp_path {work}/body-{tag};\n  proxy_temp_path {work}/proxy-{tag};\n  fastcgi_temp_path {work}/fastcgi-{tag};\n  uwsgi_temp_path {work}/uwsgi-{tag};\n  scgi_temp_path {work}/scgi-{tag};\n  types {{ application/octet-stream bin; text/plain txt; text/html html; }}\n{server}}}\n",
        work = work.display(),
    );
    std::fs::write(&conf, text).unwrap_or_else(|e| panic!("writing nginx config: {e}"));
    let nginx = ns.spawn(&["nginx", "-c", &conf.display().to_string()]);
    wait_tcp(ns, "127.0.0.1", port);
    nginx
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

/// A test PKI made with `openssl`: a CA and server certificates it signs, in `dir`.
pub struct TestPki {
    dir: std::path::PathBuf,
}

impl TestPki {
    /// Create a CA named `name` in `dir`.
    pub fn new(dir: &Path, name: &str) -> TestPki {
        let pki = TestPki {
            dir: dir.to_path_buf(),
        };
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "30",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        pki
    }

    fn openssl(&self, args: &[&str]) {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("openssl: {e}"));
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The CA certificate file.
    pub fn ca_cert(&self) -> std::path::PathBuf {
        self.dir.join("ca.crt")
    }

    /// Issue a server certificate for `names` (DNS names or IPs); returns (cert, key) paths.
    pub fn server(&self, file: &str, names: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
        let san: Vec<String> = names
            .iter()
            .map(|n| {
                if n.parse::<std::net::IpAddr>().is_ok() {
                    format!("IP:{n}")
                } else {
                    format!("DNS:{n}")
                }
            })
            .collect();
        let ext = self.dir.join(format!("{file}.ext"));
        std::fs::write(
            &ext,
            format!(
                "subjectAltName={}\nextendedKeyUsage=serverAuth\n",
                san.join(",")
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (key, csr, crt) = (
            format!("{file}.key"),
            format!("{file}.csr"),
            format!("{file}.crt"),
        );
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={}", names[0]),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "30",
            "-extfile",
            &ext.display().to_string(),
        ]);
        (self.dir.join(crt), self.dir.join(key))
    }
}

/// nginx serving `root` over TLS (HTTP/1.1 and HTTP/2) on `port`, with `cert`/`key`.
pub fn nginx_tls(
    ns: &Ns,
    root: &Path,
    port: u16,
    cert: &Path,
    key: &Path,
    work: &Path,
) -> Background {
    let server = format!(
        "  server {{\n    listen {port} ssl http2;\n    listen [::]:{port} ssl http2;\n    ssl_certificate {cert};\n    ssl_certificate_key {key};\n    root {root};\n  }}\n",
        cert = cert.display(),
        key = key.display(),
        root = root.display(),
    );
    run_nginx(ns, work, &format!("tls-{port}"), &server, port)
}
