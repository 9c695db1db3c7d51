//! TCP streams on the ports plugins claim: the plugin service.
//!
//! A plugin whose manifest claims ports (`ports = [1080]`, the WIT interface `tcp`) gets every
//! connection a LAN client makes to such a port, whatever its destination address. The
//! classifier steers those ports like any service's (their entries in the kernel's port map come
//! from the plugins' claims, see `config::PortClaims`), the plugin service's transparent listener
//! accepts them, and [`PluginStreams`] hands each one to a session of the plugin that claims its
//! port, pinned to one instance for the stream's life.
//!
//! Data enters as an accepted connection (client, original destination) and, from then on, as
//! the bytes of the client and of the one upstream connection the plugin may open; each is an
//! event for the plugin (`driver`), whose commands say what is written where. It leaves as bytes
//! written to either side, or as a splice (`crate::passthrough`) once the plugin has seen what it
//! wanted, and as the stream's `flow` line, which carries the plugin's `tags`. A plugin that
//! fails (trap, time budget, memory cap: the runtime disables it) is treated as absent: the
//! stream is spliced to where it was going — its upstream if one is open, else the original
//! destination, with the client's bytes the plugin had not yet passed on replayed first.
//!
//! # Layout
//! - `session`: the seam to the plugin runtime ([`StreamPlugins`], [`StreamSession`]) and the
//!   events and commands of the WIT interface `tcp`.
//! - `driver`: one stream, event by event, with bounded queues (back-pressure).
//! - `host`: the plugin runtime (`crate::plugins`) as that seam.
//! - `metrics`: `velocache_plugin_streams_total{plugin,end}`.

mod driver;
mod host;
mod metrics;
mod session;

use std::{sync::Arc, time::Duration};

use prometheus_client::registry::Registry;
use tracing::{Instrument, info, info_span, warn};
use velocache_common::Service;

pub use driver::End;
pub use metrics::Metrics;
pub use session::{Command, Event, SessionError, StreamPlugins, StreamSession, Target};

use crate::{
    flow::FlowTracker,
    net::{InterceptedTcp, TcpHandler},
    passthrough::{UdpRelay, splice_to_origin},
    service::{Handlers, ServiceContext, ServiceError, ServiceFactory},
};

/// The plugin service, for the wiring: `plugins` is the live plugin set (`None`: the runtime
/// did not come up, so nothing is claimed and the listener idles).
pub fn factory(plugins: Option<Arc<dyn StreamPlugins>>) -> Box<dyn ServiceFactory> {
    Box::new(PluginFactory(plugins))
}

struct PluginFactory(Option<Arc<dyn StreamPlugins>>);

impl ServiceFactory for PluginFactory {
    fn service(&self) -> Service {
        Service::Plugin
    }

    fn build(
        self: Box<Self>,
        ctx: &ServiceContext,
        registry: &mut Registry,
    ) -> Result<Handlers, ServiceError> {
        let claimed = self.0.as_ref().map(|p| p.tcp_ports()).unwrap_or_default();
        let (accepted, refused) = ctx.config.admit_claims(claimed);
        for ((plugin, port), why) in &refused {
            warn!(service = "plugin", plugin = %plugin, port, reason = %why, "port claim refused");
        }
        info!(service = "plugin", claims = ?accepted, "plugin port claims");
        ctx.claims.set(accepted);
        let dp = &ctx.config.datapath;
        Ok(Handlers {
            tcp: Arc::new(PluginStreams {
                plugins: self.0,
                connect_timeout: dp.connect_timeout_ms.get(),
                flows: ctx.flows.clone(),
                metrics: Metrics::register(registry),
            }),
            // The service is TCP only; nothing is bound for UDP.
            udp: Arc::new(UdpRelay::new(
                Service::Plugin,
                dp.udp_idle_timeout_secs.get(),
                ctx.flows.clone(),
            )),
        })
    }
}

/// Hands each connection on a claimed port to a session of the plugin claiming it.
pub struct PluginStreams {
    plugins: Option<Arc<dyn StreamPlugins>>,
    connect_timeout: Duration,
    flows: FlowTracker,
    metrics: Metrics,
}

impl PluginStreams {
    /// A handler over `plugins`, connecting upstream within `connect_timeout`.
    pub fn new(
        plugins: Option<Arc<dyn StreamPlugins>>,
        connect_timeout: Duration,
        flows: FlowTracker,
        metrics: Metrics,
    ) -> Self {
        PluginStreams {
            plugins,
            connect_timeout,
            flows,
            metrics,
        }
    }
}

impl TcpHandler for PluginStreams {
    fn on_connection(&self, conn: InterceptedTcp) {
        let flow = self
            .flows
            .open(Service::Plugin, conn.client, conn.orig_dst, "tcp");
        let plugins = self.plugins.clone();
        let timeout = self.connect_timeout;
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            // The plugin set in force now: a reload between two connections gives the second
            // one the new instances, and the first keeps its own. (In the task, not the accept
            // loop: taking an instance may have to make one.)
            let port = conn.orig_dst.0.port();
            let session = plugins.as_ref().and_then(|p| p.tcp_session(port));
            match session {
                Some(session) => {
                    let plugin = session.plugin().to_string();
                    let span = info_span!("plugin stream", service = "plugin", plugin = %plugin,
                        client = %conn.client, orig_dst = %conn.orig_dst);
                    let end = driver::drive(session, conn, &flow, timeout)
                        .instrument(span)
                        .await;
                    metrics.ended(&plugin, end);
                }
                None => {
                    // The plugin is disabled or has every instance in use, or its claim went
                    // away with a reload while this connection was steered: go on as if no
                    // plugin had ever claimed the port.
                    flow.record("action", "passthrough");
                    flow.record("reason", "no live plugin for the port");
                    metrics.ended("", End::NoPlugin);
                    splice_to_origin(&flow, conn.stream, conn.orig_dst, &[], timeout).await;
                }
            }
        });
    }
}
