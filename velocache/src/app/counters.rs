//! The periodic `kernel counters` log line: what the classifier did per service since start,
//! written when it changed.
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use velocache_common::{Service, Verdict};

use crate::datapath::{CounterSnapshot, Counters};

/// Log the counters every `every` while they change, until `cancel`.
pub async fn log_counters(counters: Counters, every: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let mut last = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        match counters.snapshot() {
            Ok(s) if last.as_ref() != Some(&s) => {
                log_snapshot(&s);
                last = Some(s);
            }
            Ok(_) => {}
            Err(e) => error!(error = %e, "reading kernel counters failed"),
        }
    }
}

/// One line per service that saw packets.
pub fn log_snapshot(s: &CounterSnapshot) {
    for service in Service::ALL {
        let get = |v| s.get(service, v);
        use Verdict::*;
        let steered = get(SteeredListener)
            + get(SteeredEstablished)
            + get(SteeredTimeWait)
            + get(SteeredReusedPort)
            + get(SteeredFragment);
        let passed = get(PassedNoListener)
            + get(AssignFailed)
            + get(Disabled)
            + get(PassedTimeWait)
            + get(PassedFragmentsAhead)
            + get(PassedUntracked);
        let bypassed = get(BypassedClient) + get(BypassedDestination) + get(GatewayLocal);
        let observed = get(ObservedNew) + get(Observed) + get(DeniedSni);
        if steered + passed + bypassed + observed == 0 {
            continue;
        }
        info!(
            service = "datapath",
            for_service = service.name(),
            steered_new = get(SteeredListener),
            steered_established = get(SteeredEstablished),
            steered_time_wait = get(SteeredTimeWait),
            steered_reused_port = get(SteeredReusedPort),
            steered_fragment = get(SteeredFragment),
            lookup_assigned = get(LookupAssigned),
            lookup_dropped = get(LookupDropped),
            passed_no_listener = get(PassedNoListener),
            assign_failed = get(AssignFailed),
            passed_time_wait = get(PassedTimeWait),
            passed_fragments_ahead = get(PassedFragmentsAhead),
            observed_new = get(ObservedNew),
            observed = get(Observed),
            denied_sni = get(DeniedSni),
            passed_untracked = get(PassedUntracked),
            bypassed_client = get(BypassedClient),
            bypassed_destination = get(BypassedDestination),
            gateway_local = get(GatewayLocal),
            "kernel counters"
        );
    }
}
