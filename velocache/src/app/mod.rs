//! The daemon's life: bring the services up, attach the datapath, serve until told to stop,
//! then take everything down in the order that keeps clients working.
//!
//! Start-up order matters: listeners are bound and served before the kernel side is attached,
//! so the first steered packet already finds its socket. XDP has one step more: the XDP owner
//! exists before the services, a service claims its slot while it is built (loading the XDP
//! programs and getting the slot's maps, so it is whole from its first call), and the
//! dispatcher is attached to the claimed interfaces when the kernel side starts, after the
//! classifier. Shutdown runs the other way: listeners close first (new flows then find no
//! socket and fail open straight to their destination), flows in progress get
//! `shutdown_grace_secs` to finish while the classifier still steers their packets, and only
//! then is the kernel side detached (classifier, routing, then XDP). The control plane comes up
//! last, once every service has registered its metrics and admin seams; a stop through the
//! admin API takes the same path as SIGTERM, and the admin socket stays up while flows drain
//! (`service status` says `stopping`).
//!
//! [`start`] is what `main` calls: it takes the instance lock, binds the transparent sockets
//! ([`bind_all`]) and runs with the real datapath. [`run`] takes the bound sockets and the
//! kernel side as parts, so the ordering is tested without privileges (`tests`).
//!
//! # Layout
//! - `parts`: what `run` is given, and its error; `bind`: binding and serving each service's
//!   sockets; `services`: the factories, and the parts several services share; `tasks`: what
//!   runs beside the services once the kernel side is up (the TLS observer, the counters line);
//!   `counters`: the kernel-counters line.
mod bind;
mod counters;
mod parts;
mod services;
mod tasks;
#[cfg(test)]
mod tests;

use std::{future::Future, sync::Arc};

use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use bind::{Bound, bind_all};
pub use parts::{AppError, Launch, Parts, ServicesStart};

use crate::{
    admin::AdminHub,
    config::{Config, PortClaims},
    control::{AdminServer, ControlPlane, PlaneMetrics, PlaneParts},
    datapath::{InstanceLock, XdpOwner, XdpSettings},
    flow::FlowTracker,
    net::UdpReplier,
    plugins::Plugins,
    rules::Rules,
    service::ServiceContext,
};

/// Run the daemon as `main` does: one per network namespace, transparent sockets, the real
/// services and datapath; until `shutdown` resolves or a stop is asked through the admin API.
pub async fn start(
    config: Config,
    launch: Launch,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    let _lock = InstanceLock::acquire().await?;
    bind::raise_fd_limit();
    let xdp = XdpOwner::new(XdpSettings::from_config(&config));
    let parts = Parts {
        listeners: bind_all(&config)?,
        services: Box::new(services::factories),
        kernel: crate::datapath::kernel(xdp.clone()),
        xdp,
    };
    run(config, launch, parts, shutdown).await
}

/// The plugin set from `[plugins]`, loaded on a blocking thread (components compile), and
/// offered to the admin API. A plugin that does not load is logged and skipped; the daemon
/// starts with the others.
async fn load_plugins(config: &Config, hub: &AdminHub, registry: &mut Registry) -> Plugins {
    let plugins = Plugins::new(&config.plugins, registry.sub_registry_with_prefix("plugin"));
    hub.register_plugins(Arc::new(plugins.clone()));
    if plugins.dir().is_some() {
        let loading = plugins.clone();
        match tokio::task::spawn_blocking(move || loading.reload()).await {
            Ok(Ok(report)) => info!(
                plugins = report.loaded.len(),
                refused = report.refused.len(),
                "plugins loaded"
            ),
            Ok(Err(e)) => warn!(error = %e, "no plugins loaded"),
            Err(e) => warn!(error = %e, "no plugins loaded: the loader failed"),
        }
    }
    plugins
}

/// Run with `parts` until `shutdown` resolves or a stop is asked through the admin API.
pub async fn run(
    config: Config,
    launch: Launch,
    parts: Parts,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    // Before anything else: SIGHUP's default action would end the daemon.
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .inspect_err(|e| warn!(error = %e, "cannot install the SIGHUP handler: reload through the admin API only"))
        .ok();
    let rules = match &config.rules.file {
        Some(file) => {
            let rules = Rules::load(file)?;
            info!(file = %file.display(), rules = rules.current().rules.len(), "rules loaded");
            rules
        }
        None => Rules::empty(),
    };
    let config = Arc::new(config);
    let hub = AdminHub::new();
    let mut registry = Registry::with_prefix("velocache");
    if config.admin.web_listen.is_some() {
        hub.enable_live(crate::live::Live::new(
            config.admin.live_history,
            &mut registry,
        ));
    }
    let plugins = load_plugins(&config, &hub, &mut registry).await;
    let mut factories = (parts.services)(&config, &rules, &plugins, &hub, &mut registry)?;
    let steering = config
        .https
        .enabled
        .then(|| crate::observe::Steering::new(rules.clone(), &config.tls.pinned_hosts));
    let ctx = ServiceContext {
        config: config.clone(),
        rules: rules.clone(),
        flows: FlowTracker::new(),
        admin: hub.clone(),
        steering: steering.clone(),
        xdp: parts.xdp,
        claims: PortClaims::default(),
        plugins,
    };
    let flows = ctx.flows.clone();
    let replier = Arc::new(UdpReplier::default());
    let cancel = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut daemon_sockets = Vec::new();
    for bound in parts.listeners {
        let Some(i) = factories.iter().position(|f| f.service() == bound.service) else {
            continue;
        };
        let factory = factories.swap_remove(i);
        let service = bound.service;
        let handlers = factory.build(
            &ctx.for_service(service),
            registry.sub_registry_with_prefix(service.name()),
        )?;
        daemon_sockets.extend(bound.daemon_sockets()?);
        info!(service = service.name(), ports = ?bound.ports, "service listening");
        bound.serve(&handlers, &replier, &cancel, &mut tasks);
    }
    let kernel_counters = Arc::new(std::sync::OnceLock::new());
    crate::control::metrics::DaemonMetrics::register(
        &mut registry,
        flows.clone(),
        kernel_counters.clone(),
        rules.clone(),
    );
    let plane_metrics = PlaneMetrics::register(&mut registry);
    // Bound before the datapath so that a socket problem stops start-up with nothing attached.
    let admin = AdminServer::bind(&config).await?;
    let web = crate::web::WebServer::bind(&config).await?;

    // The plugin service, built above, has set the ports its plugins claim.
    let intercepts = config.intercepts_with(&ctx.claims);
    let mut datapath = (parts.kernel)(config.clone(), intercepts, daemon_sockets).await?;
    tasks::start(
        datapath.as_mut(),
        hub.live(),
        &config,
        &rules,
        steering.as_ref(),
        &kernel_counters,
        &cancel,
        &mut tasks,
    );
    tasks.spawn(tasks::expire_reply_sockets(replier.clone(), cancel.clone()));
    let plane = ControlPlane::new(PlaneParts {
        config: config.clone(),
        config_file: launch.config_file,
        rules,
        flows: flows.clone(),
        hub,
        claims: ctx.claims.clone(),
        registry: Arc::new(registry),
        datapath,
        log: launch.log,
        metrics: plane_metrics,
    });
    let admin_cancel = CancellationToken::new();
    let admin_task = tokio::spawn(admin.serve(plane.clone(), admin_cancel.clone()));
    let web_task = web.map(|web| tokio::spawn(web.serve(plane.clone(), admin_cancel.clone())));
    let hangup_task = hangups.map(|mut hup| {
        let plane = plane.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                info!(signal = "SIGHUP", "signal received");
                plane.reload("SIGHUP").await;
            }
        })
    });
    plane.warm_rules_urls();

    info!(pid = std::process::id(), "velocache running");
    tokio::select! {
        _ = shutdown => {}
        _ = plane.stop_requested() => {}
    }
    plane.request_stop();
    info!(
        active_flows = flows.active(),
        "shutting down: no new flows are intercepted"
    );
    cancel.cancel();
    while tasks.join_next().await.is_some() {}

    let grace = plane.config().daemon.shutdown_grace_secs.get();
    let left = flows.wait_idle(grace).await;
    if left > 0 {
        warn!(flows = left, "grace period over; remaining flows are cut");
    }
    if let Some(task) = hangup_task {
        task.abort();
    }
    if let Some(kernel) = plane.take_datapath().await {
        if let Some(Ok(snapshot)) = kernel.counters().map(|c| c.snapshot()) {
            counters::log_snapshot(&snapshot);
        }
        kernel.stop().await;
    }
    admin_cancel.cancel();
    let _ = admin_task.await;
    if let Some(task) = web_task {
        let _ = task.await;
    }
    info!("velocache stopped");
    Ok(())
}
