//! Checking a `Host` name against the original destination, off the request path.
//!
//! The request is always forwarded to the original destination, and cache keys carry that
//! address (see `cache::key`), so a lying `Host` can neither redirect a connection nor poison
//! the cache. This check only tells the operator: each (name, address) pair is resolved once per
//! ten minutes in the background, and a name that does not resolve to the address the client
//! connected to is logged.
use std::{net::IpAddr, time::Duration};

use moka::sync::Cache;
use tracing::{debug, warn};

/// Names checked recently.
#[derive(Clone)]
pub struct HostNames {
    seen: Cache<(String, IpAddr), ()>,
}

impl Default for HostNames {
    fn default() -> Self {
        HostNames {
            seen: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(600))
                .build(),
        }
    }
}

impl HostNames {
    /// Check `host` (a name, maybe with a port) against `dst` in the background.
    pub fn check(&self, host: &str, dst: IpAddr, trace_id: &str) {
        let name = host
            .rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(n, _)| n)
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let key = (name.clone(), dst);
        if self.seen.contains_key(&key) {
            return;
        }
        self.seen.insert(key, ());
        let trace_id = trace_id.to_string();
        tokio::spawn(async move {
            let lookup = tokio::net::lookup_host((name.as_str(), 80));
            match tokio::time::timeout(Duration::from_secs(3), lookup).await {
                Ok(Ok(addrs)) => {
                    let addrs: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                    if !addrs.contains(&dst) {
                        warn!(%trace_id, host = %name, orig_dst = %dst, resolved = ?addrs,
                            "Host resolves elsewhere than the original destination; forwarded to the original destination");
                    }
                }
                Ok(Err(e)) => {
                    debug!(%trace_id, host = %name, error = %e, "Host name not resolvable from the gateway")
                }
                Err(_) => debug!(%trace_id, host = %name, "resolving Host timed out"),
            }
        });
    }
}
