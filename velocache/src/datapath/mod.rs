//! The datapath: loads the kernel programs, fills their maps, attaches the LAN classifier and
//! installs the policy routing that makes steered packets local; and owns every XDP attachment
//! (`xdp`: one dispatcher per interface, chaining the programs services claimed slots for).
//!
//! Data enters as the `[datapath]` section plus the services' [`Intercept`]s; it leaves as a
//! running [`Datapath`] whose [`Counters`] handle can be read at any time (periodic log,
//! `velocache stats`, metrics). [`Datapath::stop`] detaches everything it attached and removes
//! every rule and route it added. If the process dies without `stop`, TCX links vanish with its
//! file descriptors; a netlink (clsact) attachment would survive, but the classifier then finds
//! no listener and passes every packet (fail-open), and the next start removes it.
//!
//! # Layout
//! - `maps`: writing configuration into the kernel maps, reading counters.
//! - `sysctl`: TCP early demux off, so forwarded packets are never held by the daemon's closing
//!   sockets.
//! - `sweep`: on a clean stop, destroying the sockets that hold intercepted addresses.
//! - `steering`: the `sk_lookup` program and the daemon's sockets it hands the kernel's own
//!   lookups to (ports reused while a closing socket holds them, reassembled datagrams).
//! - `routing`: the fwmark rule and local routes (rtnetlink).
//! - `firewall`: an accept rule for steered packets in the input firewall (nftables).
//! - `instance`: one daemon per network namespace.
//! - `inspect`: what is attached to the interfaces, for `velocache datapath show`.
//! - `observe`: the TLS ClientHello reader (the classifier's tail call) and the LAN egress
//!   counter of observed flows; their maps are read and filled by `crate::observe`.
//! - `xdp`: the XDP owner — the dispatcher, its slots, the programs and maps services claim.
//! - `kernel`: the kernel side as the daemon's life sees it: classifier and XDP together.

#[cfg(test)]
mod classifier_tests;
mod firewall;
mod inspect;
mod instance;
mod kernel;
mod maps;
mod observe;
#[cfg(test)]
mod observe_tests;
mod routing;
mod steering;
mod sweep;
mod sys;
mod sysctl;

use std::collections::HashSet;
pub mod xdp;

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        LinkOrder, ProgramError, SchedClassifier, TcAttachType,
        tc::{self, NlOptions, TcAttachOptions},
    },
    util::KernelVersion,
};
use thiserror::Error;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use velocache_common::CLASSIFIER_PROGRAM;

pub use inspect::{InterfaceAttachments, inspect};
pub use instance::{InstanceError, InstanceLock};
pub use maps::{CounterSnapshot, Counters};
pub use observe::{TlsEvents, TlsMaps};
pub use routing::{RoutingError, RoutingSpec};
pub use steering::DaemonSocket;
pub use sys::interface_driver;
pub(crate) use sys::{async_ring_buf, socket_cookie, tcp_bytes_taken};
pub use xdp::{SlotMaps, XdpError, XdpOwner, XdpSettings};

use std::sync::Arc;

use crate::config::{AttachMode, Config, DatapathConfig, Intercept, Transport};

/// The kernel object built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/velocache"));

/// What went wrong bringing the datapath up.
#[derive(Debug, Error)]
pub enum DatapathError {
    /// The object did not load (verifier rejection, missing BTF, no permission).
    #[error("loading the kernel programs failed: {0}")]
    Load(#[source] aya::EbpfError),
    /// A program is missing or could not be loaded into the kernel.
    #[error("kernel program `{name}`: {source}")]
    Program {
        /// Program name.
        name: &'static str,
        /// aya's error.
        #[source]
        source: ProgramError,
    },
    /// Attaching to an interface failed.
    #[error("attaching the classifier to `{interface}` failed: {source}")]
    Attach {
        /// Interface name.
        interface: String,
        /// aya's error.
        #[source]
        source: ProgramError,
    },
    /// A configured interface does not exist.
    #[error("LAN interface `{0}` does not exist")]
    NoSuchInterface(String),
    /// A map is missing or an update failed.
    #[error("kernel map `{name}`: {reason}")]
    Map {
        /// Map name.
        name: &'static str,
        /// What failed.
        reason: String,
    },
    /// Policy routing could not be installed.
    #[error(transparent)]
    Routing(#[from] RoutingError),
}

/// The kernel side as the daemon's lifecycle sees it: counters to read, maps to rewrite on a
/// reload, and a stop that detaches everything it attached. [`Datapath`] is the real one; tests
/// of the start, reload and shutdown order use a fake that records what it was asked.
pub trait Kernel: Send {
    /// The per-CPU counters, when there are kernel programs to count.
    fn counters(&self) -> Option<Counters>;
    /// Rewrite the maps from a new configuration without detaching.
    fn reconfigure(
        &mut self,
        cfg: &DatapathConfig,
        intercepts: &[Intercept],
    ) -> Result<(), DatapathError>;
    /// The TLS observation maps and event ring buffer, for the daemon's observer (once; `None`
    /// when there are none: every TLS flow is then steered).
    fn take_tls(&mut self) -> Option<(TlsMaps, TlsEvents)> {
        None
    }
    /// Detach and remove everything.
    fn stop(self: Box<Self>) -> futures::future::BoxFuture<'static, ()>;
}

/// Brings the kernel side up once the listeners are bound (`None`: nothing to attach). It is
/// given the services' interception settings (the configuration's, with the ports plugins
/// claimed) and duplicates of the daemon's sockets, to which the kernel's own lookups hand flows
/// (see [`DaemonSocket`]).
pub type KernelStart = Box<
    dyn FnOnce(
            Arc<Config>,
            Vec<Intercept>,
            Vec<DaemonSocket>,
        ) -> futures::future::BoxFuture<
            'static,
            Result<Option<Box<dyn Kernel>>, DatapathError>,
        > + Send,
>;

/// The real kernel side: [`Datapath::start`] on `[datapath] lan_interfaces` (nothing, with a
/// warning, when none are configured), then the XDP slots services claimed ([`XdpOwner::attach`]).
pub fn kernel(xdp: XdpOwner) -> KernelStart {
    Box::new(
        move |config: Arc<Config>, intercepts: Vec<Intercept>, sockets: Vec<DaemonSocket>| {
            Box::pin(async move {
                let classifier = if config.datapath.lan_interfaces.is_empty() {
                    warn!("no [datapath] lan_interfaces configured: nothing will be intercepted");
                    None
                } else {
                    Some(Datapath::start(&config.datapath, &intercepts, sockets).await?)
                };
                Ok(kernel::KernelSide::start(classifier, xdp))
            })
        },
    )
}

impl Kernel for Datapath {
    fn counters(&self) -> Option<Counters> {
        Some(Datapath::counters(self))
    }

    fn reconfigure(
        &mut self,
        cfg: &DatapathConfig,
        intercepts: &[Intercept],
    ) -> Result<(), DatapathError> {
        Datapath::reconfigure(self, cfg, intercepts)
    }

    fn take_tls(&mut self) -> Option<(TlsMaps, TlsEvents)> {
        Datapath::take_tls(self)
    }

    fn stop(self: Box<Self>) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(Datapath::stop(*self))
    }
}

/// The running datapath.
pub struct Datapath {
    ebpf: Ebpf,
    counters: Counters,
    routing: Option<routing::PolicyRouting>,
    firewall: Option<firewall::FirewallAccept>,
    log_task: Option<JoinHandle<()>>,
    interfaces: Vec<String>,
    /// The intercepted TCP ports, for the sweep at stop.
    tcp_ports: HashSet<u16>,
    early_demux: Option<sysctl::EarlyDemux>,
}

impl Datapath {
    /// Load, configure and attach. `sockets` are the daemon's bound listeners, which the
    /// kernel's own lookups may hand flows to (see `steering`). On error nothing stays attached
    /// or installed.
    pub async fn start(
        cfg: &DatapathConfig,
        intercepts: &[Intercept],
        sockets: Vec<DaemonSocket>,
    ) -> Result<Self, DatapathError> {
        for iface in &cfg.lan_interfaces {
            if nix::net::if_::if_nametoindex(iface.as_str()).is_err() {
                return Err(DatapathError::NoSuchInterface(iface.clone()));
            }
        }
        let (mut ebpf, counters) = load_object(cfg, intercepts)?;
        steering::register(&mut ebpf, sockets)?;
        let early_demux = Some(sysctl::EarlyDemux::disable());
        // Before the classifier: from the first steered tuple on, the kernel's lookups for it
        // must find the daemon's socket.
        steering::attach(&mut ebpf)?;
        let log_task = spawn_kernel_logger(&mut ebpf);

        // Policy routing first: from the first steered packet on, marked packets must be local.
        let routing = if cfg.lan_interfaces.is_empty() {
            None
        } else {
            Some(
                routing::PolicyRouting::install(RoutingSpec {
                    mark: cfg.mark,
                    table: cfg.route_table,
                    priority: cfg.rule_priority,
                })
                .await?,
            )
        };

        let firewall = (cfg.firewall_accept && !cfg.lan_interfaces.is_empty())
            .then(|| firewall::FirewallAccept::install(cfg.mark));
        let mut datapath = Datapath {
            ebpf,
            counters,
            routing,
            firewall,
            log_task,
            interfaces: Vec::new(),
            tcp_ports: tcp_ports(intercepts),
            early_demux,
        };
        for iface in &cfg.lan_interfaces {
            if let Err(e) = datapath.attach(iface, cfg.attach) {
                datapath.stop().await;
                return Err(e);
            }
        }
        info!(
            interfaces = ?datapath.interfaces,
            mark = cfg.mark,
            table = cfg.route_table,
            ipv6 = datapath.routing.as_ref().is_some_and(|r| r.ipv6()),
            tcp_listeners_per_port = listeners_per_port(),
            "datapath attached"
        );
        Ok(datapath)
    }

    fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<(), DatapathError> {
        // A netlink filter left by a daemon killed earlier would run in front of ours; it passes
        // everything (no listener of its own), but remove it so exactly one program decides.
        if tc::qdisc_detach_program(iface, TcAttachType::Ingress, CLASSIFIER_PROGRAM).is_ok() {
            info!(
                interface = iface,
                "removed a classifier left by a previous daemon"
            );
        }
        let tcx = match mode {
            AttachMode::Tcx => true,
            AttachMode::Netlink => false,
            // TCX arrived in 6.6.
            AttachMode::Auto => {
                KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
            }
        };
        let program: &mut SchedClassifier = self
            .ebpf
            .program_mut(CLASSIFIER_PROGRAM)
            .and_then(|p| p.try_into().ok())
            .ok_or(DatapathError::Program {
                name: CLASSIFIER_PROGRAM,
                source: ProgramError::UnexpectedProgramType,
            })?;
        let options = if tcx {
            TcAttachOptions::TcxOrder(LinkOrder::default())
        } else {
            if let Err(e) = tc::qdisc_add_clsact(iface) {
                // EEXIST: the qdisc is already there, which is fine.
                debug!(interface = iface, error = %e, "clsact qdisc not added");
            }
            TcAttachOptions::Netlink(NlOptions::default())
        };
        program
            .attach_with_options(iface, TcAttachType::Ingress, options)
            .map_err(|source| DatapathError::Attach {
                interface: iface.to_string(),
                source,
            })?;
        observe::attach_egress(&mut self.ebpf, iface, tcx)?;
        info!(
            interface = iface,
            mode = if tcx { "tcx" } else { "netlink" },
            "classifier attached"
        );
        self.interfaces.push(iface.to_string());
        Ok(())
    }

    /// The TLS observation maps and event ring buffer, for the daemon's observer (once; `None`
    /// afterwards or if they cannot be taken — TLS flows are then all steered, as before).
    pub fn take_tls(&mut self) -> Option<(TlsMaps, TlsEvents)> {
        match observe::take_maps(&mut self.ebpf) {
            Ok(m) => Some(m),
            Err(e) => {
                warn!(error = %e, "TLS observation unavailable: every TLS flow is steered");
                None
            }
        }
    }

    /// A cloneable handle to the per-CPU counters.
    pub fn counters(&self) -> Counters {
        self.counters.clone()
    }

    /// Rewrite the maps from a new configuration (bypass lists, ports, switches) without
    /// detaching: flows in progress are not disturbed.
    pub fn reconfigure(
        &mut self,
        cfg: &DatapathConfig,
        intercepts: &[Intercept],
    ) -> Result<(), DatapathError> {
        maps::apply(&mut self.ebpf, cfg, intercepts)?;
        // Sockets of ports no longer intercepted are still swept at stop: they hold addresses
        // nobody else may use.
        self.tcp_ports.extend(tcp_ports(intercepts));
        Ok(())
    }

    /// Stop intercepting: detach from every interface and remove the policy routing.
    pub async fn stop(mut self) {
        // Dropping the program's links detaches them (TCX and netlink alike).
        if let Some(program) = self.ebpf.program_mut(CLASSIFIER_PROGRAM) {
            let program: Result<&mut SchedClassifier, _> = program.try_into();
            if let Ok(program) = program
                && let Err(e) = program.unload()
            {
                warn!(error = %e, "unloading the classifier failed");
            }
        }
        if let Err(e) = observe::unload(&mut self.ebpf) {
            warn!(error = %e, "unloading the TLS egress counter failed");
        }
        steering::detach(&mut self.ebpf);
        let ports = std::mem::take(&mut self.tcp_ports);
        match tokio::task::spawn_blocking(move || sweep::sweep(&ports)).await {
            Ok(0) => {}
            Ok(n) => info!(sockets = n, "closed the sockets left by intercepted flows"),
            Err(e) => warn!(error = %e, "the socket sweep did not run"),
        }
        // After the sweep: no socket is left that early demux could attach to a forwarded packet.
        drop(self.early_demux.take());
        if let Some(routing) = self.routing.take() {
            routing.remove().await;
        }
        if let Some(fw) = self.firewall.take() {
            fw.remove();
        }
        if let Some(task) = self.log_task.take() {
            task.abort();
        }
        info!(interfaces = ?self.interfaces, "datapath detached");
    }
}

/// How many TCP listeners share each service's port (`SO_REUSEPORT`): one per CPU (at most 16)
/// where the kernel lets the classifier assign a packet to a listener of a reuseport group and
/// then picks the group's member itself (Linux 6.5), so connections are accepted on every core;
/// one listener on older kernels, whose `bpf_sk_assign` refuses reuseport listeners.
pub fn listeners_per_port() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 5, 0)) {
        cpus.min(16)
    } else {
        1
    }
}

/// The TCP destination ports `intercepts` steer.
fn tcp_ports(intercepts: &[Intercept]) -> HashSet<u16> {
    intercepts
        .iter()
        .filter(|i| i.enabled && i.transports.contains(&Transport::Tcp))
        .flat_map(|i| i.ports.iter().copied())
        .collect()
}

/// Load the object, fill its maps from the configuration and load (verify) the classifier,
/// without attaching anything.
fn load_object(
    cfg: &DatapathConfig,
    intercepts: &[Intercept],
) -> Result<(Ebpf, Counters), DatapathError> {
    let log_level = kernel_log_level();
    let mut ebpf = EbpfLoader::new()
        .override_global(aya_log::LEVEL, &log_level, false)
        .load(OBJECT)
        .map_err(DatapathError::Load)?;
    maps::apply(&mut ebpf, cfg, intercepts)?;
    let counters = Counters::take(&mut ebpf)?;
    observe::load(&mut ebpf)?;
    let program: &mut SchedClassifier = ebpf
        .program_mut(CLASSIFIER_PROGRAM)
        .ok_or(DatapathError::Program {
            name: CLASSIFIER_PROGRAM,
            source: ProgramError::UnexpectedProgramType,
        })?
        .try_into()
        .map_err(|source| DatapathError::Program {
            name: CLASSIFIER_PROGRAM,
            source,
        })?;
    program.load().map_err(|source| DatapathError::Program {
        name: CLASSIFIER_PROGRAM,
        source,
    })?;
    steering::load(&mut ebpf)?;
    Ok((ebpf, counters))
}

/// The aya-log level matching the daemon's own filter, so disabled kernel log statements cost
/// one comparison instead of a ring-buffer write.
fn kernel_log_level() -> u8 {
    match log::max_level() {
        log::LevelFilter::Off => 0,
        log::LevelFilter::Error => aya_log::Level::Error as u8,
        log::LevelFilter::Warn => aya_log::Level::Warn as u8,
        log::LevelFilter::Info => aya_log::Level::Info as u8,
        log::LevelFilter::Debug => aya_log::Level::Debug as u8,
        log::LevelFilter::Trace => aya_log::Level::Trace as u8,
    }
}

/// Forward the kernel programs' aya-log records into our log (they arrive through the `log`
/// facade, which `tracing-log` bridges). The logger owns the ring buffer's fd; the task keeps it.
fn spawn_kernel_logger(ebpf: &mut Ebpf) -> Option<JoinHandle<()>> {
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(l) => l,
        Err(e) => {
            debug!(error = %e, "kernel programs have no log map");
            return None;
        }
    };
    let mut fd = match sys::async_kernel_logger(logger) {
        Ok(fd) => fd,
        Err(e) => {
            warn!(error = %e, "cannot poll the kernel log ring buffer");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        loop {
            match fd.readable_mut().await {
                Ok(mut guard) => {
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
                Err(e) => {
                    warn!(error = %e, "kernel log reader stopped");
                    return;
                }
            }
        }
    }))
}
