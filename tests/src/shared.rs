//! The shared-tier lab: two gateways, each with its own client, one origin, and a three-master
//! Redis Cluster behind both gateways.
//!
//! ```text
//!  client1 ── gw1 ───────────────────────── origin (10.77.2.2, the only one)
//!              │ rds0 10.80.1.1              │ gw2 10.79.0.2
//!              │                             │
//!  redis ns ───┤ 10.81.0.1:7000-7002         │
//!              │ rds0 10.80.2.1              │ peer0 10.79.0.1
//!  client2 ── gw2 ───────────────────────────┘   (route 10.77.2.2/32 via 10.79.0.2)
//! ```
//!
//! Gateway 1, its client and the origin are an ordinary [`Lab`] (`lab1`). Gateway 2 and its
//! client are a second one (`lab2`, whose own `origin` namespace stays unused): a veth joins
//! gw2 to lab 1's origin, and a /32 route sends gw2's traffic for the origin's address over it,
//! so client 2 asks the same `http://10.77.2.2/…` as client 1 and both gateways fetch from the
//! same origin (whose request counts are what the tests check). gw2 masquerades what it
//! forwards there, so the origin's replies find their way back to client 2 rather than to
//! client 1 (both clients have the same address in their own labs). The Redis namespace
//! ([`RedisCluster`]) has a veth to each gateway; the cluster's address is routed over them.
//! Nothing leaves these namespaces.
use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use crate::{
    Daemon, Lab,
    lab::{addr as lab_addr, ip},
    redis::{CLUSTER_IP, RedisCluster},
    velocache_bin,
};

/// Addresses of the links this lab adds to two ordinary labs.
pub mod addr {
    /// gw1's end of its link to the Redis namespace.
    pub const GW1_REDIS: &str = "10.80.1.1";
    /// The Redis namespace's end of the link to gw1.
    pub const REDIS_GW1: &str = "10.80.1.2";
    /// gw2's end of its link to the Redis namespace.
    pub const GW2_REDIS: &str = "10.80.2.1";
    /// The Redis namespace's end of the link to gw2.
    pub const REDIS_GW2: &str = "10.80.2.2";
    /// gw2's end of its link to the origin.
    pub const GW2_PEER: &str = "10.79.0.1";
    /// The origin's end of the link to gw2.
    pub const ORIGIN_PEER: &str = "10.79.0.2";
    /// The network the cluster's address lives in.
    pub const CLUSTER_NET: &str = "10.81.0.0/24";
    /// The gateways' interface towards the Redis namespace.
    pub const REDIS_IF: &str = "rds0";
    /// gw2's interface towards the origin.
    pub const PEER_IF: &str = "peer0";
}

/// Per-master `maxmemory` when a test does not say: room for a few 100 MiB objects.
pub const DEFAULT_MAXMEMORY_MB: u64 = 512;

/// Two labs and a Redis Cluster, wired together. Dropping it deletes everything.
pub struct SharedLab {
    /// Gateway 1, client 1 and the origin.
    pub lab1: Lab,
    /// Gateway 2 and client 2 (its `origin` namespace is unused).
    pub lab2: Lab,
    /// The shared tier's cluster.
    pub redis: RedisCluster,
}

impl SharedLab {
    /// Build the lab with [`DEFAULT_MAXMEMORY_MB`] per master.
    pub fn new() -> SharedLab {
        Self::with_maxmemory(DEFAULT_MAXMEMORY_MB)
    }

    /// Build the lab with `maxmemory_mb` per master; panics if the machine cannot.
    pub fn with_maxmemory(maxmemory_mb: u64) -> SharedLab {
        crate::require_tools(&["ip", "nft", "redis-server", "redis-cli"]);
        let shared = SharedLab {
            lab1: Lab::new(),
            lab2: Lab::new(),
            redis: RedisCluster::new(maxmemory_mb),
        };
        if let Err(e) = shared.wire() {
            panic!("wiring the shared-tier lab failed: {e}");
        }
        shared
    }

    fn wire(&self) -> Result<(), String> {
        let (g1, g2) = (self.lab1.gw.name(), self.lab2.gw.name());
        let (o, r) = (self.lab1.origin.name(), self.redis.ns().name());
        // Each gateway to the Redis namespace.
        for (gw, peer_name, gw_addr, redis_addr) in [
            (g1, "gw1", addr::GW1_REDIS, addr::REDIS_GW1),
            (g2, "gw2", addr::GW2_REDIS, addr::REDIS_GW2),
        ] {
            ip(&[
                "-n",
                gw,
                "link",
                "add",
                addr::REDIS_IF,
                "type",
                "veth",
                "peer",
                "name",
                peer_name,
                "netns",
                r,
            ])?;
            ip(&[
                "-n",
                gw,
                "addr",
                "add",
                &format!("{gw_addr}/30"),
                "dev",
                addr::REDIS_IF,
            ])?;
            ip(&[
                "-n",
                r,
                "addr",
                "add",
                &format!("{redis_addr}/30"),
                "dev",
                peer_name,
            ])?;
            ip(&["-n", gw, "link", "set", addr::REDIS_IF, "up"])?;
            ip(&["-n", r, "link", "set", peer_name, "up"])?;
            ip(&[
                "-n",
                gw,
                "route",
                "add",
                addr::CLUSTER_NET,
                "via",
                redis_addr,
            ])?;
        }
        // gw2 to the one origin, and the origin's address routed there.
        ip(&[
            "-n",
            g2,
            "link",
            "add",
            addr::PEER_IF,
            "type",
            "veth",
            "peer",
            "name",
            "gw2",
            "netns",
            o,
        ])?;
        ip(&[
            "-n",
            g2,
            "addr",
            "add",
            &format!("{}/30", addr::GW2_PEER),
            "dev",
            addr::PEER_IF,
        ])?;
        ip(&[
            "-n",
            o,
            "addr",
            "add",
            &format!("{}/30", addr::ORIGIN_PEER),
            "dev",
            "gw2",
        ])?;
        ip(&["-n", g2, "link", "set", addr::PEER_IF, "up"])?;
        ip(&["-n", o, "link", "set", "gw2", "up"])?;
        for dst in [lab_addr::ORIGIN, lab_addr::ORIGIN2] {
            ip(&[
                "-n",
                g2,
                "route",
                "replace",
                &format!("{dst}/32"),
                "via",
                addr::ORIGIN_PEER,
            ])?;
        }
        // Client 2's forwarded packets leave with gw2's address: the origin answers client 1's
        // address (the same 10.77.1.2) through gw1 otherwise.
        let rules = format!(
            "table ip vcshared {{\n  chain post {{\n    type nat hook postrouting priority srcnat;\n    oifname \"{}\" masquerade\n  }}\n}}\n",
            addr::PEER_IF
        );
        let out = self
            .lab2
            .gw
            .command("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write as _;
                if let Some(mut stdin) = child.stdin.take() {
                    stdin.write_all(rules.as_bytes())?;
                }
                child.wait_with_output()
            })
            .map_err(|e| format!("cannot run nft: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "nft (masquerade on gw2): {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// The daemon's `[shared]` table for this cluster, with `timeout_ms` (append other tables
    /// after it in the `extra` given to [`crate::Daemon::start`]).
    pub fn shared_toml(&self, timeout_ms: u64) -> String {
        format!(
            "[shared]\nredis = {}\ntimeout_ms = {timeout_ms}\n",
            self.redis.seeds_toml()
        )
    }

    /// Check the wiring as the gateways and clients see it, before any daemon runs: each
    /// gateway reaches every Redis node (`PING` → `PONG`, `CLUSTER INFO` says ok), and each
    /// client reaches the origin's `port` through its own gateway (plain forwarding). Panics
    /// with what failed.
    pub fn check(&self, origin_port: u16) {
        for gw in [&self.lab1.gw, &self.lab2.gw] {
            for port in crate::redis::PORTS {
                let port = port.to_string();
                let pong = gw.run_ok(&["redis-cli", "-h", CLUSTER_IP, "-p", &port, "ping"]);
                assert_eq!(
                    pong.trim(),
                    "PONG",
                    "{} cannot reach {CLUSTER_IP}:{port}",
                    gw.name()
                );
                let info = gw.run_ok(&[
                    "redis-cli",
                    "-h",
                    CLUSTER_IP,
                    "-p",
                    &port,
                    "cluster",
                    "info",
                ]);
                assert!(
                    info.contains("cluster_state:ok"),
                    "{}: {CLUSTER_IP}:{port} says {info}",
                    gw.name()
                );
            }
        }
        for client in [&self.lab1.client, &self.lab2.client] {
            let out = client.run(&[
                "curl",
                "-sS",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("http://{}:{origin_port}/", lab_addr::ORIGIN),
            ]);
            let code = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success() && code != "000",
                "{} cannot reach the origin: {code} {}",
                client.name(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// `velocache metrics` of `daemon` (running in `lab.gw`): the `/metrics` text.
pub fn metrics(lab: &Lab, daemon: &Daemon) -> String {
    let config = daemon.dir().join("velocache.toml");
    let out = lab
        .gw
        .command(&velocache_bin().display().to_string())
        .args(["metrics", "--config", &config.display().to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run velocache metrics: {e}"));
    assert!(
        out.status.success(),
        "velocache metrics: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The sum of the samples named `name` (`velocache_shared_hits_total`) in metrics `text` whose
/// labels contain `labels` (`direction="read"`, or empty for all); `None` if there is none.
pub fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if series.split('{').next() == Some(name) && series.contains(labels) {
            *sum.get_or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    sum
}

/// Wait (up to a minute) until `name` in `daemon`'s metrics reaches `at_least`; panic with the
/// daemon's log if it does not. For "the tier holds it now": uploads run behind the client, and
/// `velocache_shared_uploads_total` counts slices once written with their digest.
pub fn wait_metric(lab: &Lab, daemon: &Daemon, name: &str, at_least: f64) {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let text = metrics(lab, daemon);
        let value = sample(&text, name, "");
        if value.is_some_and(|v| v >= at_least) {
            return;
        }
        if Instant::now() >= end {
            panic!(
                "{name} is {value:?} after a minute, wanted at least {at_least}\n{}",
                daemon.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Default for SharedLab {
    fn default() -> Self {
        SharedLab::new()
    }
}
