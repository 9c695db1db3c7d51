//! Wiring: bind the transparent sockets, start each service's handler, bring the datapath up,
//! wait for the shutdown signal, then take everything down in the order that keeps clients
//! working.
//!
//! Start-up order matters: listeners are bound before the classifier is attached, so the first
//! steered packet already finds its socket. Shutdown runs the other way: listeners close first
//! (new flows then find no socket and fail open straight to their destination), flows in
//! progress get `shutdown_grace_secs` to finish while the classifier still steers their packets,
//! and only then are the programs detached and the routing removed.
//!
//! The control plane comes up last, when every service has registered its metrics and admin
//! seams: the admin socket, `/metrics`, SIGHUP reloads, and the cache warm-up of the rules'
//! `warmup_urls`. A stop through the admin API (`velocache service stop`) takes the same path
//! as SIGTERM; the admin socket stays up while flows drain, so `service status` says
//! `stopping`, and disappears when the daemon is gone.
use std::{
    future::Future,
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::Duration,
};

use prometheus_client::registry::Registry;
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use velocache_common::Service;

use crate::{
    config::{Config, Intercept, Transport},
    control::{AdminHub, AdminServer, ControlError, ControlPlane, PlaneMetrics, PlaneParts},
    datapath::{Counters, Datapath, DatapathError, InstanceError, InstanceLock},
    flow::FlowTracker,
    net::{
        TcpHandler, TimeWaitReaper, TransparentListener, TransparentUdp, UdpHandler, UdpReplier,
        serve_tcp, serve_udp, wildcard_addrs,
    },
    passthrough::{TcpSplice, UdpRelay},
    rules::{Rules, RulesError},
    telemetry::LogControl,
    tls::{TlsError, TlsService, TlsShared},
};

/// Why the daemon could not start.
#[derive(Debug, Error)]
pub enum AppError {
    /// Another daemon runs in this network namespace.
    #[error(transparent)]
    Instance(#[from] InstanceError),
    /// A listener could not be bound.
    #[error("cannot bind the {service} {transport:?} listener on {addr}: {source}")]
    Bind {
        /// Service name.
        service: &'static str,
        /// TCP or UDP.
        transport: Transport,
        /// Address.
        addr: std::net::SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The datapath did not come up.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// The rules file is invalid.
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// The TLS layer (CA, roots) could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The admin API could not start.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The DNS service could not be set up.
    #[error(transparent)]
    Dns(#[from] crate::dns::DnsError),
}

/// How long the gateway waits for an original destination to accept a spliced connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sockets bound for one service.
struct Bound {
    intercept: Intercept,
    tcp: Vec<TransparentListener>,
    udp: Vec<TransparentUdp>,
}

/// Bind every enabled service's listeners: IPv4 always, IPv6 where the host has it.
fn bind_all(config: &Config) -> Result<Vec<Bound>, AppError> {
    let mut all = Vec::new();
    for intercept in config.intercepts().into_iter().filter(|i| i.enabled) {
        let mut bound = Bound {
            intercept: intercept.clone(),
            tcp: Vec::new(),
            udp: Vec::new(),
        };
        for addr in wildcard_addrs(intercept.listen_port) {
            let v6 = addr.is_ipv6();
            for &transport in intercept.transports {
                let result = match transport {
                    Transport::Tcp => TransparentListener::bind(addr).map(|l| bound.tcp.push(l)),
                    Transport::Udp => TransparentUdp::bind(addr).map(|s| bound.udp.push(s)),
                };
                match result {
                    Ok(()) => {}
                    // A host without IPv6 still gets IPv4 interception.
                    Err(e) if v6 && e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                        warn!(
                            service = intercept.service.name(),
                            "IPv6 unavailable; IPv4 only"
                        );
                    }
                    Err(source) => {
                        return Err(AppError::Bind {
                            service: intercept.service.name(),
                            transport,
                            addr,
                            source,
                        });
                    }
                }
            }
        }
        all.push(bound);
    }
    Ok(all)
}

/// The handlers of one service.
pub struct Handlers {
    /// For the service's TCP listeners.
    pub tcp: Arc<dyn TcpHandler>,
    /// For the service's UDP sockets.
    pub udp: Arc<dyn UdpHandler>,
}

/// What every service handler may use: the configuration, the live rules, the flow tracker,
/// the TLS layer, the admin hub, and (while handlers are being built) the metrics registry to
/// register its counters in.
#[derive(Clone)]
pub struct ServiceContext {
    /// The whole configuration.
    pub config: Arc<Config>,
    /// The operator's rules; reloads swap them under every service at once.
    pub rules: Rules,
    /// Flows in progress.
    pub flows: FlowTracker,
    /// The TLS layer (local CA, leaf certificates, upstream trust) when HTTPS is enabled; the
    /// HTTP proxy serves the CA page from it, the admin API exports and rotates the CA.
    pub tls: Option<Arc<TlsShared>>,
    /// Where a service registers what it offers the admin API beyond metrics: the HTTP cache
    /// (`ctx.admin.register_cache`, for `velocache cache …` and warm-up), the SIP observer
    /// (`register_calls`, for `velocache calls`). Until one registers, the API answers "not
    /// available" for it. See `control::seams`.
    pub admin: AdminHub,
    /// The HTTP proxy and its cache, built once when HTTP or HTTPS is enabled: plain HTTP and
    /// decrypted HTTPS go through the same one, so an object is stored once for both.
    pub http_proxy: Option<Arc<crate::http::Proxy>>,
    /// Which TLS destinations are steered (HTTPS enabled): the DNS service writes the addresses
    /// of answers for names a rule could act on into it.
    pub steering: Option<crate::observe::Steering>,
}

impl ServiceContext {
    /// The context handed to `service`'s handlers: the same everything, with a flow tracker
    /// that also counts the service's flows (`velocache_active_sessions{service}`).
    pub fn for_service(&self, service: Service) -> ServiceContext {
        ServiceContext {
            flows: self.flows.scoped(service),
            ..self.clone()
        }
    }

    /// Pass-through handlers for `service`: splice TCP, relay UDP.
    pub fn passthrough(&self, service: Service) -> Handlers {
        let idle = Duration::from_secs(self.config.datapath.udp_idle_timeout_secs);
        Handlers {
            tcp: Arc::new(TcpSplice::new(service, CONNECT_TIMEOUT, self.flows.clone())),
            udp: Arc::new(UdpRelay::new(service, idle, self.flows.clone())),
        }
    }
}

/// Each service's handlers. Services without their own handler yet pass flows through.
/// `registry` is the service's own metrics namespace (`velocache_<service>_…`).
fn handlers_for(
    service: Service,
    ctx: &ServiceContext,
    registry: &mut Registry,
) -> Result<Handlers, AppError> {
    Ok(match service {
        Service::Http => match &ctx.http_proxy {
            Some(proxy) => crate::http::handlers(ctx, proxy.clone()),
            None => ctx.passthrough(service),
        },
        Service::Https => {
            let Some(shared) = ctx.tls.clone() else {
                return Ok(ctx.passthrough(service));
            };
            let tls = Arc::new(TlsService::new(
                &ctx.config,
                shared,
                ctx.rules.clone(),
                ctx.flows.clone(),
                ctx.http_proxy.clone(),
            ));
            Handlers {
                tcp: Arc::new(tls),
                udp: ctx.passthrough(service).udp,
            }
        }
        Service::Dns => crate::dns::handlers(ctx, registry)?,
        Service::Sip => crate::sip::handlers(ctx, registry),
    })
}

/// How the daemon was launched, beyond its configuration.
#[derive(Default)]
pub struct Launch {
    /// The configuration file, re-read on reload (SIGHUP, `velocache service reload`).
    pub config_file: Option<PathBuf>,
    /// The log filter's reload handle (`[log] level` changes live).
    pub log: Option<LogControl>,
}

/// The TCP destination ports intercepted by enabled services (for the TIME_WAIT reaper).
pub fn intercepted_tcp_ports(config: &Config) -> Vec<u16> {
    config
        .intercepts()
        .into_iter()
        .filter(|i| i.enabled && i.transports.contains(&Transport::Tcp))
        .flat_map(|i| i.ports)
        .collect()
}

/// Run the daemon until `shutdown` resolves (or a stop is asked through the admin API).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), AppError> {
    run_with(config, Launch::default(), shutdown).await
}

/// [`run`], with the configuration file and log handle that make reloads possible.
pub async fn run_with(
    config: Config,
    launch: Launch,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    // Before anything else: SIGHUP's default action would end the daemon.
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "cannot install the SIGHUP handler: reload through the admin API only");
            None
        }
    };
    let _lock = InstanceLock::acquire()?;
    let rules = match &config.rules.file {
        Some(file) => {
            let rules = Rules::load(file)?;
            info!(file = %file.display(), rules = rules.current().rules.len(), "rules loaded");
            rules
        }
        None => Rules::empty(),
    };
    let config = Arc::new(config);
    let tls = if config.https.enabled {
        Some(Arc::new(TlsShared::new(&config)?))
    } else {
        None
    };
    let hub = AdminHub::new();
    if let Some(tls) = &tls {
        hub.register_ca(tls.clone());
    }
    let mut registry = Registry::with_prefix("velocache");
    let http_proxy = (config.http.enabled || config.https.enabled).then(|| {
        let phases: Arc<dyn crate::http::Phases> = match &tls {
            Some(tls) => Arc::new(crate::tls::CaPage::new(
                tls.clone(),
                &config.tls.ca_page_host,
            )),
            None => Arc::new(crate::http::NoPhases),
        };
        crate::http::build_proxy(
            &config.http,
            &config.daemon.state_dir,
            rules.clone(),
            registry.sub_registry_with_prefix(Service::Http.name()),
            phases,
        )
    });
    if let Some(proxy) = &http_proxy {
        let https: Option<crate::http::HttpsOrigins> = tls.clone().map(|shared| {
            let timeouts = crate::tls::OriginTimeouts::from_config(&config.http);
            let make: crate::http::HttpsOrigins = Arc::new(move |dst, sni: &str| {
                crate::tls::origin_client(shared.clone(), dst, sni, timeouts)
            });
            make
        });
        hub.register_cache(Arc::new(crate::http::ProxyCacheAdmin::new(
            proxy.clone(),
            https,
        )));
    }
    let steering = config
        .https
        .enabled
        .then(|| crate::observe::Steering::new(rules.clone(), &config.tls.pinned_hosts));
    let ctx = ServiceContext {
        config: config.clone(),
        rules: rules.clone(),
        flows: FlowTracker::new(),
        tls,
        admin: hub.clone(),
        http_proxy,
        steering: steering.clone(),
    };
    let flows = ctx.flows.clone();
    let replier = Arc::new(UdpReplier::default());
    let cancel = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();

    for bound in bind_all(&config)? {
        let service = bound.intercept.service;
        let handlers = handlers_for(
            service,
            &ctx.for_service(service),
            registry.sub_registry_with_prefix(service.name()),
        )?;
        for listener in bound.tcp {
            tasks.spawn(serve_tcp(listener, handlers.tcp.clone(), cancel.clone()));
        }
        for socket in bound.udp {
            let (replier, handler, cancel) =
                (replier.clone(), handlers.udp.clone(), cancel.clone());
            match handlers.udp.runtime() {
                Some(runtime) => {
                    let served = runtime.spawn(async move {
                        match socket.into_current_runtime() {
                            Ok(socket) => serve_udp(socket, replier, handler, cancel).await,
                            Err(e) => error!(error = %e, "cannot move a UDP socket to its runtime"),
                        }
                    });
                    tasks.spawn(async move {
                        let _ = served.await;
                    });
                }
                None => {
                    tasks.spawn(serve_udp(socket, replier, handler, cancel));
                }
            }
        }
        info!(
            service = bound.intercept.service.name(),
            ports = ?bound.intercept.ports,
            listen_port = bound.intercept.listen_port,
            "service listening"
        );
    }
    let kernel_counters = Arc::new(OnceLock::new());
    crate::control::metrics::register_daemon_metrics(
        &mut registry,
        flows.clone(),
        kernel_counters.clone(),
        rules.clone(),
    );
    let plane_metrics = PlaneMetrics::register(&mut registry);
    // Bound before the datapath so that a socket problem stops start-up with nothing attached.
    let admin = AdminServer::bind(&config).await?;

    let mut datapath = if config.datapath.lan_interfaces.is_empty() {
        warn!("no [datapath] lan_interfaces configured: nothing will be intercepted");
        None
    } else {
        Some(Datapath::start(&config.datapath, &config.intercepts()).await?)
    };
    // TLS observation: until it is on, every TLS flow is steered (see `observe`).
    if let (Some(dp), Some(steering)) = (datapath.as_mut(), &steering)
        && let Some((maps, events)) = dp.take_tls()
    {
        let settings = crate::observe::ObserveSettings {
            steer_prefixes: config.tls.steer_prefixes.clone(),
            idle: Duration::from_secs(config.tls.observed_idle_timeout_secs),
        };
        tasks.spawn(crate::observe::Observer::start(
            maps,
            events,
            settings,
            rules.clone(),
            steering,
            cancel.clone(),
        ));
    }
    if let Some(dp) = &datapath {
        let _ = kernel_counters.set(dp.counters());
        let interval = config.daemon.stats_interval_secs;
        if interval > 0 {
            tasks.spawn(log_counters(
                dp.counters(),
                Duration::from_secs(interval),
                cancel.clone(),
            ));
        }
    }
    tasks.spawn(expire_reply_sockets(replier.clone(), cancel.clone()));
    let reaper = TimeWaitReaper::spawn(intercepted_tcp_ports(&config));

    let plane = ControlPlane::new(PlaneParts {
        config: config.clone(),
        config_file: launch.config_file,
        rules,
        flows: flows.clone(),
        hub,
        registry: Arc::new(registry),
        datapath,
        reaper: Some(reaper),
        log: launch.log,
        metrics: plane_metrics,
    });
    let admin_cancel = CancellationToken::new();
    let admin_task = tokio::spawn(admin.serve(plane.clone(), admin_cancel.clone()));
    let hangup_task = hangups.take().map(|mut hup| {
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

    let grace = Duration::from_secs(plane.config().daemon.shutdown_grace_secs);
    let left = flows.wait_idle(grace).await;
    if left > 0 {
        warn!(flows = left, "grace period over; remaining flows are cut");
    }
    if let Some(task) = hangup_task {
        task.abort();
    }
    if let Some(dp) = plane.take_datapath().await {
        if let Ok(snapshot) = dp.counters().snapshot() {
            log_snapshot(&snapshot);
        }
        dp.stop().await;
    }
    if let Some(reaper) = plane.take_reaper() {
        // Dropping joins the reaper thread (one period at most).
        let _ = tokio::task::spawn_blocking(move || drop(reaper)).await;
    }
    admin_cancel.cancel();
    let _ = admin_task.await;
    info!("velocache stopped");
    Ok(())
}

async fn log_counters(counters: Counters, every: Duration, cancel: CancellationToken) {
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

fn log_snapshot(s: &crate::datapath::CounterSnapshot) {
    for service in Service::ALL {
        let get = |v| s.get(service, v);
        use velocache_common::Verdict::*;
        let steered = get(SteeredListener) + get(SteeredEstablished);
        let passed = get(PassedNoListener)
            + get(AssignFailed)
            + get(Disabled)
            + get(PassedTimeWait)
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
            passed_no_listener = get(PassedNoListener),
            assign_failed = get(AssignFailed),
            passed_time_wait = get(PassedTimeWait),
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

async fn expire_reply_sockets(replier: Arc<UdpReplier>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => replier.expire_idle(Duration::from_secs(120)),
        }
    }
}
