//! The control plane: the admin API inside the daemon, its client for the CLI, metrics,
//! reload and cache warm-up.
//!
//! Requests enter through [`AdminServer`] — JSON over HTTP/1.1 on the root-only Unix socket
//! `<run_dir>/admin.sock`, optionally on a TCP listener with a bearer token, and `/metrics` on
//! an optional metrics-only port — and are answered from the [`ControlPlane`], which holds the
//! running configuration, the rules, the flow tracker, the datapath (for live reconfiguration)
//! and the metrics registry. What a service offers the admin API beyond its metrics (the HTTP
//! cache's objects, SIP calls, the local CA) comes through the traits of `crate::admin`,
//! registered in the hub each service finds in its `ServiceContext`. The CLI (`crate::cli`)
//! talks to the API through [`Client`]; both sides share the wire types of `crate::admin::api`.
//!
//! # Layout
//! - `plane`: [`ControlPlane`], the state the API works on.
//! - `server`, `routes`: listeners and request handling; `client`: the other end.
//! - `metrics`: daemon-wide collectors (kernel counters, sessions, process); `exposition`:
//!   OpenMetrics text back into samples; `stats`: `stats` and `status` from both.
//! - `reload`: SIGHUP / `service reload`; `warmup`: the cache warm-up runner.

mod client;
pub mod exposition;
pub mod metrics;
mod plane;
mod reload;
mod routes;
mod server;
mod stats;
pub mod warmup;

#[cfg(test)]
pub(crate) mod tests;

pub use client::{Client, ClientError, Endpoint, query_escape};
pub use metrics::PlaneMetrics;
pub use plane::{ControlPlane, PlaneParts};
pub use reload::{changed_keys, is_live};
pub use routes::{Access, Role, changes_something, handle, percent_decode, token_matches};
pub use server::{AdminServer, ControlError, SOCKET_NAME, read_token, socket_path};
