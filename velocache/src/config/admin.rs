//! `[admin]`: the admin API's listeners and the metrics endpoint.
use std::{net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

use super::Invalid;

/// `[admin]`
///
/// The admin API always listens on `<daemon.run_dir>/admin.sock` (mode 0600: root only). A TCP
/// listener is off by default: it exposes the same API to the network, so it requires a bearer
/// token read from `token_file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Also serve the admin API on this TCP address (e.g. `127.0.0.1:9180`). Off when unset.
    pub tcp_listen: Option<SocketAddr>,
    /// File holding the bearer token TCP clients must send (`Authorization: Bearer …`); required
    /// with `tcp_listen`. Keep it 0600; surrounding whitespace is ignored.
    pub token_file: Option<PathBuf>,
    /// Serve `/metrics` (and nothing else, without a token) on this TCP address for Prometheus,
    /// e.g. `0.0.0.0:9181`. Off when unset; `/metrics` is always on the admin socket.
    pub metrics_listen: Option<SocketAddr>,
    /// Serve the web dashboard on this TCP address (e.g. `127.0.0.1:9182`). Off when unset.
    /// People log in with the admin token (`token_file`, every right) or the read-only token
    /// (`readonly_token_file`: sees everything, changes nothing).
    pub web_listen: Option<SocketAddr>,
    /// File holding the dashboard's read-only token. Optional; keep it 0600.
    pub readonly_token_file: Option<PathBuf>,
    /// Records the live feed keeps for the dashboard and the rule editor's dry run.
    #[serde(default = "default_live_history")]
    pub live_history: usize,
}

fn default_live_history() -> usize {
    crate::live::DEFAULT_HISTORY
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            tcp_listen: None,
            token_file: None,
            metrics_listen: None,
            web_listen: None,
            readonly_token_file: None,
            live_history: default_live_history(),
        }
    }
}

impl AdminConfig {
    /// The `[admin]` checks.
    pub fn check(&self) -> Result<(), Invalid> {
        if self.tcp_listen.is_some() && self.token_file.is_none() {
            return Err(Invalid::new(
                "admin.token_file",
                "is required when admin.tcp_listen is set (the TCP admin API needs a token)",
            ));
        }
        if self.tcp_listen.is_some_and(|a| a.port() != 0) && self.tcp_listen == self.metrics_listen
        {
            return Err(Invalid::new(
                "admin.metrics_listen",
                "must differ from admin.tcp_listen",
            ));
        }
        if self.web_listen.is_some() && self.token_file.is_none() {
            return Err(Invalid::new(
                "admin.token_file",
                "is required when admin.web_listen is set (the dashboard's login is the admin token)",
            ));
        }
        if let Some(web) = self.web_listen.filter(|a| a.port() != 0)
            && (Some(web) == self.tcp_listen || Some(web) == self.metrics_listen)
        {
            return Err(Invalid::new(
                "admin.web_listen",
                "must differ from admin.tcp_listen and admin.metrics_listen",
            ));
        }
        if !(1..=1_000_000).contains(&self.live_history) {
            return Err(Invalid::new(
                "admin.live_history",
                "must be between 1 and 1000000 records",
            ));
        }
        Ok(())
    }
}
