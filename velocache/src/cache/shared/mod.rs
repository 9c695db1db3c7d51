//! The shared tier: a second cache level on a Redis Cluster, behind every gateway's own disk.
//!
//! Several gateways (a CI farm, a campus, an HA pair) configured with the same `[shared]
//! redis` nodes share what any of them fetched. Requests enter through the two seams the HTTP
//! layer already uses: [`TieredStorage`] is the [`super::Storage`] (local disk first, then the
//! tier; fills written to both) and [`SharedLock`] the [`super::lock::CacheLock`] (collapsed
//! forwarding across gateways). The Redis side — keys, scripts, timeouts, health — is
//! [`tier`]; the queue that writes to the tier behind the clients is [`upload`]. The tier is a
//! cache of a cache: whatever it does (slow, down, full, corrupt), a request costs at most one
//! `timeout_ms` and then goes on as if the tier were absent.
//!
//! # Layout
//! - `tier`: the cluster connection, its health, the operations in Redis terms, the counters.
//! - `storage`: [`TieredStorage`] and the purge follower.
//! - `lock`: [`SharedLock`].
//! - `upload`: the ordered, bounded queue of writes to the tier.

mod lock;
mod storage;
pub mod tier;
mod upload;

pub use lock::SharedLock;
pub use storage::TieredStorage;
pub use tier::Tier;
