//! VeloCache: an eBPF-assisted transparent gateway for Linux routers.
//!
//! Clients behind the gateway change nothing. A kernel classifier on each LAN interface picks
//! out DNS, HTTP(S) and SIP flows and assigns them to this daemon's transparent sockets; the
//! daemon handles them and forwards what it does not answer itself to where the client meant it
//! to go. If the daemon is gone, the classifier finds no socket and traffic flows untouched.
//!
//! # Layout (in the order a packet meets it)
//! - [`datapath`]: kernel programs, their maps and counters, policy routing; the one owner of
//!   XDP on the interfaces (a dispatcher chaining the programs services claim slots for).
//! - [`net`]: transparent listeners, original destinations, the handler seam.
//! - [`passthrough`]: splice and relay to the original destination.
//! - [`sip`]: SIP observation (messages, calls, REGISTERs) and media learning.
//! - [`rtp`]: the RTP fast path's userspace side: kernel flow maps, anchors, media reports.
//! - [`rules`]: the operator's `rules.toml`, facts in, decision out.
//! - [`cache`]: the HTTP object store (io_uring disk store, RFC 9111 policy, collapsed forwarding).
//! - [`config`]: typed, layered configuration with `validate()`.
//! - [`http`]: the transparent HTTP/1.1 caching proxy (phases, upstream pool, access log).
//! - [`tls`]: HTTPS — SNI splice, interception with a local CA.
//! - [`dns`]: DNS — a transparent caching forwarder (wire-format answer cache, upstreams).
//! - [`telemetry`]: JSON / pretty logs.
//! - [`control`]: the admin API (Unix socket), metrics, reload, cache warm-up; [`cli`]: the
//!   commands that talk to it.
//! - [`flow`]: flows in progress, for graceful shutdown.
//! - [`app`]: wiring and the shutdown order.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod admin;
pub mod app;
pub mod cache;
pub mod cli;
pub mod config;
pub mod control;
pub mod datapath;
pub mod dns;
pub mod flow;
pub mod http;
pub mod net;
pub mod passthrough;
pub mod rtp;
pub mod rules;
pub mod service;
pub mod sip;
pub mod telemetry;
#[cfg(test)]
mod testutil;
pub mod tls;
