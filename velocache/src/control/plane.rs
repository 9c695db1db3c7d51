//! [`ControlPlane`]: the daemon state the admin API reads and acts on, built once by the wiring
//! after every service is up.
use std::{
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
    time::Instant,
};

use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use super::{metrics::PlaneMetrics, warmup::Warmup};
use crate::{
    admin::{
        api::{AdminListeners, ReloadReport},
        seams::AdminHub,
    },
    config::{Config, PortClaims},
    datapath::Kernel,
    flow::FlowTracker,
    rules::Rules,
    telemetry::LogControl,
};

/// What the wiring hands the control plane.
pub struct PlaneParts {
    /// The configuration the services were built with.
    pub config: Arc<Config>,
    /// The file it came from (re-read on reload), if any.
    pub config_file: Option<PathBuf>,
    /// The live rules.
    pub rules: Rules,
    /// Flows in progress.
    pub flows: FlowTracker,
    /// What services registered for the admin API.
    pub hub: AdminHub,
    /// The TCP ports plugins claim (the plugin service's ports in the kernel map).
    pub claims: PortClaims,
    /// The metrics registry, complete (services and daemon-wide collectors registered).
    pub registry: Arc<Registry>,
    /// The datapath, if one runs (reconfigured on reload, taken back at shutdown).
    pub datapath: Option<Box<dyn Kernel>>,
    /// Changes the log filter on reload (none in tests that install no subscriber).
    pub log: Option<LogControl>,
    /// Metrics the control plane updates, registered before the registry was frozen.
    pub metrics: PlaneMetrics,
}

/// The daemon as the admin API sees it.
pub struct ControlPlane {
    pub(super) started: Instant,
    /// The configuration the services were built with: restart-only settings are compared to it.
    pub(super) boot: Arc<Config>,
    /// The configuration in force: `boot` plus every setting applied live since.
    pub(super) running: ArcSwap<Config>,
    pub(super) config_file: Option<PathBuf>,
    pub(super) rules: Rules,
    pub(super) flows: FlowTracker,
    pub(super) hub: AdminHub,
    pub(super) claims: PortClaims,
    pub(super) registry: Arc<Registry>,
    pub(super) datapath: tokio::sync::Mutex<Option<Box<dyn Kernel>>>,
    pub(super) log: Option<LogControl>,
    pub(super) warmup: Arc<Warmup>,
    pub(super) metrics: PlaneMetrics,
    /// One reload at a time (SIGHUP and the API may race).
    pub(super) reload_lock: tokio::sync::Mutex<()>,
    pub(super) last_reload: Mutex<Option<ReloadReport>>,
    pub(super) restart_required: Mutex<Vec<String>>,
    pub(super) stop: CancellationToken,
    pub(super) listeners: OnceLock<AdminListeners>,
}

impl ControlPlane {
    /// Assemble the control plane.
    pub fn new(parts: PlaneParts) -> Arc<Self> {
        let warmup = Arc::new(Warmup::new(parts.hub.clone(), parts.metrics.clone()));
        Arc::new(ControlPlane {
            started: Instant::now(),
            running: ArcSwap::new(parts.config.clone()),
            boot: parts.config,
            config_file: parts.config_file,
            rules: parts.rules,
            flows: parts.flows,
            hub: parts.hub,
            claims: parts.claims,
            registry: parts.registry,
            datapath: tokio::sync::Mutex::new(parts.datapath),
            log: parts.log,
            warmup,
            metrics: parts.metrics,
            reload_lock: tokio::sync::Mutex::new(()),
            last_reload: Mutex::new(None),
            restart_required: Mutex::new(Vec::new()),
            stop: CancellationToken::new(),
            listeners: OnceLock::new(),
        })
    }

    /// What services offer the admin API (the live feed among them).
    pub fn hub(&self) -> &AdminHub {
        &self.hub
    }

    /// The configuration in force (start-up configuration plus live changes).
    pub fn config(&self) -> Arc<Config> {
        self.running.load_full()
    }

    /// Resolves when a stop was requested through the API (`service stop`).
    pub async fn stop_requested(&self) {
        self.stop.cancelled().await;
    }

    /// Ask the daemon to stop, as SIGTERM does.
    pub fn request_stop(&self) {
        self.stop.cancel();
    }

    /// Whether the daemon is shutting down.
    pub fn stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Take the datapath back for shutdown (reloads then no longer touch it).
    pub async fn take_datapath(&self) -> Option<Box<dyn Kernel>> {
        self.datapath.lock().await.take()
    }

    /// The warm-up runner.
    pub fn warmup(&self) -> &Arc<Warmup> {
        &self.warmup
    }

    /// Start warming the rules' `warmup_urls` in the background (at start-up).
    pub fn warm_rules_urls(&self) {
        let urls = self.rules.current().warmup_urls.clone();
        if urls.is_empty() {
            return;
        }
        self.warmup.spawn(urls, "start-up");
    }
}
