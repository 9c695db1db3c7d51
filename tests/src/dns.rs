//! DNS servers for labs and benchmarks: an upstream serving test zones (unbound), the caching
//! forwarders VeloCache is compared with (unbound, dnsmasq), and a reader for `dig`'s output.
//!
//! The zones: `test.lab` (static: SOA with MINIMUM 5, `www` A/AAAA TTL 300, `short` A TTL 2,
//! `big` 40 TXT records — larger than any UDP answer, `*` nothing else: NXDOMAIN with SOA) and
//! `bench.lab` (redirect: every name answers A 10.8.8.8 and AAAA fd88::8).
use std::{path::Path, time::Duration};

use crate::{Background, Ns};

/// unbound in `ns`, authoritative-style for the test zones, on port 53 of every address in
/// `listen`. `extra` is appended to its `server:` clause (e.g. TLS service lines). Its config
/// lives in `dir`. Returns once it answers.
pub fn unbound_zone(ns: &Ns, dir: &Path, listen: &[&str], extra: &str) -> Background {
    let mut conf = base_server(dir, listen, 53);
    conf.push_str(concat!(
        "  local-zone: \"test.lab.\" static\n",
        "  local-data: \"test.lab. 3600 IN SOA ns.test.lab. admin.test.lab. 1 3600 600 86400 5\"\n",
        "  local-data: \"www.test.lab. 300 IN A 10.9.9.9\"\n",
        "  local-data: \"www.test.lab. 300 IN AAAA fd99::9\"\n",
        "  local-data: \"short.test.lab. 2 IN A 10.9.9.8\"\n",
        "  local-zone: \"bench.lab.\" redirect\n",
        "  local-data: \"bench.lab. 3600 IN SOA ns.bench.lab. admin.bench.lab. 1 3600 600 86400 60\"\n",
        "  local-data: \"bench.lab. 3600 IN A 10.8.8.8\"\n",
        "  local-data: \"bench.lab. 3600 IN AAAA fd88::8\"\n",
    ));
    for i in 0..40 {
        conf.push_str(&format!(
            "  local-data: \"big.test.lab. 300 IN TXT \\\"{}{i:02}\\\"\"\n",
            "x".repeat(96)
        ));
    }
    conf.push_str(extra);
    conf.push_str("remote-control:\n  control-enable: no\n");
    start_unbound(ns, dir, "unbound-zone.conf", &conf, listen[0])
}

/// A DNSSEC-signed zone `sec.lab` (`www` A 10.7.7.7, SOA MINIMUM 5, NSEC) made with
/// `ldns-keygen`/`ldns-signzone` in `dir`; returns the `auth-zone:` clause that makes
/// [`unbound_zone`] serve it (pass it last in `extra`).
pub fn signed_zone(dir: &Path) -> String {
    let zone = dir.join("sec.lab.zone");
    std::fs::write(
        &zone,
        "$ORIGIN sec.lab.\n$TTL 300\n@ IN SOA ns.sec.lab. admin.sec.lab. 1 3600 600 86400 5\n@ IN NS ns.sec.lab.\nns IN A 10.77.2.2\nwww IN A 10.7.7.7\n",
    )
    .unwrap_or_else(|e| panic!("writing the zone: {e}"));
    let run = |args: &[&str]| -> String {
        let out = std::process::Command::new(args[0])
            .args(&args[1..])
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", args[0]));
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let ksk = run(&["ldns-keygen", "-a", "ECDSAP256SHA256", "-k", "sec.lab"]);
    let zsk = run(&["ldns-keygen", "-a", "ECDSAP256SHA256", "sec.lab"]);
    run(&["ldns-signzone", "sec.lab.zone", &ksk, &zsk]);
    format!(
        "auth-zone:\n  name: \"sec.lab.\"\n  zonefile: \"{}\"\n  for-downstream: yes\n  for-upstream: no\n",
        dir.join("sec.lab.zone.signed").display()
    )
}

/// unbound in `ns` as a caching forwarder on `listen:53` to `upstream` (port 53), with a
/// cache large enough for a benchmark.
pub fn unbound_forwarder(ns: &Ns, dir: &Path, listen: &str, upstream: &str) -> Background {
    let mut conf = base_server(dir, &[listen], 53);
    conf.push_str(concat!(
        "  msg-cache-size: 64m\n",
        "  rrset-cache-size: 128m\n",
        "  num-threads: 1\n",
        "  prefetch: yes\n",
        "  so-reuseport: no\n",
        "  do-not-query-localhost: no\n",
        "  domain-insecure: \"test.lab.\"\n",
        "  domain-insecure: \"bench.lab.\"\n",
        "forward-zone:\n",
        "  name: \".\"\n",
    ));
    conf.push_str(&format!("  forward-addr: {upstream}@53\n"));
    conf.push_str("remote-control:\n  control-enable: no\n");
    start_unbound(ns, dir, "unbound-forwarder.conf", &conf, listen)
}

/// dnsmasq in `ns` as a caching forwarder on `listen:53` to `upstream`, with `cache_size`
/// entries (its maximum is 10000).
pub fn dnsmasq_forwarder(ns: &Ns, listen: &str, upstream: &str, cache_size: u32) -> Background {
    let server = ns.spawn(&[
        "dnsmasq",
        "--no-daemon",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--port=53",
        &format!("--listen-address={listen}"),
        &format!("--server={upstream}"),
        &format!("--cache-size={cache_size}"),
        "--dns-forward-max=1000",
        "--pid-file=",
        "--user=root",
    ]);
    wait_answer(ns, listen, "www.test.lab", &server);
    server
}

fn base_server(dir: &Path, listen: &[&str], port: u16) -> String {
    let mut conf = format!(
        "server:\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  pidfile: \"\"\n  directory: \"{}\"\n  use-syslog: no\n  logfile: \"\"\n  verbosity: 1\n  module-config: \"iterator\"\n  access-control: 0.0.0.0/0 allow\n  access-control: ::/0 allow\n",
        dir.display()
    );
    for addr in listen {
        conf.push_str(&format!("  interface: {addr}@{port}\n"));
    }
    conf
}

fn start_unbound(ns: &Ns, dir: &Path, file: &str, conf: &str, first: &str) -> Background {
    let path = dir.join(file);
    std::fs::write(&path, conf).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    let server = ns.spawn(&["unbound", "-d", "-c", &path.display().to_string()]);
    wait_answer(ns, first, "www.test.lab", &server);
    server
}

fn wait_answer(ns: &Ns, server_addr: &str, name: &str, server: &Background) {
    for _ in 0..200 {
        let out = ns.run(&[
            "dig",
            "+short",
            "+time=1",
            "+tries=1",
            &format!("@{server_addr}"),
            name,
        ]);
        if out.status.success() && !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!(
        "{} did not come up on {server_addr}: {}",
        server.label(),
        server.stderr()
    );
}

/// What `dig` printed, read back.
#[derive(Debug, Clone, Default)]
pub struct DigAnswer {
    /// `NOERROR`, `NXDOMAIN`, `SERVFAIL`, …
    pub status: String,
    /// Header flags (`qr rd ra ad tc`).
    pub flags: Vec<String>,
    /// Answer section: (name, ttl, type, data).
    pub answers: Vec<(String, u32, String, String)>,
    /// Authority section, same shape.
    pub authority: Vec<(String, u32, String, String)>,
    /// `;; SERVER:` line.
    pub server: String,
    /// The whole output.
    pub text: String,
}

impl DigAnswer {
    /// Parse dig's default output.
    pub fn parse(text: &str) -> DigAnswer {
        let mut a = DigAnswer {
            text: text.to_string(),
            ..DigAnswer::default()
        };
        let mut section = "";
        for line in text.lines() {
            if let Some(rest) = line.split("status: ").nth(1) {
                a.status = rest.split(',').next().unwrap_or("").to_string();
            } else if let Some(rest) = line.strip_prefix(";; flags: ") {
                a.flags = rest
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
            } else if let Some(rest) = line.strip_prefix(";; SERVER: ") {
                a.server = rest.to_string();
            } else if line.starts_with(";; ANSWER SECTION") {
                section = "answer";
            } else if line.starts_with(";; AUTHORITY SECTION") {
                section = "authority";
            } else if line.starts_with(";;") || line.trim().is_empty() {
                if line.trim().is_empty() {
                    section = "";
                }
            } else if !section.is_empty() {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() >= 5 {
                    let rec = (
                        f[0].to_string(),
                        f[1].parse().unwrap_or(0),
                        f[3].to_string(),
                        f[4..].join(" "),
                    );
                    if section == "answer" {
                        a.answers.push(rec);
                    } else {
                        a.authority.push(rec);
                    }
                }
            }
        }
        a
    }

    /// TTL of the first answer record.
    pub fn ttl(&self) -> Option<u32> {
        self.answers.first().map(|r| r.1)
    }
}

/// Run `dig` in `ns` with `args` (one try, 3 s) and read its output.
pub fn dig(ns: &Ns, args: &[&str]) -> DigAnswer {
    let mut all = vec!["dig", "+time=3", "+tries=1"];
    all.extend_from_slice(args);
    let out = ns.run(&all);
    DigAnswer::parse(&String::from_utf8_lossy(&out.stdout))
}
