//! Small helpers shared by the integration tests.
use std::time::Duration;

use serde_json::Value;
use velocache_tests::{Background, Ns, servers::wait_tcp};

/// Start Python's HTTP server in `ns`, serving `dir` on `[::]:port` (dual stack), and wait
/// until it accepts connections.
pub fn http_server(ns: &Ns, dir: &std::path::Path, port: u16) -> Background {
    let server = ns.spawn(&[
        "python3",
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "::",
        "--directory",
        &dir.display().to_string(),
    ]);
    wait_tcp(ns, "127.0.0.1", port);
    server
}

/// A dnsmasq upstream in `ns` answering `*.test.lab` with 10.9.9.9, bound to `addr`.
pub fn dns_upstream(ns: &Ns, addr: &str) -> Background {
    let server = ns.spawn(&[
        "dnsmasq",
        "--no-daemon",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--port=53",
        &format!("--listen-address={addr}"),
        "--address=/test.lab/10.9.9.9",
        "--address=/test.lab/fd99::9",
        "--log-queries",
        "--pid-file=",
    ]);
    for _ in 0..200 {
        let out = ns.run(&[
            "dig",
            "+short",
            "+time=1",
            "+tries=1",
            &format!("@{addr}"),
            "ready.test.lab",
        ]);
        if String::from_utf8_lossy(&out.stdout).contains("10.9.9.9") {
            return server;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("dnsmasq did not come up: {}", server.stderr());
}

/// Log lines whose `message` is `flow` and whose fields match every `(key, value)`.
pub fn flows<'a>(logs: &'a [Value], fields: &[(&str, &str)]) -> Vec<&'a Value> {
    logs.iter()
        .filter(|l| l["message"] == "flow")
        .filter(|l| fields.iter().all(|(k, v)| l[*k] == *v))
        .collect()
}

/// Write `len` pseudo-random bytes to `path` and return their SHA-256 (hex) via `sha256sum`.
pub fn random_file(path: &std::path::Path, len: usize) -> String {
    let mut data = Vec::with_capacity(len);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    std::fs::write(path, &data).unwrap();
    sha256(path)
}

/// SHA-256 of a file, hex.
pub fn sha256(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}
