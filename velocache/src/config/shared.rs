//! `[shared]`: a second cache tier on a Redis Cluster, shared by several gateways (a CI farm, a
//! campus, an HA pair). Off unless `redis` names at least one node. Every tier operation is
//! bounded by `timeout_ms`; a tier that fails is left alone for `retry_ms` and the gateway
//! behaves as if it were absent meanwhile.
use serde::{Deserialize, Serialize};

use super::{Invalid, Millis};

/// `[shared]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SharedConfig {
    /// Seed nodes of the Redis Cluster (`host:port`); the client learns the rest from them.
    /// Empty: no shared tier.
    pub redis: Vec<String>,
    /// Longest any tier operation (a lookup, a slice read, a lock) may take before the
    /// gateway gives up on it and goes on without the tier.
    pub timeout_ms: Millis,
    /// After a failure, how long the tier is left alone before it is tried again (a health
    /// probe: `CLUSTER INFO` must say `cluster_state:ok`).
    pub retry_ms: Millis,
    /// Bytes of fills waiting to be written to the tier; beyond it uploads are dropped (and
    /// counted) rather than slowing anyone.
    pub upload_queue_bytes: u64,
    /// Largest object written to the tier (bigger ones stay local).
    pub max_object_bytes: u64,
}

impl Default for SharedConfig {
    fn default() -> Self {
        SharedConfig {
            redis: Vec::new(),
            timeout_ms: Millis(250),
            retry_ms: Millis(2_000),
            upload_queue_bytes: 64 << 20,
            max_object_bytes: 8 << 30,
        }
    }
}

impl SharedConfig {
    /// Whether a tier is configured.
    pub fn enabled(&self) -> bool {
        !self.redis.is_empty()
    }

    /// The `[shared]` checks.
    pub fn check(&self) -> Result<(), Invalid> {
        self.timeout_ms.at_least_one("shared.timeout_ms")?;
        self.retry_ms.at_least_one("shared.retry_ms")?;
        for node in &self.redis {
            let ok = node
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(Invalid::new(
                    "shared.redis",
                    format!("{node:?} is not host:port"),
                ));
            }
        }
        Ok(())
    }
}
