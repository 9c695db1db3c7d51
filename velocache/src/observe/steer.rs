//! Which TLS destinations are steered to the daemon: the addresses of DNS answers for names a
//! rule could act on (`policy::steers`), for the answer's TTL, and the operator's
//! `[tls] steer_prefixes`.
//!
//! The DNS service asks [`Steering::could_steer`] (one pointer comparison when the rules have
//! not changed) and, for such a name, hands the answer's addresses to [`Steering::learn`], which
//! writes each into `TLS_STEER_V4`/`_V6` with an expiry of TTL + [`STEER_GRACE`] — unless a
//! shadow copy shows the kernel already holds a later one, so a popular name costs no syscall
//! per query. The maps are LRU (bounded); the observer's sweep removes expired entries. Until
//! the datapath is up, nothing is written (and every TLS flow is steered anyway).
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, OnceLock, PoisonError},
    time::Duration,
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use tracing::{debug, warn};
use velocache_common::tls::{MAX_STEERED_ADDRS, SteerEntry};

use super::{monotonic_ns, policy};
use crate::rules::{HostPattern, RuleSet, Rules};

/// How long past its TTL an answer's address stays steered: stub resolvers and browsers keep
/// answers a little longer than the TTL says, and a connection opened just before expiry must
/// still be steered.
pub const STEER_GRACE: Duration = Duration::from_secs(60);
/// A learned address is rewritten only when its expiry moves by more than this.
const REWRITE_SLACK_NS: u64 = 5_000_000_000;

/// The steering table, shared by the DNS service and the observer (cheap to clone).
#[derive(Clone)]
pub struct Steering {
    inner: Arc<Inner>,
}

struct Inner {
    rules: Rules,
    pinned: Vec<HostPattern>,
    /// The rule set last looked at (its address) and whether it has any steering rule.
    active: Mutex<(usize, bool)>,
    kernel: OnceLock<Mutex<Kernel>>,
}

struct Kernel {
    v4: BpfHashMap<MapData, [u8; 4], SteerEntry>,
    v6: BpfHashMap<MapData, [u8; 16], SteerEntry>,
    /// What the kernel holds: address → expiry (CLOCK_MONOTONIC ns).
    shadow: HashMap<IpAddr, u64>,
    /// Warned that the table is full (once per sweep).
    warned_full: bool,
}

impl Steering {
    /// A table over the live `rules`; `pinned_hosts` is `[tls] pinned_hosts`.
    pub fn new(rules: Rules, pinned_hosts: &[HostPattern]) -> Self {
        Steering {
            inner: Arc::new(Inner {
                rules,
                pinned: pinned_hosts.to_vec(),
                active: Mutex::new((0, false)),
                kernel: OnceLock::new(),
            }),
        }
    }

    /// Whether any rule in force could have a name steered (else answers need no look).
    pub fn could_steer(&self) -> bool {
        let set = self.inner.rules.current();
        let ptr = Arc::as_ptr(&set) as usize;
        let mut active = self
            .inner
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if active.0 != ptr {
            *active = (ptr, policy::any_steering(&set));
        }
        active.1
    }

    /// Whether connections to the addresses of `name` are steered.
    pub fn steers(&self, name: &str) -> bool {
        let set: Arc<RuleSet> = self.inner.rules.current();
        policy::steers(&set, &self.inner.pinned, name)
    }

    /// Steer `addrs` (address, TTL in seconds) from an answer for `name`.
    pub fn learn(&self, name: &str, addrs: &[(IpAddr, u32)]) {
        let Some(kernel) = self.inner.kernel.get() else {
            return;
        };
        let now = monotonic_ns();
        let mut k = kernel.lock().unwrap_or_else(PoisonError::into_inner);
        for &(addr, ttl) in addrs {
            let expires_ns = now
                .saturating_add(u64::from(ttl).saturating_mul(1_000_000_000))
                .saturating_add(STEER_GRACE.as_nanos() as u64);
            if k.shadow
                .get(&addr)
                .is_some_and(|&e| e + REWRITE_SLACK_NS >= expires_ns)
            {
                continue;
            }
            let entry = SteerEntry { expires_ns };
            let written = match addr {
                IpAddr::V4(a) => k.v4.insert(a.octets(), entry, 0),
                IpAddr::V6(a) => k.v6.insert(a.octets(), entry, 0),
            };
            match written {
                Ok(()) => {
                    debug!(service = "https", name, %addr, ttl, "destination steered");
                    if k.shadow.len() < 2 * MAX_STEERED_ADDRS as usize {
                        k.shadow.insert(addr, expires_ns);
                    } else if !k.warned_full {
                        k.warned_full = true;
                        warn!(
                            service = "https",
                            entries = k.shadow.len(),
                            "more steered destinations than the kernel map holds; \
                             the least recently used are dropped"
                        );
                    }
                }
                Err(e) => warn!(service = "https", name, %addr, error = %e,
                    "a destination could not be steered"),
            }
        }
    }

    /// Hand over the kernel maps (once, when the datapath is up).
    pub(super) fn attach(
        &self,
        v4: BpfHashMap<MapData, [u8; 4], SteerEntry>,
        v6: BpfHashMap<MapData, [u8; 16], SteerEntry>,
    ) {
        let _ = self.inner.kernel.set(Mutex::new(Kernel {
            v4,
            v6,
            shadow: HashMap::new(),
            warned_full: false,
        }));
    }

    /// Remove expired destinations from the kernel; returns how many are steered now.
    pub(super) fn sweep(&self) -> usize {
        let Some(kernel) = self.inner.kernel.get() else {
            return 0;
        };
        let now = monotonic_ns();
        let mut k = kernel.lock().unwrap_or_else(PoisonError::into_inner);
        let expired: Vec<IpAddr> = k
            .shadow
            .iter()
            .filter(|(_, e)| **e <= now)
            .map(|(a, _)| *a)
            .collect();
        for addr in expired {
            k.shadow.remove(&addr);
            // Gone already (evicted by the LRU) is fine.
            let _ = match addr {
                IpAddr::V4(a) => k.v4.remove(&a.octets()),
                IpAddr::V6(a) => k.v6.remove(&a.octets()),
            };
        }
        k.warned_full = false;
        k.shadow.len()
    }
}
