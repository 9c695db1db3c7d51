//! `[https]` (TCP 443 interception) and `[tls]`: the local CA, generated certificates,
//! upstream trust, hosts that pin.
use std::{net::Ipv4Addr, path::PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{HostPattern, Invalid, Millis, Secs, intercept::service_section};

service_section!(
    /// `[https]`
    HttpsConfig, Https, [Tcp], 443, 15443, {}
);

/// `[tls]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Where the local CA's certificate and key live (default `<state_dir>/ca`). The key file is
    /// created with mode 0600 and never logged.
    pub ca_dir: Option<PathBuf>,
    /// Extra PEM files of CA certificates trusted for upstream connections, on top of the
    /// system's and the Mozilla (webpki) roots.
    pub extra_roots: Vec<PathBuf>,
    /// Generated leaf certificates kept in memory (one per SNI).
    pub leaf_cache_entries: u64,
    /// Validity of generated leaf certificates, in days.
    pub leaf_validity_days: u32,
    /// How long to wait for a client's ClientHello before splicing whatever came.
    pub hello_timeout_ms: Millis,
    /// Hosts whose clients pin their certificates: never intercepted unless a rule names the
    /// host exactly. Globs allowed.
    pub pinned_hosts: Vec<HostPattern>,
    /// Learn pinning: a client that aborts the handshake with our certificate gets that host
    /// spliced (not intercepted) for `pinning_memory_secs`.
    pub learn_pinning: bool,
    /// How long a learned pinning is remembered.
    pub pinning_memory_secs: Secs,
    /// The host name under which intercepted plain HTTP serves the CA certificate and install
    /// instructions (like mitmproxy's mitm.it).
    pub ca_page_host: String,
    /// The address the DNS service answers for `ca_page_host`: any address the LAN routes
    /// through the gateway will do (the HTTP proxy answers the page by name, whatever the
    /// destination); the default is from the benchmarking range 198.18.0.0/15, which no
    /// network serves.
    pub ca_page_address: Ipv4Addr,
    /// Destinations whose TLS connections are always steered to the daemon (then spliced or
    /// decrypted by the rules). Other connections are steered only when their address came from
    /// a DNS answer (through the gateway) for a name a rule could act on; the rest are forwarded
    /// by the kernel and observed. `["0.0.0.0/0", "::/0"]` steers every TLS connection.
    pub steer_prefixes: Vec<IpNet>,
    /// An observed (not steered) TLS connection with no packet for this long is reported and
    /// forgotten; later packets still pass.
    pub observed_idle_timeout_secs: Secs,
    /// Join the two sockets of a spliced connection in the kernel (sockmap + `sk_skb` verdict):
    /// its bytes never reach the daemon. Off (the default): `splice(2)` through a pipe — no
    /// copies either, and on the kernels measured (`cargo xtask bench datapath`) more than twice
    /// the bulk throughput of the sockmap redirect.
    pub kernel_relay: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            ca_dir: None,
            extra_roots: Vec::new(),
            leaf_cache_entries: 10_000,
            leaf_validity_days: 30,
            hello_timeout_ms: Millis(5_000),
            // Platforms and apps known to pin: intercepting them only breaks them.
            pinned_hosts: [
                "*.apple.com",
                "*.icloud.com",
                "*.mzstatic.com",
                "*.push.apple.com",
                "*.googleapis.com",
                "*.gvt1.com",
                "*.whatsapp.net",
                "*.signal.org",
                "*.dropbox.com",
                "*.windowsupdate.com",
                "*.update.microsoft.com",
            ]
            .into_iter()
            .filter_map(|h| HostPattern::new(h).ok())
            .collect(),
            learn_pinning: true,
            pinning_memory_secs: Secs(86_400),
            ca_page_host: "velocache.ca".into(),
            ca_page_address: Ipv4Addr::new(198, 18, 0, 80),
            steer_prefixes: Vec::new(),
            observed_idle_timeout_secs: Secs(300),
            kernel_relay: false,
        }
    }
}

impl TlsConfig {
    /// The `[tls]` checks.
    pub fn check(&self) -> Result<(), Invalid> {
        if self.leaf_validity_days == 0 || self.leaf_validity_days > 397 {
            // Browsers refuse leaf certificates valid for more than 397 days.
            return Err(Invalid::new("tls.leaf_validity_days", "must be 1..=397"));
        }
        if self.leaf_cache_entries == 0 {
            return Err(Invalid::new("tls.leaf_cache_entries", "must be at least 1"));
        }
        if self.ca_page_host.is_empty() || self.ca_page_host.contains(['/', ' ', ':']) {
            return Err(Invalid::new(
                "tls.ca_page_host",
                "must be a plain host name",
            ));
        }
        if self.observed_idle_timeout_secs.0 == 0 {
            return Err(Invalid::new(
                "tls.observed_idle_timeout_secs",
                "must be at least 1",
            ));
        }
        let max = velocache_common::tls::MAX_STEER_PREFIXES as usize / 2;
        if self.steer_prefixes.len() > max {
            return Err(Invalid::new(
                "tls.steer_prefixes",
                format!("at most {max} prefixes"),
            ));
        }
        Ok(())
    }
}
