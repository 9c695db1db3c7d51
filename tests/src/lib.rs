//! The lab: three network namespaces joined by veth pairs, built and torn down by the project's
//! own code, and a handle on a `velocache` daemon running inside it.
//!
//! ```text
//!  client (eth0 10.77.1.2, .3)  ──  lan0 [gw 10.77.1.1 | 10.77.2.1] wan0  ──  origin (eth0 10.77.2.2, .3)
//!         fd77:1::2, ::3                 fd77:1::1     fd77:2::1                 fd77:2::2, ::3
//! ```
//!
//! `client` is the LAN, `gw` is the router running VeloCache (forwarding on), `origin` is "the
//! internet": HTTP origins, DNS upstreams, SIP peers. Each namespace is a separate network stack,
//! so the addresses are the same in every lab; only the namespace names are unique (they carry
//! the creating process's pid, so a later run can remove what a killed one left). Nothing is
//! routed to or from the machine's real interfaces: the namespaces contain only their veths.
//!
//! Used by the integration tests (`tests/integration`), `cargo xtask demo` and the benchmarks.
//!
//! # Layout
//! - [`lab`]: [`Lab`], [`Ns`], addresses, cleanup on drop and on Ctrl-C.
//! - [`process`]: [`Background`], a child process killed on drop, with captured output.
//! - [`daemon`]: [`Daemon`], the velocache daemon in `gw`, with its JSON log.
//! - [`servers`]: real servers (nginx, …) to put in a namespace, and process measurements.
//! - [`xdp`]: veth settings XDP redirection needs (GRO on the receiving peers, no TX offload).
//! - [`sipp`]: sipp scenarios (UAC with RTP, UAS answering or refusing) and its runs.
//! - [`rtpload`]: the RTP load generator's packets, bench SIP and rtpengine's ng protocol
//!   (the `rtp-load` binary runs them inside the lab).
//! - [`cachedir`]: a daemon's HTTP cache directory read from outside, checked against its index.
//! - [`freezer`]: holding a killed daemon in its exit (cgroup v1 freezer).
//! - [`dns`]: DNS upstreams and peer forwarders (unbound, dnsmasq), and a `dig` reader.
//! - [`tools`]: which Debian package ships each command the tests, demo and benches run;
//!   [`require_tools`].
//! - [`mutate`]: a seeded SIP mutator for the torture tests.
//! - [`plugins`]: the built WebAssembly plugins, installed into a daemon's `[plugins] dir`.
//! - [`redis`]: a three-master Redis Cluster in its own namespace (the shared tier's backend).
//! - [`shared`]: [`SharedLab`], two gateways and their clients, one origin, and the cluster.
#![deny(missing_docs)]
#![expect(
    clippy::disallowed_methods,
    reason = "the harness is synchronous: blocking sleeps are what it needs"
)]

pub mod cachedir;
pub mod daemon;
pub mod dns;
pub mod freezer;
pub mod lab;
pub mod mutate;
pub mod plugins;
pub mod process;
pub mod redis;
pub mod rtpload;
pub mod servers;
pub mod shared;
pub mod sipp;
pub mod tools;
pub mod xdp;

pub use daemon::{Daemon, set_velocache_bin, velocache_bin};
pub use lab::{Lab, LoneNs, Ns, addr, cleanup_live, cleanup_stale};
pub use process::Background;
pub use shared::SharedLab;
pub use tools::require_tools;
