//! Lab integration tests: real kernel programs attached in network namespaces, real clients
//! (`curl`, `dig`, …) in `client`, real servers in `origin`. They need root; `cargo xtask test`
//! runs them after the unit tests. One binary, one shared harness (`velocache-tests`).
#![expect(clippy::unwrap_used, reason = "tests panic with a message")]
#![expect(
    clippy::disallowed_methods,
    reason = "tests are synchronous: blocking sleeps are what they need"
)]

mod boundaries;
mod chaos;
mod config;
mod control;
mod crash;
mod datapath;
mod deploy;
mod dns;
mod dns_kernel;
mod dns_torture;
mod exhaustion;
mod fragments;
mod http;
mod https;
mod live;
mod observe;
mod origins;
mod plugins;
mod plugins_sip_tcp;
mod reuse;
mod rfc9111;
mod shared;
mod sip;
mod sip_calls;
mod sip_torture;
mod smuggling;
mod tools;
mod util;
mod web;
