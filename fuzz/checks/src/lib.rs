//! What VeloCache's fuzz targets check, as plain functions of the input bytes.
//!
//! Each cargo-fuzz target in `fuzz/fuzz_targets/` is one call into this crate, so the very
//! same check runs in two places: under libFuzzer (nightly, `cargo xtask fuzz`), which
//! generates inputs and keeps the interesting ones in `fuzz/corpus/<target>/`, and in this
//! crate's stable test (`tests/corpus.rs`, run by `cargo xtask test`), which feeds every
//! committed corpus file back through it — so a crash once found and fixed stays fixed
//! without nightly. A check panics (an assertion) when an invariant breaks; anything else a
//! parser says about bad input is an error value, never a panic.
//!
//! # Layout
//! - `sip`: SIP messages, the observer pipeline, SDP, SIP over TCP framing.
//! - `dns`: client queries against hickory-proto; upstream answers rendered for clients.
//! - `http`: Cache-Control, the cache policy, ranges, request/response heads through the
//!   proxy's framing layer, and the anomaly detector's path templates.
//! - `tls`: the ClientHello first flight; the TLS observation ring buffer's records.
//! - `origins`: ghost mode's path templates.
//! - `shared`: the shared tier's object records read from Redis.
//! - `files`: `velocache.toml` and `rules.toml` text.
//! - `bpf`: values of the kernel's maps, decoded as the daemon decodes them.
//! - `web`: the admin API's query values, the dashboard's session cookie, the RTP capture
//!   ring's records.
#![deny(missing_docs)]
#![expect(
    clippy::expect_used,
    reason = "a failed expectation is a finding: panicking is how a check reports it"
)]

mod bpf;
mod dns;
mod files;
mod http;
mod origins;
mod shared;
mod sip;
mod tls;
mod web;

pub use bpf::bpf_map_values;
pub use dns::{dns_answer_patch, dns_query};
pub use files::config_files;
pub use http::{http_cache_control, http_cache_policy, http_head, http_path_template, http_range};
pub use origins::origins_template;
pub use shared::shared_record;
pub use sip::{sdp, sip_message, sip_observer, sip_tcp_framing};
pub use tls::{tls_client_hello, tls_event};
pub use web::{admin_query, rtp_capture_event};

/// A target's check: any bytes in, a panic only when an invariant breaks.
pub type Check = fn(&[u8]);

/// Every target by name (the name of its `fuzz_targets/<name>.rs` and `corpus/<name>/`).
pub const TARGETS: &[(&str, Check)] = &[
    ("admin_query", admin_query),
    ("bpf_map_values", bpf_map_values),
    ("config_files", config_files),
    ("dns_answer_patch", dns_answer_patch),
    ("dns_query", dns_query),
    ("http_cache_control", http_cache_control),
    ("http_cache_policy", http_cache_policy),
    ("http_head", http_head),
    ("http_path_template", http_path_template),
    ("http_range", http_range),
    ("origins_template", origins_template),
    ("rtp_capture_event", rtp_capture_event),
    ("sdp", sdp),
    ("shared_record", shared_record),
    ("sip_message", sip_message),
    ("sip_observer", sip_observer),
    ("sip_tcp_framing", sip_tcp_framing),
    ("tls_client_hello", tls_client_hello),
    ("tls_event", tls_event),
];
