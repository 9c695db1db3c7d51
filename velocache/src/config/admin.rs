//! `[admin]`: the admin API's listeners and the metrics endpoint.
use std::{net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

use super::Invalid;

/// `[admin]`
///
/// The admin API always listens on `<daemon.run_dir>/admin.sock` (mode 0600: root only). A TCP
/// listener is off by default: it exposes the same API to the network, so it requires a bearer
/// token read from `token_file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
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
        Ok(())
    }
}
