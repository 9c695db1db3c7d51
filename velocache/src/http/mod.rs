//! The transparent HTTP caching proxy, for intercepted TCP 80 and — through
//! [`serve_decrypted`] — for HTTPS the TLS layer has decrypted. Clients speak HTTP/1.1 (and 1.0)
//! on plain connections, and HTTP/1.1 or HTTP/2 (as ALPN chose) on decrypted ones; plain origins
//! get HTTP/1.1, and HTTPS origins what they chose by ALPN (the TLS layer's [`OriginClient`]).
//!
//! A connection enters as any `AsyncRead + AsyncWrite` stream with its scheme, protocol,
//! [`ClientAddr`] and [`OrigDstAddr`]; hyper parses its requests; `proxy` runs each through the
//! phase chain in a fixed order — framing checks, `request_filter` phases (the CA page, the
//! rules), the cache path (`cached`, over `crate::cache`) or a plain forward, both sending to the
//! original destination through the fetcher (`fetch`: the upstream phases, the upstream pool),
//! `response_filter` phases — and the request leaves as a response whose body streams from the
//! origin, the disk or RAM. When the body ends, the request's metrics, its JSON access-log line
//! and the `logging` phases are written.
//!
//! # Layout, top to bottom (each file uses only those below it)
//! - `admin`: the cache as the admin API sees it (list, show, purge, warm).
//! - `proxy`: [`Proxy`] — connections, and the order of the phases.
//! - `plugin_phase`: the WebAssembly plugins' `http` hook, the phase right before the rules.
//! - `rule_phase`: the rules as a phase (deny, `ttl_override`, key options, content types);
//!   `fault`: the rules' fault injection (delay, abort, bandwidth) as the phase after it;
//!   `anomaly`: per-origin baselines and never-seen request shapes, from the logging hook;
//!   `record`: one host's requests and responses to a HAR file (`har`: the format).
//! - `cached`: the cache path — lookup, hit, revalidation, miss, collapsed forwarding — from a
//!   request and a fetcher to an outcome; `serve`: answers from stored objects (304, 206/416,
//!   HEAD, RAM tier) and missing-slice fetches; `store`: the cache, its lock and settings.
//! - `ghost`: ghost mode — learning good answers (a phase with a body tap) and answering with
//!   them when a ghost rule's origin fails.
//! - `fetch`: the fetcher, the one way to the origin (asking the origin's breaker first); `upstream`: origin connections;
//!   `upgrade`: WebSocket and `CONNECT` tunnels.
//! - `phase`: the [`Phase`] trait and the chain that runs phases in order.
//! - `framing`: where a request ends — `Host`/`Expect` checks, upstream framing recomputed from
//!   the body actually sent, client body errors told apart from the origin's.
//! - `headers`: hop-by-hop, `Via`, `Host` checks; `hostnames`: the background DNS check;
//!   `interim`: the origin's 1xx heads relayed to HTTP/1 clients through their stream.
//! - `ctx`, `metrics`, `body`, `answer`, `error`, `metered`: per-request state and its log
//!   line, counters, bodies, the gateway's own answers, errors, byte counts; `sendfile`: plain
//!   HTTP/1.1 connections that send cache hits' bodies from the slice files.

mod admin;
mod anomaly;
mod answer;
mod body;
mod cached;
mod ctx;
mod error;
mod fault;
mod fetch;
mod framing;
mod ghost;
pub mod har;
mod headers;
mod hostnames;
mod interim;
pub mod live_phase;
mod metrics;
mod phase;
mod plugin_phase;
mod proxy;
mod record;
mod rule_phase;
mod sendfile;
mod serve;
mod store;
mod upgrade;
mod upstream;

use std::sync::Arc;

use http::HeaderValue;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

pub use admin::{HttpsOrigins, ProxyCacheAdmin};
pub use anomaly::{AnomalyPhase, path_template};
pub use body::Body;
pub use ctx::{CacheDecision, CacheStatus, ClientProtocol, Conn, Ctx, RequestEnd, Scheme, Timings};
pub use error::{ProxyError, Side};
pub use framing::{Refusal, check_request, frame_upstream};
pub use headers::{check_host, strip_hop_by_hop};
pub use phase::{BodyTap, Phase, Step, Verdict};
pub use plugin_phase::PluginPhase;
pub use proxy::{Proxy, Settings};
pub use record::Recorder;

/// `record start`'s defaults (the CLI shows them).
pub mod record_defaults {
    pub use super::record::{DEFAULT_BODY_CAP as BODY_CAP, DEFAULT_MAX_ENTRIES as MAX_ENTRIES};
}
pub use upstream::{OriginClient, Upstream};

use crate::{
    cache::{
        DiskStorage, Storage,
        lock::{CacheLock, Fills},
        policy::Heuristic,
        shared::{SharedLock, Tier, TieredStorage},
    },
    config::HttpConfig,
    flow::{FlowGuard, FlowTracker, Metered},
    net::{InterceptedTcp, TcpHandler},
    origins::Origins,
    service::{Handlers, ServiceContext, ServiceError, ServiceFactory},
};

/// Build the proxy from `[http]`: the disk store (or none, when `cache = false` or the store
/// cannot be opened — then the proxy forwards without storing) with the shared tier behind it
/// when `[shared]` configures one, the upstream pool, metrics. `phases` run in this order
/// before the rules (the CA page, the recorder, the plugins).
pub fn build_proxy(
    config: &HttpConfig,
    state_dir: &std::path::Path,
    rules: crate::rules::Rules,
    origins: Arc<Origins>,
    registry: &mut Registry,
    phases: Vec<Arc<dyn Phase>>,
    tier: Option<Arc<Tier>>,
) -> Arc<Proxy> {
    let cache: Option<Arc<dyn Storage>> = if config.cache {
        let dir = config
            .cache_dir
            .clone()
            .unwrap_or_else(|| state_dir.join("http-cache"));
        match DiskStorage::open(
            &dir,
            config.cache_max_bytes,
            config.uring_entries,
            config.fsync,
        ) {
            Ok(store) => Some(store),
            Err(e) => {
                warn!(service = "http", cache_dir = %dir.display(), error = %e,
                    "the disk cache cannot be opened; proxying without storing");
                None
            }
        }
    } else {
        info!(service = "http", "caching is off ([http] cache = false)");
        None
    };
    let store = match (cache, tier) {
        (Some(local), Some(tier)) => {
            let tiered = TieredStorage::new(local, tier);
            let lock = SharedLock::new(
                Fills::new(config.lock_age_ms.get()),
                &tiered,
                config.lock_age_ms.get(),
                config.lock_wait_ms.get(),
            );
            let storage: Arc<dyn Storage> = Arc::new(tiered.clone());
            let lock: Arc<dyn CacheLock> = lock;
            Some((storage, lock, Some(tiered)))
        }
        (Some(local), None) => {
            let lock: Arc<dyn CacheLock> = Fills::new(config.lock_age_ms.get());
            Some((local, lock, None))
        }
        (None, _) => None,
    };
    proxy_with(config, store, rules, origins, registry, phases)
}

/// A store, its lock, and the shared tier behind it if any.
type Store = (
    Arc<dyn Storage>,
    Arc<dyn CacheLock>,
    Option<Arc<TieredStorage>>,
);

/// Build the proxy over a given store (`None`: never store); `phases` run before the rules;
/// requests ask and tell `origins` (health, breakers).
pub fn proxy_with_storage(
    config: &HttpConfig,
    storage: Option<Arc<dyn Storage>>,
    rules: crate::rules::Rules,
    origins: Arc<Origins>,
    registry: &mut Registry,
    phases: Vec<Arc<dyn Phase>>,
) -> Arc<Proxy> {
    let store = storage.map(|s| {
        let lock: Arc<dyn CacheLock> = Fills::new(config.lock_age_ms.get());
        (s, lock, None)
    });
    proxy_with(config, store, rules, origins, registry, phases)
}

fn proxy_with(
    config: &HttpConfig,
    store: Option<Store>,
    rules: crate::rules::Rules,
    origins: Arc<Origins>,
    registry: &mut Registry,
    mut phases: Vec<Arc<dyn Phase>>,
) -> Arc<Proxy> {
    let metrics = Arc::new(metrics::Metrics::register(registry));
    let via = HeaderValue::from_str(&config.via)
        .unwrap_or_else(|_| HeaderValue::from_static("velocache"));
    let cache = store.map(|(storage, lock, shared)| {
        let cache = store::HttpCache::new(
            storage,
            lock,
            config.memory_cache_bytes,
            store::CacheSettings {
                via: via.clone(),
                lock_wait: config.lock_wait_ms.get(),
                max_object_bytes: config.max_object_bytes,
                slice_bytes: config.slice_bytes,
                memory_object_max_bytes: config.memory_object_max_bytes,
                heuristic: Heuristic {
                    percent: config.heuristic_percent,
                    max_secs: config.heuristic_max_secs.0,
                },
                stale_if_error_default: config.stale_if_error_default_secs.0,
            },
            metrics.clone(),
        );
        Arc::new(match shared {
            Some(shared) => cache.with_shared(shared),
            None => cache,
        })
    });
    phases.push(Arc::new(rule_phase::RulesPhase::new(rules.clone())));
    // After the rules: it learns for the requests a `ghost = true` rule matched.
    phases.push(Arc::new(ghost::GhostPhase::new(origins.clone())));
    // After the rules: a fault belongs to the rule that decided the request.
    phases.push(Arc::new(fault::FaultPhase::new(rules.clone(), registry)));
    Arc::new(Proxy::new(
        Settings {
            via,
            header_read_timeout: config.header_read_timeout_ms.get(),
            sendfile: config.sendfile,
            connect_timeout: config.connect_timeout_ms.get(),
        },
        phase::Chain::new(phases),
        rules,
        cache,
        Arc::new(upstream::Upstream::new(
            config.connect_timeout_ms.get(),
            config.upstream_idle_secs.get(),
            config.response_timeout_ms.get(),
        )),
        origins,
        metrics,
    ))
}

/// The HTTP service (TCP 80), around the daemon's one proxy — which the HTTPS service shares,
/// so both fill and read the same cache. Without a proxy, flows pass through.
pub fn factory(proxy: Option<Arc<Proxy>>) -> Box<dyn ServiceFactory> {
    Box::new(HttpFactory { proxy })
}

struct HttpFactory {
    proxy: Option<Arc<Proxy>>,
}

impl ServiceFactory for HttpFactory {
    fn service(&self) -> velocache_common::Service {
        velocache_common::Service::Http
    }

    fn build(
        self: Box<Self>,
        ctx: &ServiceContext,
        _registry: &mut Registry,
    ) -> Result<Handlers, ServiceError> {
        Ok(match self.proxy {
            Some(proxy) => handlers(ctx, proxy),
            None => ctx.passthrough(velocache_common::Service::Http),
        })
    }
}

/// The HTTP service's handlers around `proxy`.
pub fn handlers(ctx: &ServiceContext, proxy: Arc<Proxy>) -> Handlers {
    Handlers {
        tcp: Arc::new(HttpService {
            proxy,
            flows: ctx.flows.clone(),
        }),
        udp: ctx.passthrough(velocache_common::Service::Http).udp,
    }
}

/// Intercepted TCP 80 connections into the proxy.
pub struct HttpService {
    proxy: Arc<Proxy>,
    flows: FlowTracker,
}

/// Serve a connection the TLS layer has decrypted: `proxy` is the daemon's proxy bound to
/// an origin client that speaks TLS to the original destination ([`Proxy::with_origin`]);
/// the bytes are counted into `flow`, whose line the TLS layer's connection writes.
pub async fn serve_decrypted<S>(
    proxy: Arc<Proxy>,
    io: S,
    conn: Conn,
    protocol: ClientProtocol,
    flow: &FlowGuard,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    serve_counted(proxy, io, conn, protocol, flow, None).await;
}

/// Serve a connection, counting its bytes into `flow` and saying which protocol it spoke;
/// `sendfile`: the connection is a [`sendfile::SendfileIo`].
async fn serve_counted<S>(
    proxy: Arc<Proxy>,
    io: S,
    conn: Conn,
    protocol: ClientProtocol,
    flow: &FlowGuard,
    sendfile: Option<sendfile::SendfileConn>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    flow.record("protocol", protocol.alpn());
    proxy
        .serve_with(Metered::new(io, flow.counts()), conn, protocol, sendfile)
        .await;
}

impl TcpHandler for HttpService {
    fn on_connection(&self, conn: InterceptedTcp) {
        let InterceptedTcp {
            stream,
            client,
            orig_dst,
        } = conn;
        let flow = self
            .flows
            .open(velocache_common::Service::Http, client, orig_dst, "tcp");
        let proxy = self.proxy.clone();
        tokio::spawn(async move {
            let conn = Conn {
                scheme: Scheme::Http,
                client,
                orig_dst,
            };
            if proxy.sendfile() {
                // Plain TCP: cache hits' bodies can go out with sendfile.
                let (io, files) = sendfile::SendfileIo::new(stream, proxy.sendfile_counter());
                serve_counted(proxy, io, conn, ClientProtocol::Http1, &flow, Some(files)).await;
            } else {
                serve_counted(proxy, stream, conn, ClientProtocol::Http1, &flow, None).await;
            }
        });
    }
}

#[cfg(test)]
mod framing_tests;
#[cfg(test)]
mod ghost_tests;
#[cfg(test)]
mod origin_tests;
#[cfg(test)]
mod phase_tests;
#[cfg(test)]
mod record_tests;
#[cfg(test)]
mod sendfile_tests;
#[cfg(test)]
mod stale_tests;
#[cfg(test)]
mod test_harness;
#[cfg(test)]
mod tests;
