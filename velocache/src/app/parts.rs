//! What the daemon's life is made of, beyond its configuration: how it was launched, the parts
//! [`super::run`] is handed (bound sockets, the services, the kernel side), and why it could
//! not start.
use std::path::PathBuf;

use prometheus_client::registry::Registry;
use thiserror::Error;

use super::Bound;
use crate::{
    admin::AdminHub,
    config::{Config, Transport},
    control::ControlError,
    datapath::{DatapathError, InstanceError, KernelStart, XdpOwner},
    plugins::Plugins,
    rules::{Rules, RulesError},
    service::{ServiceError, ServiceFactory},
    telemetry::LogControl,
    tls::TlsError,
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
    /// A service could not be built.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// How the daemon was launched, beyond its configuration.
#[derive(Default)]
pub struct Launch {
    /// The configuration file, re-read on reload (SIGHUP, `velocache service reload`).
    pub config_file: Option<PathBuf>,
    /// The log filter's reload handle (`[log] level` changes live).
    pub log: Option<LogControl>,
}

/// Builds the service factories once the rules and plugins are loaded (`services::factories`
/// in the daemon); they register what they share in the hub and their metrics in the registry.
pub type ServicesStart = Box<
    dyn FnOnce(
            &Config,
            &Rules,
            &Plugins,
            &AdminHub,
            &mut Registry,
        ) -> Result<Vec<Box<dyn ServiceFactory>>, AppError>
        + Send,
>;

/// What [`run`] is given rather than makes: the bound sockets, the services and the kernel
/// side.
pub struct Parts {
    /// Every enabled service's sockets, bound ([`bind_all`]).
    pub listeners: Vec<Bound>,
    /// The services.
    pub services: ServicesStart,
    /// The kernel side, started once the sockets are served.
    pub kernel: KernelStart,
    /// The XDP owner the services claim their slots from while they are built; the kernel side
    /// attaches what they claimed (`datapath::kernel` holds a clone).
    pub xdp: XdpOwner,
}
