//! The live feed's clock: DNS hit sums published every second, an analytics point closed every
//! [`INTERVAL`] with what only the control plane knows (calls in progress and their MOS, the
//! kernel classifier's counters).
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    control::ControlPlane,
    live::{Extra, Live, series::INTERVAL},
};

pub(super) async fn run(plane: Arc<ControlPlane>, live: Live, cancel: CancellationToken) {
    let mut second = tokio::time::interval(Duration::from_secs(1));
    second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let per_point = INTERVAL.as_secs().max(1);
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = second.tick() => {}
        }
        live.flush_hits();
        ticks += 1;
        if ticks.is_multiple_of(per_point) {
            live.close_interval(extra(&plane).await);
        }
    }
}

async fn extra(plane: &ControlPlane) -> Extra {
    let mut extra = Extra::default();
    if let Some(calls) = plane.hub().calls()
        && let Ok(report) = calls.calls().await
    {
        extra.active_calls = report.active.len() as u64;
        let mos: Vec<f64> = report
            .active
            .iter()
            .flat_map(|c| c.media.iter().filter_map(|m| m.mos))
            .collect();
        if !mos.is_empty() {
            extra.mos = Some(mos.iter().sum::<f64>() / mos.len() as f64);
        }
    }
    if let Ok(stats) = plane.stats() {
        let mut kernel: BTreeMap<String, u64> = BTreeMap::new();
        for s in &stats.services {
            for (verdict, n) in &s.kernel {
                *kernel
                    .entry(format!("{}.{verdict}", s.service))
                    .or_default() += n;
            }
        }
        extra.kernel = kernel.into_iter().collect();
    }
    extra
}
