//! HTTPS: SNI splice by default, interception with generated certificates where a rule asks.
//!
//! Only TLS connections a rule could act on are steered here (see `observe`: the others are
//! forwarded and observed by the kernel); each one enters [`TlsService`]. Its first flight is read and
//! parsed without answering (`hello`); the SNI and ALPN go into the connection's log line.
//! Then, by the rules (`RuleSet::tls_decision`) and the pinning policy (`pinning`):
//! - **passthrough** (the default, and anything unparsable): the buffered bytes and the rest of
//!   the connection are spliced to the original destination, never decrypted — the two sockets
//!   joined in the kernel (`passthrough::KernelRelay`, sockmap) or with `splice(2)`;
//! - **deny**: the connection is reset and logged;
//! - **intercept**: the client gets a certificate for its SNI minted by the local CA (`ca`,
//!   `certs`) and its requests go through the daemon's HTTP proxy and cache, which reaches the
//!   original destination over TLS verified like a browser would (`upstream`, `origin`);
//!   `cache` rules complete the client's handshake first (hits need no origin), others verify
//!   the origin first (`intercept`). An origin that fails verification is never hidden: the
//!   client gets a 502 naming the reason or a TLS alert, and a log line.
//!   A client that rejects our certificate is remembered as pinning that host (`pinning`).
//!
//! # Layout
//! - `hello`: reading and parsing the ClientHello; `prefixed`: replaying it.
//! - `ca`: the local CA (generate, load, rotate, export); `certs`: leaf certificates.
//! - `upstream`: trust and configuration for connections to origins; `origin`: the proxy's
//!   origin client for decrypted connections (always the original destination, the SNI).
//! - `pinning`: hosts never intercepted.
//! - `capage`: the plain-HTTP page that hands out the CA certificate (a proxy phase; the DNS
//!   service answers its name).
//! - `intercept`: the decrypting path.

mod ca;
mod capage;
mod certs;
mod hello;
mod intercept;
mod origin;
mod pinning;
mod prefixed;
mod upstream;

use std::{path::PathBuf, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use thiserror::Error;
use tokio::net::TcpStream;
use tracing::{Instrument as _, info, info_span, warn};
use velocache_common::Service;

pub use ca::CertificateAuthority;
pub use capage::{CaPage, CaPageResponse, ca_page};
pub use certs::LeafCerts;
pub use hello::{Hello, parse_first_flight, read_client_hello};
pub use origin::{OriginTimeouts, OriginTlsError};
pub use prefixed::Prefixed;

use crate::{
    admin::{AdminError, CaAdmin},
    config::Config,
    flow::FlowGuard,
    net::{ClientAddr, InterceptedTcp, OrigDstAddr, TcpHandler},
    passthrough::{KernelRelay, splice_to_origin_with},
    rules::{Rules, TlsDecision},
    service::{Handlers, ServiceContext, ServiceError, ServiceFactory},
};

/// What can go wrong in the TLS layer.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A CA file could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    CaFile {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The CA could not be built or used.
    #[error("local CA: {0}")]
    Ca(String),
    /// The upstream trust store could not be built.
    #[error("upstream roots: {0}")]
    Roots(String),
}

/// The CA and its leaf certificates; swapped whole on rotation.
pub struct Authority {
    /// The CA.
    pub ca: Arc<CertificateAuthority>,
    /// Leaves it signed.
    pub leaves: LeafCerts,
}

/// State shared by every TLS connection (and by the admin API: CA export and rotation).
pub struct TlsShared {
    authority: ArcSwap<Authority>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    upstream: upstream::UpstreamTls,
    pinning: pinning::Pinning,
    ca_dir: PathBuf,
    leaf_entries: u64,
    leaf_days: u32,
    /// How long an origin has to accept the TCP connection of a decrypted flow
    /// (`[http] connect_timeout_ms`, as for plain HTTP origins).
    origin_connect_timeout: Duration,
    /// Server configurations of intercepted connections, by ALPN offer (`intercept`).
    server_configs:
        parking_lot::Mutex<std::collections::HashMap<Vec<Vec<u8>>, Arc<rustls::ServerConfig>>>,
}

impl TlsShared {
    /// Load (or create) the CA and build the upstream trust store.
    pub fn new(config: &Config) -> Result<Self, TlsError> {
        let tls = &config.tls;
        let ca_dir = tls
            .ca_dir
            .clone()
            .unwrap_or_else(|| config.daemon.state_dir.join("ca"));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ca = Arc::new(CertificateAuthority::load_or_create(&ca_dir)?);
        let leaves = LeafCerts::new(
            ca.clone(),
            provider.clone(),
            tls.leaf_cache_entries,
            tls.leaf_validity_days,
        );
        let upstream = upstream::UpstreamTls::new(provider.clone(), &tls.extra_roots)?;
        info!(ca_dir = %ca_dir.display(), upstream_roots = upstream.roots, "TLS ready");
        Ok(TlsShared {
            authority: ArcSwap::from_pointee(Authority { ca, leaves }),
            provider,
            upstream,
            pinning: pinning::Pinning::new(
                &tls.pinned_hosts,
                tls.learn_pinning.then(|| tls.pinning_memory_secs.get()),
            ),
            ca_dir,
            leaf_entries: tls.leaf_cache_entries,
            leaf_days: tls.leaf_validity_days,
            origin_connect_timeout: config.http.connect_timeout_ms.get(),
            server_configs: parking_lot::Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// The CA certificate, PEM (for `velocache ca export` and the CA page).
    pub fn ca_pem(&self) -> String {
        self.authority.load().ca.cert_pem().to_string()
    }

    /// Generate a new CA; connections from now on get leaves signed by it.
    pub fn rotate(&self) -> Result<String, TlsError> {
        let ca = Arc::new(CertificateAuthority::rotate(&self.ca_dir)?);
        let leaves = LeafCerts::new(
            ca.clone(),
            self.provider.clone(),
            self.leaf_entries,
            self.leaf_days,
        );
        let pem = ca.cert_pem().to_string();
        self.authority.store(Arc::new(Authority { ca, leaves }));
        Ok(pem)
    }
}

/// `velocache ca export|rotate` through the admin API.
impl CaAdmin for TlsShared {
    fn ca_pem(&self) -> String {
        TlsShared::ca_pem(self)
    }

    fn rotate(&self) -> Result<String, AdminError> {
        TlsShared::rotate(self).map_err(|e| AdminError::Failed(e.to_string()))
    }
}

/// The HTTPS service (TCP 443): `shared` is the TLS layer (`None` when HTTPS is off — flows
/// pass through), `proxy` the daemon's HTTP proxy that decrypted requests go through.
pub fn factory(
    shared: Option<Arc<TlsShared>>,
    proxy: Option<Arc<crate::http::Proxy>>,
) -> Box<dyn ServiceFactory> {
    Box::new(TlsFactory { shared, proxy })
}

struct TlsFactory {
    shared: Option<Arc<TlsShared>>,
    proxy: Option<Arc<crate::http::Proxy>>,
}

impl ServiceFactory for TlsFactory {
    fn service(&self) -> Service {
        Service::Https
    }

    fn build(
        self: Box<Self>,
        ctx: &ServiceContext,
        _registry: &mut prometheus_client::registry::Registry,
    ) -> Result<Handlers, ServiceError> {
        let Some(shared) = self.shared else {
            return Ok(ctx.passthrough(Service::Https));
        };
        let mut tls = TlsService::new(
            &ctx.config,
            shared,
            ctx.rules.clone(),
            ctx.flows.clone(),
            self.proxy,
        );
        tls.live = ctx.admin.live();
        let tls = Arc::new(tls);
        Ok(Handlers {
            tcp: Arc::new(tls),
            udp: ctx.passthrough(Service::Https).udp,
        })
    }
}

/// The HTTPS service.
pub struct TlsService {
    shared: Arc<TlsShared>,
    rules: Rules,
    hello_timeout: Duration,
    /// How long the original destination of a spliced connection has to accept it.
    splice_timeout: Duration,
    flows: crate::flow::FlowTracker,
    to_proxy: Option<intercept::ToProxy>,
    /// Joins spliced connections in the kernel (`[tls] kernel_relay`); `None`: `splice(2)`.
    relay: Option<Arc<KernelRelay>>,
    /// The dashboard's live feed: one record per connection, once its fate is decided.
    live: Option<crate::live::Live>,
}

impl TlsService {
    /// A service using `shared`, the live `rules`, the daemon's flow tracker and — for
    /// intercepted connections that speak HTTP — the daemon's HTTP proxy (`None`: decrypted
    /// bytes are relayed, never cached).
    pub fn new(
        config: &Config,
        shared: Arc<TlsShared>,
        rules: Rules,
        flows: crate::flow::FlowTracker,
        proxy: Option<Arc<crate::http::Proxy>>,
    ) -> Self {
        let timeouts = OriginTimeouts::from_config(&config.http);
        let relay = if config.tls.kernel_relay {
            match KernelRelay::load() {
                Ok(r) => Some(Arc::new(r)),
                Err(e) => {
                    warn!(service = "https", error = %e,
                        "kernel relay unavailable: spliced connections use splice(2)");
                    None
                }
            }
        } else {
            None
        };
        TlsService {
            shared,
            rules,
            hello_timeout: config.tls.hello_timeout_ms.get(),
            splice_timeout: config.datapath.connect_timeout_ms.get(),
            flows,
            to_proxy: proxy.map(|proxy| intercept::ToProxy { proxy, timeouts }),
            relay,
            live: None,
        }
    }
}

/// What to do with one connection, decided before anything is sent to either side.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Plan {
    Splice {
        rule: Option<String>,
    },
    Deny {
        rule: String,
    },
    Intercept {
        rule: String,
        /// A `cache` rule: the client is served first (see `intercept::Intercepted`).
        cache: bool,
    },
    /// A rule wanted interception but the host pins: spliced, and logged as such.
    Pinned {
        rule: String,
        learned: bool,
    },
}

impl TlsService {
    fn plan(&self, client: ClientAddr, sni: &str) -> Plan {
        let rules = self.rules.current();
        match rules.tls_decision(sni) {
            TlsDecision::Passthrough(rule) => Plan::Splice {
                rule: rule.map(|r| r.name.clone()),
            },
            TlsDecision::Deny(rule) => Plan::Deny {
                rule: rule.name.clone(),
            },
            TlsDecision::Intercept { rule, exact } => {
                let learned = self.shared.pinning.learned(client.0.ip(), sni);
                if learned || (!exact && self.shared.pinning.listed(sni)) {
                    Plan::Pinned {
                        rule: rule.name.clone(),
                        learned,
                    }
                } else {
                    Plan::Intercept {
                        rule: rule.name.clone(),
                        cache: rule.action == crate::rules::Action::Cache,
                    }
                }
            }
        }
    }

    /// One connection into the live feed, once its fate is decided.
    #[expect(
        clippy::too_many_arguments,
        reason = "what the decision knows, passed as it is"
    )]
    fn publish(
        &self,
        client: ClientAddr,
        orig_dst: OrigDstAddr,
        sni: &str,
        alpn: &str,
        action: &str,
        rule: &str,
        why: &str,
    ) {
        let Some(live) = &self.live else { return };
        let mut detail = vec![("orig_dst".to_string(), orig_dst.to_string())];
        if !why.is_empty() {
            detail.push(("reason".into(), why.to_string()));
        }
        live.publish(crate::live::Record {
            service: crate::live::kind::TLS.into(),
            client: client.to_string(),
            host: sni.to_string(),
            what: alpn.to_string(),
            status: action.to_string(),
            rule: rule.to_string(),
            direction: "tcp".into(),
            detail,
            ..crate::live::Record::default()
        });
    }

    /// One connection: read its ClientHello, decide, then splice, refuse or intercept. Its
    /// `flow` line is written inside the span that says what was decided.
    async fn handle(
        &self,
        mut stream: TcpStream,
        client: ClientAddr,
        orig_dst: OrigDstAddr,
        flow: &mut FlowGuard,
    ) {
        let hello = read_client_hello(&mut stream, self.hello_timeout).await;
        let (sni, alpn, raw) = match hello {
            Hello::Unparsed { raw, reason } => {
                self.publish(
                    client,
                    orig_dst,
                    "",
                    "",
                    "passthrough",
                    "",
                    &reason.to_string(),
                );
                let span = info_span!("tls", service = "https", sni = "", tls = "unparsed", reason = %reason);
                flow.within(&span);
                self.splice(flow, stream, orig_dst, &raw)
                    .instrument(span)
                    .await;
                return;
            }
            Hello::Parsed { sni, alpn, raw } => (sni, alpn, raw),
        };
        let alpn_text = alpn_list(&alpn);
        let Some(sni) = sni else {
            self.publish(
                client,
                orig_dst,
                "",
                &alpn_text,
                "passthrough",
                "",
                "no SNI",
            );
            let span = info_span!("tls", service = "https", sni = "", alpn = %alpn_text, action = "passthrough", reason = "no SNI");
            flow.within(&span);
            self.splice(flow, stream, orig_dst, &raw)
                .instrument(span)
                .await;
            return;
        };
        let plan = self.plan(client, &sni);
        let (action, rule) = match &plan {
            Plan::Splice { rule } => ("passthrough", rule.as_deref().unwrap_or("")),
            Plan::Pinned { rule, .. } => ("passthrough", rule.as_str()),
            Plan::Deny { rule } => ("deny", rule.as_str()),
            Plan::Intercept { rule, .. } => ("intercept", rule.as_str()),
        };
        let why = if matches!(plan, Plan::Pinned { .. }) {
            "pinned"
        } else {
            ""
        };
        self.publish(client, orig_dst, &sni, &alpn_text, action, rule, why);
        match plan {
            Plan::Splice { rule } => {
                let span = info_span!("tls", service = "https", sni = %sni, alpn = %alpn_text, action = "passthrough", rule = rule.as_deref().unwrap_or(""));
                flow.within(&span);
                self.splice(flow, stream, orig_dst, &raw)
                    .instrument(span)
                    .await;
            }
            Plan::Pinned { rule, learned } => {
                let span = info_span!("tls", service = "https", sni = %sni, alpn = %alpn_text, action = "passthrough", rule = %rule, pinned = if learned { "learned" } else { "listed" });
                flow.within(&span);
                self.splice(flow, stream, orig_dst, &raw)
                    .instrument(span)
                    .await;
            }
            Plan::Deny { rule } => {
                warn!(service = "https", %client, sni = %sni, %orig_dst, rule = %rule, action = "deny", "TLS connection denied by rule");
                flow.record("sni", &sni);
                flow.record("alpn", &alpn_text);
                flow.record("action", "deny");
                flow.record("rule", &rule);
                // A reset, not a FIN: the client must not mistake it for an empty answer.
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            }
            Plan::Intercept { rule, cache } => {
                let span = info_span!("tls", service = "https", sni = %sni, alpn = %alpn_text, action = "intercept", rule = %rule);
                let conn = intercept::Intercepted {
                    stream,
                    raw,
                    client,
                    orig_dst,
                    sni: &sni,
                    alpn: &alpn,
                    client_first: cache,
                };
                flow.within(&span);
                intercept::run(&self.shared, conn, self.to_proxy.as_ref(), flow)
                    .instrument(span)
                    .await;
            }
        }
    }
}

/// An origin client that speaks TLS (verified, with `sni`) to `dst`: how the cache warms
/// `https://` URLs through the same proxy as clients' requests.
pub fn origin_client(
    shared: Arc<TlsShared>,
    dst: std::net::SocketAddr,
    sni: &str,
    timeouts: OriginTimeouts,
) -> Arc<dyn crate::http::OriginClient> {
    Arc::new(origin::TlsOrigin::new(shared, dst, sni, None, timeouts))
}

impl TlsService {
    /// Splice to the original destination, the bytes already read first: joined in the kernel
    /// when the relay is loaded, `splice(2)` otherwise.
    async fn splice(&self, flow: &FlowGuard, stream: TcpStream, orig_dst: OrigDstAddr, raw: &[u8]) {
        splice_to_origin_with(
            self.relay.as_deref(),
            flow,
            stream,
            orig_dst,
            raw,
            self.splice_timeout,
        )
        .await;
    }
}

fn alpn_list(alpn: &[Vec<u8>]) -> String {
    alpn.iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect::<Vec<_>>()
        .join(",")
}

impl TcpHandler for Arc<TlsService> {
    fn on_connection(&self, conn: InterceptedTcp) {
        let InterceptedTcp {
            stream,
            client,
            orig_dst,
        } = conn;
        let mut flow = self.flows.open(Service::Https, client, orig_dst, "tcp");
        let service = self.clone();
        tokio::spawn(async move {
            service.handle(stream, client, orig_dst, &mut flow).await;
        });
    }
}
