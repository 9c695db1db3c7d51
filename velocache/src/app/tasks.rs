//! What runs beside the services once the kernel side is up: the TLS observer (it needs the
//! kernel's observation maps and the steering table the DNS service writes), the periodic
//! kernel-counters line, and the expiry of idle UDP reply sockets. Each task ends when `cancel`
//! fires; `run` joins them with the services' loops.
use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    datapath::{Counters, Kernel},
    net::UdpReplier,
    observe::{ObserveSettings, Observer, Steering},
    rules::Rules,
};

/// Start the tasks that need the kernel side: the TLS observer (when HTTPS is enabled and the
/// kernel has observation maps; until it runs, every TLS flow is steered) and the counters line
/// (`[daemon] stats_interval_secs`). `kernel_counters` is given the counters for the metrics.
#[expect(
    clippy::too_many_arguments,
    reason = "the wiring hands each task what it needs; a struct would only rename them"
)]
pub fn start(
    kernel: Option<&mut Box<dyn Kernel>>,
    live: Option<crate::live::Live>,
    config: &Config,
    rules: &Rules,
    steering: Option<&Steering>,
    kernel_counters: &Arc<OnceLock<Counters>>,
    cancel: &CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    let Some(kernel) = kernel else { return };
    if let Some(steering) = steering
        && let Some((maps, events)) = kernel.take_tls()
    {
        let settings = ObserveSettings {
            steer_prefixes: config.tls.steer_prefixes.clone(),
            idle: config.tls.observed_idle_timeout_secs.get(),
            live,
        };
        tasks.spawn(Observer::start(
            maps,
            events,
            settings,
            rules.clone(),
            steering,
            cancel.clone(),
        ));
    }
    if let Some(counters) = kernel.counters() {
        let _ = kernel_counters.set(counters.clone());
        let every = config.daemon.stats_interval_secs;
        if every.0 > 0 {
            tasks.spawn(super::counters::log_counters(
                counters,
                every.get(),
                cancel.clone(),
            ));
        }
    }
}

/// Close reply sockets of UDP sessions idle for two minutes, every 30 s.
pub async fn expire_reply_sockets(replier: Arc<UdpReplier>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => replier.expire_idle(Duration::from_secs(120)),
        }
    }
}
