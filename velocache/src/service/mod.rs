//! The service seam: how a service (HTTP, HTTPS, DNS, SIP, plugins' TCP ports) plugs into the
//! daemon without the wiring knowing what it does.
//!
//! A service is a [`ServiceFactory`]. At start-up the wiring (`crate::app`) hands each
//! factory a [`ServiceContext`] — the configuration, the live rules, the flow tracker, the admin
//! hub, the XDP owner, the plugins — and the service's own metrics sub-registry; the factory returns its [`Handlers`], the
//! [`TcpHandler`] and [`UdpHandler`] the accept and receive loops of `crate::net` feed with
//! intercepted connections and datagrams. What a service offers the admin API it registers in
//! the hub (`crate::admin`) while it is built; a kernel program it runs at XDP it claims from the
//! XDP owner then too, getting the program's maps at once (attached when the kernel side starts).
//! A service with nothing of its own passes its flows through ([`ServiceContext::passthrough`]).
//!
//! Nothing here names a concrete service, so every service depends on this module and this
//! module on none of them.
use std::sync::Arc;

use prometheus_client::registry::Registry;
use thiserror::Error;
use velocache_common::Service;

use crate::{
    admin::AdminHub,
    config::{Config, PortClaims},
    datapath::XdpOwner,
    flow::FlowTracker,
    net::{TcpHandler, UdpHandler},
    passthrough::{TcpSplice, UdpRelay},
    plugins::Plugins,
    rules::Rules,
};

/// The handlers of one service.
pub struct Handlers {
    /// For the service's TCP listeners.
    pub tcp: Arc<dyn TcpHandler>,
    /// For the service's UDP sockets.
    pub udp: Arc<dyn UdpHandler>,
}

/// What every service may use while it is built and while it runs.
#[derive(Clone)]
pub struct ServiceContext {
    /// The whole configuration.
    pub config: Arc<Config>,
    /// The operator's rules; reloads swap them under every service at once.
    pub rules: Rules,
    /// Flows in progress (a [`FlowTracker::scoped`] view counting for the service being built).
    pub flows: FlowTracker,
    /// Where a service registers what it offers the admin API beyond metrics: the HTTP cache
    /// (`cache …`, warm-up), the SIP observer (`calls`), the local CA (`ca …`). Until one
    /// registers, the API answers "not available" for it.
    pub admin: AdminHub,
    /// Which TLS destinations are steered (HTTPS enabled): the DNS service writes the addresses
    /// of answers for names a rule could act on into it; the observer gives it the kernel maps.
    pub steering: Option<crate::observe::Steering>,
    /// The one owner of XDP on the interfaces: a service claims its slot here while it is
    /// built (the RTP fast path); the dispatcher is attached when the kernel side starts.
    pub xdp: XdpOwner,
    /// The TCP ports plugins claim: the plugin service sets them while it is built (and again
    /// when the plugins are reloaded); the kernel's port map is written from them.
    pub claims: PortClaims,
    /// The WebAssembly plugins (`[plugins] dir`): services call their hooks; a reload swaps
    /// the set under every service at once.
    pub plugins: Plugins,
}

impl ServiceContext {
    /// The context handed to `service`'s factory: the same everything, with a flow tracker
    /// that also counts the service's flows (`velocache_active_sessions{service}`).
    pub fn for_service(&self, service: Service) -> ServiceContext {
        ServiceContext {
            flows: self.flows.scoped(service),
            ..self.clone()
        }
    }

    /// Pass-through handlers for `service`: splice TCP, relay UDP, with the `[datapath]`
    /// connect timeout and UDP idle time.
    pub fn passthrough(&self, service: Service) -> Handlers {
        let dp = &self.config.datapath;
        Handlers {
            tcp: Arc::new(TcpSplice::new(
                service,
                dp.connect_timeout_ms.get(),
                self.flows.clone(),
            )),
            udp: Arc::new(UdpRelay::new(
                service,
                dp.udp_idle_timeout_secs.get(),
                self.flows.clone(),
            )),
        }
    }
}

/// Why a service could not be built.
#[derive(Debug, Error)]
#[error("the {service} service cannot start: {source}")]
pub struct ServiceError {
    /// Which service.
    pub service: &'static str,
    /// Its own error.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl ServiceError {
    /// `service` failed with `source`.
    pub fn new(
        service: Service,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        ServiceError {
            service: service.name(),
            source: source.into(),
        }
    }
}

/// One service, before it is built.
pub trait ServiceFactory: Send {
    /// Which service this is (its ports, listeners and metrics namespace).
    fn service(&self) -> Service;

    /// Build the handlers; `registry` is the service's own metrics namespace
    /// (`velocache_<service>_…`).
    fn build(
        self: Box<Self>,
        ctx: &ServiceContext,
        registry: &mut Registry,
    ) -> Result<Handlers, ServiceError>;
}

/// A service that only passes its flows through (a service whose own handler is off).
pub struct Passthrough(pub Service);

impl ServiceFactory for Passthrough {
    fn service(&self) -> Service {
        self.0
    }

    fn build(
        self: Box<Self>,
        ctx: &ServiceContext,
        _registry: &mut Registry,
    ) -> Result<Handlers, ServiceError> {
        Ok(ctx.passthrough(self.0))
    }
}
