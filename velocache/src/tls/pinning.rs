//! Which hosts must not be intercepted because their clients pin certificates.
//!
//! Two sources: a configured list of host patterns (platforms known to pin), and what the
//! gateway learns — a client that aborts the handshake after seeing our certificate pins that
//! host (or does not trust our CA); that (client, host) pair is spliced from then on, for a
//! while, so the client keeps working. Only a rule naming the host exactly overrides the list;
//! a learned pin holds even then, since the client has shown it will not accept our certificate.
use std::{net::IpAddr, time::Duration};

use moka::sync::Cache;

use crate::rules::HostPattern;

/// The pinning policy.
pub struct Pinning {
    patterns: Vec<HostPattern>,
    learned: Option<Cache<(IpAddr, String), ()>>,
}

impl Pinning {
    /// From the configured patterns (already validated); `memory` of `None` disables learning.
    pub fn new(patterns: &[HostPattern], memory: Option<Duration>) -> Self {
        Pinning {
            patterns: patterns.to_vec(),
            learned: memory.map(|ttl| {
                Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(ttl)
                    .build()
            }),
        }
    }

    /// Whether `host` is on the configured list.
    pub fn listed(&self, host: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(host))
    }

    /// Whether `client` was seen rejecting our certificate for `host`.
    pub fn learned(&self, client: IpAddr, host: &str) -> bool {
        self.learned
            .as_ref()
            .is_some_and(|c| c.contains_key(&(client, host.to_string())))
    }

    /// Remember that `client` rejects our certificate for `host`.
    pub fn learn(&self, client: IpAddr, host: &str) {
        if let Some(c) = &self.learned {
            c.insert((client, host.to_string()), ());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_and_learned_pins() {
        let p = Pinning::new(
            &[HostPattern::new("*.apple.com").unwrap()],
            Some(Duration::from_secs(60)),
        );
        assert!(p.listed("swscan.apple.com"));
        assert!(!p.listed("example.lab"));
        let c: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(!p.learned(c, "bank.lab"));
        p.learn(c, "bank.lab");
        assert!(p.learned(c, "bank.lab"));
        assert!(!p.learned("10.0.0.3".parse().unwrap(), "bank.lab"));
        let off = Pinning::new(&[], None);
        off.learn(c, "x");
        assert!(!off.learned(c, "x"));
    }
}
