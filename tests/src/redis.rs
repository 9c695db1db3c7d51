//! A three-master Redis Cluster in a namespace of its own: the shared cache tier's backend in
//! the lab.
//!
//! Three Debian `redis-server` processes listen on one address, [`CLUSTER_IP`] (on the
//! namespace's loopback), ports [`PORTS`], each with its own directory and config file in a
//! tempdir: cluster mode, no persistence (`appendonly no`, `save ""`), `maxmemory` with
//! `allkeys-lru` (the tier's eviction is the cluster's), and `cluster-announce-ip` so the
//! gateways are redirected to the address they can reach. `redis-cli --cluster create` joins
//! them (no replicas) and [`RedisCluster::new`] returns once every node reports
//! `cluster_state:ok`. Nodes can be killed and restarted (a restarted node reads its
//! `nodes.conf` and rejoins, empty). [`crate::shared`] wires the namespace to the gateways.
//!
//! Data enters through the gateways under test (and [`RedisCluster::corrupt`]); tests read it
//! back with `redis-cli` run inside the namespace. Dropping the cluster kills the servers and
//! deletes the namespace.
use std::{
    path::PathBuf,
    process::Output,
    time::{Duration, Instant},
};

use tempfile::TempDir;

use crate::{Background, Ns, lab::LoneNs, servers::wait_tcp};

/// The address every node listens on and announces.
pub const CLUSTER_IP: &str = "10.81.0.1";
/// The nodes' ports (one master each).
pub const PORTS: [u16; 3] = [7000, 7001, 7002];
/// How long a node may be silent before the others mark it failed. Short, so a killed node
/// turns the cluster's state to `fail` within seconds (what the failure tests want to see).
const NODE_TIMEOUT_MS: u32 = 2000;
/// Bound on waiting for the cluster to form or recover (an event, not a measurement).
const READY: Duration = Duration::from_secs(60);

/// The cluster. Dropping it kills the nodes and deletes the namespace.
pub struct RedisCluster {
    // Declared before `ns`: the servers die before their namespace is deleted.
    nodes: Vec<Option<Background>>,
    dir: TempDir,
    ns: LoneNs,
}

impl RedisCluster {
    /// Start three masters with `maxmemory_mb` each in a new namespace, form the cluster and
    /// wait for `cluster_state:ok`. Panics (with the nodes' logs) if it does not form.
    pub fn new(maxmemory_mb: u64) -> RedisCluster {
        crate::require_tools(&["redis-server", "redis-cli"]);
        let ns = LoneNs::new("redis");
        ns.ns().run_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{CLUSTER_IP}/32"),
            "dev",
            "lo",
        ]);
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        for port in PORTS {
            let node = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node).unwrap_or_else(|e| panic!("{}: {e}", node.display()));
            let conf = format!(
                "port {port}\nbind {CLUSTER_IP}\nprotected-mode no\ndaemonize no\nlogfile \"\"\n\
                 dir {dir}\ncluster-enabled yes\ncluster-config-file {dir}/nodes.conf\n\
                 cluster-node-timeout {NODE_TIMEOUT_MS}\ncluster-announce-ip {CLUSTER_IP}\n\
                 appendonly no\nsave \"\"\nmaxmemory {maxmemory_mb}mb\n\
                 maxmemory-policy allkeys-lru\n",
                dir = node.display(),
            );
            std::fs::write(node.join("redis.conf"), conf)
                .unwrap_or_else(|e| panic!("writing redis.conf: {e}"));
        }
        let mut cluster = RedisCluster {
            nodes: PORTS.iter().map(|_| None).collect(),
            dir,
            ns,
        };
        for i in 0..PORTS.len() {
            cluster.start_node(i);
        }
        let mut create = vec!["redis-cli", "--cluster", "create"];
        let seeds = cluster.seeds();
        create.extend(seeds.iter().map(String::as_str));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = cluster.ns().run(&create);
        if !out.status.success() {
            panic!(
                "redis-cli --cluster create failed ({}):\n{}\n{}\nnode logs:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                cluster.logs()
            );
        }
        cluster.wait_ok();
        cluster
    }

    /// The cluster's namespace (wire veths into it, run `redis-cli` in it).
    pub fn ns(&self) -> &Ns {
        self.ns.ns()
    }

    /// `host:port` of every node: the `[shared] redis` seed list.
    pub fn seeds(&self) -> Vec<String> {
        PORTS.iter().map(|p| format!("{CLUSTER_IP}:{p}")).collect()
    }

    /// The seed list as a TOML array (`["10.81.0.1:7000", …]`).
    pub fn seeds_toml(&self) -> String {
        let quoted: Vec<String> = self.seeds().iter().map(|s| format!("\"{s}\"")).collect();
        format!("[{}]", quoted.join(", "))
    }

    fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(PORTS[i].to_string())
    }

    /// Start node `i` (again) with its config file; a restarted node reads its `nodes.conf` and
    /// rejoins the cluster with the same id and slots, and no data.
    pub fn start_node(&mut self, i: usize) {
        if self.nodes[i].is_some() {
            return;
        }
        let conf = self.node_dir(i).join("redis.conf").display().to_string();
        self.nodes[i] = Some(self.ns().spawn(&["redis-server", &conf]));
        wait_tcp(self.ns(), CLUSTER_IP, PORTS[i]);
    }

    /// Kill node `i` with SIGKILL (a crash: no shutdown, no goodbye to the others).
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut node) = self.nodes[i].take() {
            node.kill();
        }
    }

    /// Stop node `i` (SIGSTOP): its connections stay open and nothing answers on them — a
    /// node that hangs, as opposed to one that refuses.
    pub fn freeze_node(&self, i: usize) {
        if let Some(node) = &self.nodes[i] {
            node.signal(nix::sys::signal::Signal::SIGSTOP);
        }
    }

    /// Let a frozen node run again (SIGCONT).
    pub fn thaw_node(&self, i: usize) {
        if let Some(node) = &self.nodes[i] {
            node.signal(nix::sys::signal::Signal::SIGCONT);
        }
    }

    /// Kill every node: the whole cluster is gone (its address still routes, nothing listens).
    pub fn stop(&mut self) {
        for i in 0..PORTS.len() {
            self.kill_node(i);
        }
    }

    /// Start every node that is not running and wait for `cluster_state:ok`.
    pub fn start(&mut self) {
        for i in 0..PORTS.len() {
            self.start_node(i);
        }
        self.wait_ok();
    }

    /// The running nodes' process ids (for their memory figures).
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().flatten().map(Background::pid).collect()
    }

    /// Whether node `i` is running.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].is_some()
    }

    /// `redis-cli -h CLUSTER_IP -p PORT ARGS` in the namespace, whatever its exit status.
    pub fn cli(&self, port: u16, args: &[&str]) -> Output {
        let port = port.to_string();
        let mut all = vec!["redis-cli", "-h", CLUSTER_IP, "-p", &port];
        all.extend_from_slice(args);
        self.ns().run(&all)
    }

    /// Like [`RedisCluster::cli`] in cluster mode (`-c`: follows MOVED redirections), panicking
    /// unless the command succeeded and the reply is not an error; returns the reply.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let port = self.live_port();
        let port = port.to_string();
        let mut all = vec!["redis-cli", "-c", "-h", CLUSTER_IP, "-p", &port];
        all.extend_from_slice(args);
        let out = self.ns().run(&all);
        let reply = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() || reply.starts_with("ERR") || reply.contains("(error)") {
            panic!(
                "{all:?} failed ({}): {reply}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        reply
    }

    fn live_port(&self) -> u16 {
        (0..PORTS.len())
            .find(|&i| self.is_running(i))
            .map(|i| PORTS[i])
            .unwrap_or_else(|| panic!("no Redis node is running"))
    }

    /// `CLUSTER INFO` of node `i` (empty if it does not answer).
    pub fn cluster_info(&self, i: usize) -> String {
        String::from_utf8_lossy(&self.cli(PORTS[i], &["cluster", "info"]).stdout).into_owned()
    }

    /// Wait until every running node reports `cluster_state:ok` with all slots assigned and
    /// all three nodes known; panic with the nodes' logs after a minute.
    pub fn wait_ok(&self) {
        let end = Instant::now() + READY;
        loop {
            let infos: Vec<String> = (0..PORTS.len())
                .filter(|&i| self.is_running(i))
                .map(|i| self.cluster_info(i))
                .collect();
            let ok = |info: &String| {
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && info.contains(&format!("cluster_known_nodes:{}", PORTS.len()))
            };
            if !infos.is_empty() && infos.iter().all(ok) {
                return;
            }
            if Instant::now() >= end {
                panic!(
                    "the Redis Cluster did not reach cluster_state:ok within {READY:?}:\n{}\nlogs:\n{}",
                    infos.join("\n---\n"),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait until the running nodes say the cluster is down (`cluster_state:fail`), as they do
    /// [`NODE_TIMEOUT_MS`] after a master died.
    pub fn wait_fail(&self) {
        let end = Instant::now() + READY;
        while Instant::now() < end {
            let down = (0..PORTS.len())
                .filter(|&i| self.is_running(i))
                .all(|i| self.cluster_info(i).contains("cluster_state:fail"));
            if down {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "the Redis Cluster never noticed a dead node:\n{}",
            self.logs()
        );
    }

    /// Every key matching `pattern` on the running masters (`--scan`, which is per node).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut all = Vec::new();
        for i in (0..PORTS.len()).filter(|&i| self.is_running(i)) {
            let out = self.cli(PORTS[i], &["--scan", "--pattern", pattern]);
            all.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_string),
            );
        }
        all.sort();
        all
    }

    /// Wait (up to a minute) until at least `n` keys match `pattern`; returns them. For
    /// "the tier holds it now": uploads run behind the client.
    pub fn wait_keys(&self, pattern: &str, n: usize) -> Vec<String> {
        let end = Instant::now() + READY;
        loop {
            let keys = self.keys(pattern);
            if keys.len() >= n {
                return keys;
            }
            if Instant::now() >= end {
                panic!(
                    "only {} keys match {pattern} after {READY:?} (wanted {n}): {keys:?}",
                    keys.len()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Overwrite the first bytes of `key` (`SETRANGE key 0 XXXX`): the stored slice no longer
    /// matches the digest its object record holds.
    pub fn corrupt(&self, key: &str) {
        let reply = self.cli_ok(&["setrange", key, "0", "XXXX"]);
        assert!(
            reply.trim().parse::<u64>().is_ok_and(|n| n >= 4),
            "SETRANGE {key}: {reply}"
        );
    }

    /// Every node's log so far.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .zip(PORTS)
            .map(|(n, p)| match n {
                Some(n) => format!("--- node {p}\n{}{}", n.stdout(), n.stderr()),
                None => format!("--- node {p}: not running\n"),
            })
            .collect()
    }
}
