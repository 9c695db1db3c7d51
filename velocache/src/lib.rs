//! VeloCache: an eBPF-assisted transparent gateway for Linux routers.
//!
//! Clients behind the gateway change nothing. A kernel classifier on each LAN interface picks
//! out DNS, HTTP(S) and SIP flows and assigns them to this daemon's transparent sockets; the
//! daemon handles them and forwards what it does not answer itself to where the client meant it
//! to go. If the daemon is gone, the classifier finds no socket and traffic flows untouched.
//!
//! # Layout (in the order a packet meets it)
//! - [`datapath`]: kernel programs, their maps and counters, policy routing; the one owner of
//!   XDP on the interfaces (a dispatcher chaining the programs services claim slots for); the
//!   [`datapath::Kernel`] seam the daemon's life cycle drives.
//! - [`net`]: transparent listeners and sockets, original destinations, the accept and receive
//!   loops that hand flows to handlers.
//! - [`service`]: the service seam — [`service::ServiceFactory`], [`service::Handlers`],
//!   [`service::ServiceContext`] — that every service below plugs into.
//! - [`passthrough`]: splice and relay to the original destination (the one UDP session table).
//! - [`observe`]: TLS flows no rule could act on, forwarded by the kernel: which destinations are
//!   steered (DNS answers, prefixes), the kernel's SNI policy, their `flow` lines.
//! - [`dns`]: DNS — a transparent caching forwarder (wire-format answer cache, upstreams).
//! - [`http`]: the transparent caching proxy, HTTP/1.1 and HTTP/2 (phases, upstream pool,
//!   access log); [`tls`]: HTTPS — SNI splice, interception with a local CA, through `http`.
//! - [`sip`]: SIP observation (messages, calls, REGISTERs) and media learning; [`rtp`]: the RTP
//!   fast path's userspace side (kernel flow maps, anchors, media reports).
//! - [`plugins`]: WebAssembly plugins (wasmtime, the component model, `wit/plugin.wit`): hooks
//!   the DNS forwarder, the HTTP proxy, the SIP observer and claimed TCP ports call.
//! - [`plugin_tcp`]: TCP streams on the ports plugins claim, driven event by event by the
//!   claiming plugin, spliced once it is done (or as if it were absent once it fails).
//! - [`cache`]: the HTTP object store (storage seam, io_uring disk store, RFC 9111 policy,
//!   collapsed forwarding); [`rules`]: the operator's `rules.toml`, facts in, decision out.
//! - [`flow`]: flows in progress — counted for shutdown, each ended with its `flow` line.
//! - [`live`]: the live feed (records, history, inspector exchanges, the last hour's charts)
//!   services publish into for the web dashboard.
//! - [`admin`]: what services offer the admin API, and its wire types; [`control`]: the admin
//!   API itself, metrics, reload, cache warm-up; [`cli`]: the commands that talk to it.
//! - [`config`]: typed, layered configuration, one file per section; [`telemetry`]: JSON /
//!   pretty logs and the one shape of metrics registration.
//! - [`app`]: the daemon's life — the services, start-up and shutdown order.
//!
//! The top-level modules form no import cycle (`cargo xtask test` checks it): `config`, `net`
//! and `flow` depend on nothing above them, services depend on `service`, `admin`, `cache`,
//! `rules`, `plugins`, and only `app` names every service.
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
pub mod live;
pub mod net;
pub mod observe;
pub mod origins;
pub mod passthrough;
pub mod plugin_tcp;
pub mod plugins;
pub mod rtp;
pub mod rules;
pub mod service;
pub mod sip;
pub mod telemetry;
#[cfg(test)]
mod testutil;
pub mod tls;
pub mod web;
