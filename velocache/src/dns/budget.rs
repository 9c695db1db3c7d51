//! The forwarder's budget of upstream queries in flight, shared fairly between resolvers.
//!
//! `[dns] max_pending_queries` bounds the memory and sockets that queries waiting on upstreams
//! may hold. One global count is not enough: a resolver that answers late (or never) would fill
//! it alone, and every other client's miss would then be refused with SERVFAIL although its own
//! resolver answers at once. So each target — a resolver a client asked, when no upstreams are
//! configured — may hold at most a quarter of the budget; the configured upstream pool, being
//! the only target then, may hold all of it. A permit is taken before a query goes upstream
//! and given back when its answer (or its failure) is in.
use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::forwarder::Target;

/// Queries in flight per resolver.
type Shares = Arc<Mutex<HashMap<SocketAddr, usize>>>;

/// The budget.
pub(super) struct Budget {
    total: Arc<Semaphore>,
    per_resolver: usize,
    by_resolver: Shares,
}

/// One query's place in the budget; dropping it gives the place back.
pub(super) struct Permit {
    _total: OwnedSemaphorePermit,
    resolver: Option<(SocketAddr, Shares)>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some((addr, map)) = &self.resolver {
            release(map, *addr);
        }
    }
}

impl Budget {
    /// A budget of `max` queries in flight.
    pub(super) fn new(max: usize) -> Budget {
        Budget {
            total: Arc::new(Semaphore::new(max)),
            per_resolver: (max / 4).max(1),
            by_resolver: Arc::default(),
        }
    }

    /// A place for a query to `target`, unless the budget or the target's share is used up.
    pub(super) fn try_acquire(&self, target: Target) -> Option<Permit> {
        let resolver = match target {
            Target::Pool => None,
            Target::Direct(addr) => {
                let mut map = self.by_resolver.lock();
                let n = map.entry(addr).or_insert(0);
                if *n >= self.per_resolver {
                    return None;
                }
                *n += 1;
                Some((addr, self.by_resolver.clone()))
            }
        };
        match self.total.clone().try_acquire_owned() {
            Ok(total) => Some(Permit {
                _total: total,
                resolver,
            }),
            Err(_) => {
                // Give the share back: this query does not go out.
                if let Some((addr, map)) = resolver {
                    release(&map, addr);
                }
                None
            }
        }
    }
}

fn release(map: &Mutex<HashMap<SocketAddr, usize>>, addr: SocketAddr) {
    let mut map = map.lock();
    if let Some(n) = map.get_mut(&addr) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(&addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(port: u16) -> Target {
        Target::Direct(SocketAddr::from(([10, 0, 0, 1], port)))
    }

    #[test]
    fn one_slow_resolver_cannot_take_the_whole_budget() {
        let b = Budget::new(8);
        let slow: Vec<_> = (0..8).filter_map(|_| b.try_acquire(direct(53))).collect();
        assert_eq!(slow.len(), 2, "a quarter of the budget");
        let other: Vec<_> = (0..8).filter_map(|_| b.try_acquire(direct(5353))).collect();
        assert_eq!(other.len(), 2);
        drop(slow);
        assert!(b.try_acquire(direct(53)).is_some(), "places come back");
    }

    #[test]
    fn the_upstream_pool_may_use_everything_and_the_total_is_a_bound() {
        let b = Budget::new(4);
        let pool: Vec<_> = (0..6).filter_map(|_| b.try_acquire(Target::Pool)).collect();
        assert_eq!(pool.len(), 4);
        assert!(b.try_acquire(direct(53)).is_none());
        // A refused resolver query left no share behind.
        drop(pool);
        assert!(b.try_acquire(direct(53)).is_some());
        assert_eq!(
            b.by_resolver.lock().len(),
            0,
            "dropped permits are forgotten"
        );
    }
}
