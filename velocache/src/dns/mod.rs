//! DNS: a transparent caching forwarder for every client's queries (UDP and TCP 53).
//!
//! Clients keep their configured resolver. The classifier steers their queries to our
//! transparent sockets; we answer as the address they asked ([`UdpReplier`] sends from the
//! original destination; on TCP the accepted socket already is that address). Hits are
//! answered inline in the UDP receive loop; misses go to `[dns] upstreams` — or, when none are
//! configured, to the resolver the client asked, with answers cached per resolver.
//!
//! # Layout (in the order a query meets it)
//! - this file: the service — the UDP front end ([`UdpHandler`]), the TCP front end
//!   ([`TcpHandler`], framing in `tcp`), and [`handlers`], which builds it from the config.
//! - `handler`: the request-handler seam between front ends and the forwarder.
//! - `wire`: reading queries and answers, building small responses (hickory-proto decoder).
//! - `forwarder`: the cache-first request handler; rules; one log line per query; `local`: the
//!   answers it makes itself (denied names, the CA page's name, SERVFAIL when overloaded).
//! - `plugin_hook`: the WebAssembly plugins' `dns` hook, between the hit path and the rules
//!   (pass, answer, deny, rewrite); a plugin reload flushes the answers (and kernel copies).
//! - `cache`: the wire-format answer cache (TTL patching, negative caching, serve-stale).
//! - `admin`: `velocache dns flush` (the admin API's DNS capability).
//! - `kernel`: hot entries handed to the XDP `Dns` slot, answered in the kernel from then on;
//!   `kernel_task` starts it with the service (sweep, clear on reload, summaries, metrics).
//! - `resolve`: the miss path (collapsing, stale fallback, prefetch, verbatim forwarding).
//! - `upstream`: UDP/TCP/DoT exchanges, failover and health.
//! - `stats`: counters and latency histograms.
//! - `runtime`: the service's own single-threaded runtime for UDP.
//! - `steer`: around the forwarder, the addresses of answers for names a rule could act on go
//!   to TLS steering (`observe::Steering`), so connections to them reach the TLS service.
use std::{io, sync::Arc, time::Duration};

use prometheus_client::registry::Registry;
use thiserror::Error;

use crate::{
    config::Config,
    flow::FlowTracker,
    net::{Datagram, InterceptedTcp, TcpHandler, UdpHandler, UdpReplier},
    service::{Handlers, ServiceContext, ServiceError, ServiceFactory},
};

mod admin;
mod budget;
pub mod cache;
pub mod forwarder;
pub mod handler;
pub mod kernel;
mod kernel_task;
mod local;
mod plugin_hook;
mod resolve;
pub mod runtime;
pub mod stats;
pub mod steer;
pub mod tcp;
#[cfg(test)]
mod testutil;
pub mod upstream;
pub mod wire;

pub use cache::{AnswerCache, TtlPolicy};
pub use forwarder::{Forwarder, LocalName, Prefetch, Settings};
pub use handler::{Request, RequestHandler, Response, Transport};
pub use stats::DnsStats;
pub use upstream::{UpstreamPool, UpstreamSpec};

/// Why the DNS service could not start.
#[derive(Debug, Error)]
pub enum DnsError {
    /// The trust store for DNS-over-TLS upstreams could not be built.
    #[error("DNS-over-TLS roots: {0}")]
    TlsRoots(String),
    /// The DNS thread could not be started.
    #[error("cannot start the DNS thread: {0}")]
    Thread(#[source] io::Error),
}

/// The DNS service: both front ends over one request handler.
pub struct DnsService {
    handler: Arc<dyn RequestHandler>,
    stats: DnsStats,
    tcp_idle: Duration,
    runtime: Option<runtime::DnsRuntime>,
    /// Each UDP query and each TCP connection is a flow (for `stats` and graceful shutdown).
    flows: FlowTracker,
}

impl DnsService {
    /// A service answering through `handler`; UDP runs on `runtime` when given (else on the
    /// daemon's runtime).
    pub fn new(
        handler: Arc<dyn RequestHandler>,
        stats: DnsStats,
        tcp_idle: Duration,
        runtime: Option<runtime::DnsRuntime>,
        flows: FlowTracker,
    ) -> Self {
        DnsService {
            handler,
            stats,
            tcp_idle,
            runtime,
            flows,
        }
    }
}

impl UdpHandler for DnsService {
    fn runtime(&self) -> Option<tokio::runtime::Handle> {
        self.runtime.as_ref().map(|r| r.handle().clone())
    }

    fn on_datagram(&self, dgram: Datagram, replier: &Arc<UdpReplier>) {
        self.stats.queries_udp.inc();
        let flow = self.flows.start();
        let (from, to) = (dgram.orig_dst, dgram.client);
        let req = Request {
            bytes: dgram.data,
            client: to,
            orig_dst: from,
            transport: Transport::Udp,
        };
        match self.handler.handle(req) {
            // The hit path: answered from the receive loop, no task, no await.
            Response::Ready(answer) => match replier.try_send(from, to, &answer) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let replier = replier.clone();
                    tokio::spawn(async move {
                        if let Err(e) = replier.send(from, to, &answer).await {
                            tracing::debug!(client = %to, error = %e, "answer not sent");
                        }
                        drop(flow);
                    });
                }
                Err(e) => tracing::debug!(client = %to, error = %e, "answer not sent"),
            },
            Response::Pending(answer) => {
                let replier = replier.clone();
                tokio::spawn(async move {
                    if let Some(answer) = answer.await
                        && let Err(e) = replier.send(from, to, &answer).await
                    {
                        tracing::debug!(client = %to, error = %e, "answer not sent");
                    }
                    drop(flow);
                });
            }
            Response::Drop => {}
        }
    }
}

impl TcpHandler for DnsService {
    fn on_connection(&self, conn: InterceptedTcp) {
        let flow = self.flows.start();
        let served = tcp::serve_connection(
            self.handler.clone(),
            conn,
            self.tcp_idle,
            self.stats.queries_tcp.clone(),
        );
        tokio::spawn(async move {
            served.await;
            drop(flow);
        });
    }
}

/// Forwarder settings from `[dns]` (and, for the CA page's name, `[https]`/`[tls]`).
pub fn settings(full: &Config) -> Settings {
    let config = &full.dns;
    let local_name = if full.https.enabled {
        LocalName::new(&full.tls.ca_page_host, full.tls.ca_page_address)
    } else {
        None
    };
    Settings {
        policy: TtlPolicy {
            min_ttl: config.min_ttl,
            max_ttl: config.max_ttl,
            max_negative_ttl: config.max_negative_ttl,
        },
        stale_answer_ttl: config.stale_answer_ttl,
        prefetch: config.prefetch.then_some(Prefetch {
            min_hits: config.prefetch_min_hits,
            percent: u32::from(config.prefetch_percent),
        }),
        deny_answer: config.deny_answer,
        upstream_timeout: config.upstream_timeout_ms.get(),
        local_name,
    }
}

/// The DNS service, for the wiring.
pub fn factory() -> Box<dyn ServiceFactory> {
    Box::new(DnsFactory)
}

struct DnsFactory;

impl ServiceFactory for DnsFactory {
    fn service(&self) -> velocache_common::Service {
        velocache_common::Service::Dns
    }

    fn build(
        self: Box<Self>,
        ctx: &ServiceContext,
        registry: &mut Registry,
    ) -> Result<Handlers, ServiceError> {
        handlers(ctx, registry).map_err(|e| ServiceError::new(self.service(), e))
    }
}

/// Build the DNS service's handlers from the configuration; metrics go into `registry`.
pub fn handlers(ctx: &ServiceContext, registry: &mut Registry) -> Result<Handlers, DnsError> {
    let config = &ctx.config.dns;
    let stats = DnsStats::register(registry);
    let specs = config.upstreams.clone();
    let pool = if specs.is_empty() {
        tracing::info!(
            "dns: no upstreams configured; each query goes to the resolver its client asked"
        );
        None
    } else {
        let tls = if specs.iter().any(|s| matches!(s, UpstreamSpec::Tls { .. })) {
            Some(
                upstream::tls_client_config(&ctx.config.tls.extra_roots)
                    .map_err(DnsError::TlsRoots)?,
            )
        } else {
            None
        };
        Some(UpstreamPool::new(
            specs,
            config.upstream_timeout_ms.get(),
            tls,
            stats.dropped_replies.clone(),
        ))
    };
    let cache = AnswerCache::new(
        config.cache_max_entries,
        config.cache_max_bytes,
        config.serve_stale_secs.get(),
    );
    let forwarder = Forwarder::new(
        cache,
        pool,
        ctx.rules.clone(),
        settings(&ctx.config),
        stats.clone(),
        config.max_pending_queries as usize,
    );
    forwarder.set_plugins(ctx.plugins.clone());
    if let Some(live) = ctx.admin.live() {
        forwarder.set_live(live);
    }
    plugin_hook::flush_on_reload(&forwarder, ctx.plugins.subscribe());
    if config.kernel_answers {
        kernel_task::start(ctx, &forwarder, registry);
    }
    ctx.admin.register_dns(Arc::new(forwarder.clone()));
    let handler: Arc<dyn RequestHandler> = match &ctx.steering {
        Some(steering) => Arc::new(steer::SteeringHandler::new(
            Arc::new(forwarder),
            steering.clone(),
        )),
        None => Arc::new(forwarder),
    };
    let service = Arc::new(DnsService::new(
        handler,
        stats,
        config.tcp_idle_timeout_secs.get(),
        Some(runtime::DnsRuntime::start().map_err(DnsError::Thread)?),
        ctx.flows.clone(),
    ));
    Ok(Handlers {
        tcp: service.clone(),
        udp: service,
    })
}
