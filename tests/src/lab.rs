//! Namespaces, veths and addresses.
use std::{
    process::{Command, Output, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

use crate::process::Background;

/// Lab addresses (the same in every lab; each lab is its own set of network stacks).
pub mod addr {
    /// The client's main address.
    pub const CLIENT: &str = "10.77.1.2";
    /// A second client address (e.g. for bypass tests: `curl --interface 10.77.1.3`).
    pub const CLIENT2: &str = "10.77.1.3";
    /// The gateway's LAN address.
    pub const GW_LAN: &str = "10.77.1.1";
    /// The gateway's WAN address.
    pub const GW_WAN: &str = "10.77.2.1";
    /// The origin's main address.
    pub const ORIGIN: &str = "10.77.2.2";
    /// A second origin address (a second upstream, a second server).
    pub const ORIGIN2: &str = "10.77.2.3";
    /// IPv6: client.
    pub const CLIENT6: &str = "fd77:1::2";
    /// IPv6: second client address.
    pub const CLIENT2_6: &str = "fd77:1::3";
    /// IPv6: gateway LAN.
    pub const GW_LAN6: &str = "fd77:1::1";
    /// IPv6: gateway WAN.
    pub const GW_WAN6: &str = "fd77:2::1";
    /// IPv6: origin.
    pub const ORIGIN6: &str = "fd77:2::2";
    /// IPv6: second origin address.
    pub const ORIGIN2_6: &str = "fd77:2::3";
    /// The gateway's LAN interface (the one VeloCache attaches to).
    pub const LAN_IF: &str = "lan0";
    /// The gateway's WAN interface.
    pub const WAN_IF: &str = "wan0";
}

/// Prefix of every lab namespace name: `vclab<pid>x<n>-<role>`.
const PREFIX: &str = "vclab";

/// Namespaces of labs alive in this process, for the Ctrl-C handler.
static LIVE: Mutex<Vec<String>> = Mutex::new(Vec::new());
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// One network namespace of a lab.
#[derive(Debug, Clone)]
pub struct Ns {
    name: String,
}

impl Ns {
    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Run `args` inside the namespace and return its output, whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        let (program, rest) = args
            .split_first()
            .unwrap_or_else(|| panic!("empty command"));
        self.command(program)
            .args(rest)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {args:?} in {}: {e}", self.name))
    }

    /// Run `args`, panic with its output unless it succeeds, return its stdout.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        if !out.status.success() {
            panic!(
                "{args:?} in {} failed ({}):\nstdout: {}\nstderr: {}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Give the namespace its own `/etc/hosts` (what `ip netns exec` bind-mounts from
    /// `/etc/netns/<name>/hosts`), so clients can use names (and send SNI) without DNS. The
    /// file goes away with the lab.
    pub fn set_hosts(&self, entries: &[(&str, &str)]) {
        let dir = std::path::Path::new("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for (name, ip) in entries {
            text.push_str(&format!("{ip} {name}\n"));
        }
        std::fs::write(dir.join("hosts"), text)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    }

    /// Give the namespace its own `/etc/resolv.conf` (bind-mounted by `ip netns exec` from
    /// `/etc/netns/<name>/resolv.conf`): clients resolve names through `nameserver`, as a LAN
    /// host does through the resolver its DHCP gave it. The file goes away with the lab.
    pub fn set_resolver(&self, nameserver: &str) {
        let dir = std::path::Path::new("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        std::fs::write(
            dir.join("resolv.conf"),
            format!(
                "nameserver {nameserver}
options timeout:2 attempts:2
"
            ),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    }

    /// Start `args` in the background inside the namespace; it is killed when the handle drops.
    pub fn spawn(&self, args: &[&str]) -> Background {
        let (program, rest) = args
            .split_first()
            .unwrap_or_else(|| panic!("empty command"));
        let mut cmd = self.command(program);
        cmd.args(rest);
        Background::spawn(cmd, &format!("{}:{}", self.name, program))
    }
}

/// Three namespaces, wired and addressed. Dropping it deletes them (and everything in them).
pub struct Lab {
    /// The LAN client.
    pub client: Ns,
    /// The gateway (VeloCache runs here).
    pub gw: Ns,
    /// The "internet".
    pub origin: Ns,
}

pub(crate) fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Lab {
    /// Build a lab. Panics (after removing whatever was created) if the machine cannot.
    pub fn new() -> Lab {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = format!("{PREFIX}{}x{n}", std::process::id());
        let lab = Lab {
            client: Ns {
                name: format!("{base}-client"),
            },
            gw: Ns {
                name: format!("{base}-gw"),
            },
            origin: Ns {
                name: format!("{base}-origin"),
            },
        };
        if let Ok(mut live) = LIVE.lock() {
            live.extend(lab.names());
        }
        if let Err(e) = lab.build() {
            drop(lab);
            panic!("building the lab failed: {e} (are we root, with iproute2 installed?)");
        }
        lab
    }

    fn names(&self) -> [String; 3] {
        [
            self.client.name.clone(),
            self.gw.name.clone(),
            self.origin.name.clone(),
        ]
    }

    fn build(&self) -> Result<(), String> {
        let (c, g, o) = (&self.client.name, &self.gw.name, &self.origin.name);
        for ns in [c, g, o] {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        // Created inside the namespaces, so no interface ever exists in the root namespace.
        ip(&[
            "-n",
            g,
            "link",
            "add",
            addr::LAN_IF,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            c,
        ])?;
        ip(&[
            "-n",
            g,
            "link",
            "add",
            addr::WAN_IF,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            o,
        ])?;
        let v4 = [
            (c, "eth0", addr::CLIENT, 24),
            (c, "eth0", addr::CLIENT2, 24),
            (g, addr::LAN_IF, addr::GW_LAN, 24),
            (g, addr::WAN_IF, addr::GW_WAN, 24),
            (o, "eth0", addr::ORIGIN, 24),
            (o, "eth0", addr::ORIGIN2, 24),
        ];
        for (ns, dev, a, len) in v4 {
            ip(&["-n", ns, "addr", "add", &format!("{a}/{len}"), "dev", dev])?;
        }
        let v6 = [
            (c, "eth0", addr::CLIENT6),
            (c, "eth0", addr::CLIENT2_6),
            (g, addr::LAN_IF, addr::GW_LAN6),
            (g, addr::WAN_IF, addr::GW_WAN6),
            (o, "eth0", addr::ORIGIN6),
            (o, "eth0", addr::ORIGIN2_6),
        ];
        for (ns, dev, a) in v6 {
            // nodad: the address is usable at once instead of after duplicate detection.
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{a}/64"),
                "dev",
                dev,
                "nodad",
            ])?;
        }
        for (ns, dev) in [
            (c, "eth0"),
            (g, addr::LAN_IF),
            (g, addr::WAN_IF),
            (o, "eth0"),
        ] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        ip(&["-n", c, "route", "add", "default", "via", addr::GW_LAN])?;
        ip(&[
            "-n",
            c,
            "-6",
            "route",
            "add",
            "default",
            "via",
            addr::GW_LAN6,
        ])?;
        ip(&["-n", o, "route", "add", "default", "via", addr::GW_WAN])?;
        ip(&[
            "-n",
            o,
            "-6",
            "route",
            "add",
            "default",
            "via",
            addr::GW_WAN6,
        ])?;
        let out = self.gw.run(&[
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
        ]);
        if !out.status.success() {
            return Err(format!(
                "enabling forwarding failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// Turn TX checksum offload off on every veth, so that programs that rewrite packets see
    /// complete checksums (needed by the XDP/TC rewrite tests; see DESIGN.md).
    pub fn disable_tx_offload(&self) {
        for (ns, dev) in [
            (&self.client, "eth0"),
            (&self.gw, addr::LAN_IF),
            (&self.gw, addr::WAN_IF),
            (&self.origin, "eth0"),
        ] {
            ns.run_ok(&["ethtool", "-K", dev, "tx", "off"]);
        }
    }
}

impl Default for Lab {
    fn default() -> Self {
        Lab::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for name in self.names() {
            delete_ns(&name);
        }
        if let Ok(mut live) = LIVE.lock() {
            let names = self.names();
            live.retain(|n| !names.contains(n));
        }
    }
}

/// A namespace of its own, outside any [`Lab`] (the shared tier's Redis Cluster, say), named
/// like a lab's (`vclab<pid>x<n>-<role>`) so the same cleanup finds it. Dropping it deletes it
/// and kills every process still inside.
pub struct LoneNs {
    ns: Ns,
}

impl LoneNs {
    /// Create the namespace with `lo` up. Panics if the machine cannot.
    pub fn new(role: &str) -> LoneNs {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}x{n}-{role}", std::process::id());
        if let Ok(mut live) = LIVE.lock() {
            live.push(name.clone());
        }
        let lone = LoneNs { ns: Ns { name } };
        let made = ip(&["netns", "add", &lone.ns.name])
            .and_then(|()| ip(&["-n", &lone.ns.name, "link", "set", "lo", "up"]));
        if let Err(e) = made {
            drop(lone);
            panic!("creating a namespace failed: {e} (are we root?)");
        }
        lone
    }

    /// The namespace.
    pub fn ns(&self) -> &Ns {
        &self.ns
    }
}

impl Drop for LoneNs {
    fn drop(&mut self) {
        delete_ns(&self.ns.name);
        if let Ok(mut live) = LIVE.lock() {
            live.retain(|n| *n != self.ns.name);
        }
    }
}

/// Delete a namespace after killing every process still inside it (a server a test forgot,
/// a daemon that did not stop). Deleting a namespace takes its veths with it.
fn delete_ns(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let _ = ip(&["netns", "del", name]);
    let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(name));
}

/// Delete the namespaces of every lab alive in this process (for a Ctrl-C handler).
pub fn cleanup_live() {
    let names = LIVE.lock().map(|l| l.clone()).unwrap_or_default();
    for n in names {
        delete_ns(&n);
    }
}

/// Delete lab namespaces whose creating process no longer exists. Returns how many.
pub fn cleanup_stale() -> usize {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return 0;
    };
    let mut removed = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('x').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            delete_ns(name);
            removed += 1;
        }
    }
    removed
}
