//! TLS observation without steering, the daemon's side: most HTTPS on a LAN is spliced and
//! nothing more, so only connections a rule could act on are steered to the daemon; the kernel
//! forwards every other one untouched and reports it.
//!
//! Data enters from three places: the rules (which names a rule could act on, which hosts are
//! denied), the DNS service (the addresses its answers gave for such names, through
//! [`Steering`]), and the kernel (hello and end events on the `TLS_EVENTS` ring buffer, the
//! per-flow counters in `TLS_FLOWS`). It leaves as kernel map contents — steered addresses and
//! prefixes, the SNI policy, the switch that turns observation on — and as one `flow` line per
//! observed connection, like a spliced connection's, with `path: "observed"`.
//!
//! Start-up: the datapath comes up with observation off (every TLS flow steered, as before);
//! [`Observer::start`] writes `[tls] steer_prefixes` and the SNI policy, gives the steering maps
//! to [`Steering`], then switches observation on and runs one task: it drains the ring buffer
//! (an `AsyncFd`, like the kernel log), rewrites the SNI policy within a second of a rules
//! change, sweeps idle and ended flows and expired destinations, and reports the flows still
//! open when the daemon stops.
//!
//! # Layout
//! - `policy`: rules → the kernel SNI policy and the names whose addresses are steered (pure).
//! - `steer`: [`Steering`], the learned-destination table the DNS service writes.
//! - `events`: decoding ring buffer records (pure).
//! - `flows`: a flow's events and counters → its `flow` line; the sweeps.

pub mod events;
pub mod flows;
pub mod policy;
pub mod steer;

use std::{collections::HashSet, future::Future, sync::Arc, time::Duration};

use aya::maps::lpm_trie::Key;
use ipnet::IpNet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use velocache_common::tls::{ObserveConfig, SniKey, SniPolicy};

pub use steer::Steering;

use crate::{
    datapath::{TlsEvents, TlsMaps},
    rules::{RuleSet, Rules},
};

/// Now on the clock the kernel's `bpf_ktime_get_ns()` reads (CLOCK_MONOTONIC), in ns.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

/// What the observer needs from the configuration.
#[derive(Debug, Clone)]
pub struct ObserveSettings {
    /// `[tls] steer_prefixes`.
    pub steer_prefixes: Vec<IpNet>,
    /// `[tls] observed_idle_timeout_secs`.
    pub idle: Duration,
    /// The dashboard's live feed: one record per observed flow when it ends.
    pub live: Option<crate::live::Live>,
}

/// The observer.
pub struct Observer;

impl Observer {
    /// Fill the maps and switch observation on; the returned future is the observer's task (it
    /// ends, reporting the flows still open, when `cancel` fires).
    pub fn start(
        maps: TlsMaps,
        events: TlsEvents,
        settings: ObserveSettings,
        rules: Rules,
        steering: &Steering,
        cancel: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let TlsMaps {
            flows,
            steer_v4,
            steer_v6,
            mut prefixes_v4,
            mut prefixes_v6,
            mut policy,
            mut switch,
        } = maps;
        for net in &settings.steer_prefixes {
            let written = match net.trunc() {
                IpNet::V4(n) => prefixes_v4.insert(
                    &Key::new(u32::from(n.prefix_len()), n.network().octets()),
                    1,
                    0,
                ),
                IpNet::V6(n) => prefixes_v6.insert(
                    &Key::new(u32::from(n.prefix_len()), n.network().octets()),
                    1,
                    0,
                ),
            };
            if let Err(e) = written {
                error!(service = "https", prefix = %net, error = %e, "steer prefix not written");
            }
        }
        steering.attach(steer_v4, steer_v6);
        let mut written = HashSet::new();
        let mut applied = rules.current();
        write_policy(&mut policy, &mut written, &applied);
        match switch.set(
            0,
            ObserveConfig {
                enabled: 1,
                _reserved: 0,
            },
            0,
        ) {
            Ok(()) => info!(
                service = "https",
                steer_prefixes = settings.steer_prefixes.len(),
                "TLS observation on: connections no rule could act on are forwarded by the \
                 kernel and observed"
            ),
            Err(e) => error!(service = "https", error = %e,
                "TLS observation could not be switched on: every TLS flow is steered"),
        }

        let steering = steering.clone();
        let mut flows = flows::Flows::new(flows, rules.clone(), steering.clone());
        flows.set_live(settings.live.clone());
        let mut events = events;
        let idle_ns = settings.idle.as_nanos() as u64;
        let sweep_every =
            (settings.idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(10));
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut sweep = tokio::time::interval(sweep_every);
            let mut bad_records = 0u64;
            let mut batch = Vec::new();
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    drained = events.drain(|b| batch.push(events::decode(b))) => {
                        if let Err(e) = drained {
                            error!(service = "https", error = %e, "TLS event reader stopped");
                            break;
                        }
                        for ev in batch.drain(..) {
                            match ev {
                                Ok(ev) => flows.on_event(ev),
                                Err(e) => {
                                    bad_records += 1;
                                    if bad_records == 1 {
                                        warn!(service = "https", error = %e,
                                            "TLS event not understood");
                                    }
                                }
                            }
                        }
                    }
                    _ = tick.tick() => {
                        let now = rules.current();
                        if !Arc::ptr_eq(&now, &applied) {
                            write_policy(&mut policy, &mut written, &now);
                            applied = now;
                        }
                    }
                    _ = sweep.tick() => {
                        flows.sweep(idle_ns);
                        steering.sweep();
                    }
                }
            }
            flows.report_all();
        }
    }
}

/// Make the kernel's SNI policy that of `rules`: new entries first, stale ones last (so a
/// connection in between sees the old policy or the new one, never none).
fn write_policy(
    map: &mut aya::maps::HashMap<aya::maps::MapData, SniKey, SniPolicy>,
    written: &mut HashSet<SniKey>,
    rules: &RuleSet,
) {
    let entries = policy::kernel_policy(rules);
    let mut now = HashSet::new();
    let mut failed = 0;
    for (key, value) in &entries {
        if map.insert(key, value, 0).is_err() {
            failed += 1;
        }
        now.insert(*key);
    }
    for stale in written.difference(&now) {
        let _ = map.remove(stale);
    }
    *written = now;
    if failed > 0 {
        error!(
            service = "https",
            failed, "SNI policy entries not written: those hosts are denied only when steered"
        );
    }
    info!(
        service = "https",
        entries = entries.len(),
        punted = entries
            .iter()
            .filter(|(_, p)| p.action == velocache_common::tls::SNI_PUNT)
            .count(),
        "TLS SNI policy written"
    );
}
