//! Upstream resolvers: one exchange at a time, over UDP (TCP when truncated) or DNS-over-TLS,
//! with failover and health.
//!
//! A query enters as wire bytes whose ID is ours to choose; it leaves as the first reply that
//! answers it. Every UDP exchange uses a fresh socket — a new random source port from the
//! kernel — connected to the upstream, so replies from any other address never reach us, and a
//! fresh random ID; replies with another ID, without QR, or for another question are counted
//! and dropped while we keep waiting for the real one (a spoofer has to guess both). A reply
//! with TC set is asked again over TCP. DNS-over-TLS connections are verified against the
//! same roots as HTTPS upstreams (Mozilla, system, `[tls] extra_roots`) and kept for reuse.
//!
//! [`UpstreamPool`] tries the configured upstreams in order, skipping those marked down: three
//! failures in a row mark an upstream down for 5 s, doubling up to a minute; a success clears
//! it. SERVFAIL and REFUSED move on to the next upstream, and if nobody does better the last
//! such reply is returned as it came, so a REFUSED stays a REFUSED.
use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use prometheus_client::metrics::counter::Counter;
use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use thiserror::Error;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};
use tokio_rustls::{TlsConnector, client::TlsStream};

use super::wire::{self, FLAG_TC, get16, put16, rcode};
pub use crate::config::UpstreamSpec;

/// Why an exchange with one upstream failed.
#[derive(Debug, Error)]
pub enum ExchangeError {
    /// No matching reply in time.
    #[error("no answer from {upstream} within {timeout_ms} ms")]
    Timeout {
        /// Upstream.
        upstream: String,
        /// The limit.
        timeout_ms: u64,
    },
    /// A socket error (refused, unreachable, reset, …).
    #[error("{upstream} over {transport}: {source}")]
    Io {
        /// Upstream.
        upstream: String,
        /// udp, tcp or tls.
        transport: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A stream transport returned something that does not answer the query.
    #[error("{upstream} over {transport} sent a reply that does not answer the query")]
    Mismatch {
        /// Upstream.
        upstream: String,
        /// tcp or tls.
        transport: &'static str,
    },
    /// No upstream is configured for the query.
    #[error("no upstream configured")]
    NoUpstream,
}

/// An answer and where it came from.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The reply, with our query ID.
    pub bytes: Vec<u8>,
    /// Which upstream answered.
    pub upstream: Arc<str>,
    /// udp, tcp or tls.
    pub transport: &'static str,
}

const MAX_MESSAGE: usize = 65_535;

/// Give `query` a fresh random ID and return it.
fn new_id(query: &mut [u8]) -> u16 {
    let id: u16 = rand::random();
    put16(query, 0, id);
    id
}

fn local_for(addr: SocketAddr) -> SocketAddr {
    if addr.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    }
}

/// One UDP exchange with `addr`; with `tcp_fallback` a truncated reply is asked again over
/// TCP. `dropped` counts replies that did not answer the query.
pub async fn exchange_plain(
    addr: SocketAddr,
    query: &[u8],
    timeout: Duration,
    dropped: &Counter,
    tcp_fallback: bool,
) -> Result<Reply, ExchangeError> {
    let upstream = addr.to_string();
    let io = |source| ExchangeError::Io {
        upstream: addr.to_string(),
        transport: "udp",
        source,
    };
    let mut q = query.to_vec();
    new_id(&mut q);
    let sock = UdpSocket::bind(local_for(addr)).await.map_err(io)?;
    // Connected: the kernel drops datagrams from any other address or port.
    sock.connect(addr).await.map_err(io)?;
    sock.send(&q).await.map_err(io)?;
    // Capacity, not zeroed length: `recv_buf` writes into spare capacity, so a miss does not
    // pay for clearing 64 KiB.
    let mut buf = Vec::with_capacity(MAX_MESSAGE);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        buf.clear();
        let n = match tokio::time::timeout_at(deadline, sock.recv_buf(&mut buf)).await {
            Err(_) => {
                return Err(ExchangeError::Timeout {
                    upstream,
                    timeout_ms: timeout.as_millis() as u64,
                });
            }
            Ok(r) => r.map_err(io)?,
        };
        let reply = &buf[..n];
        if !wire::answers_query(&q, reply) {
            dropped.inc();
            tracing::debug!(upstream = %addr, len = n, "upstream reply does not answer the query; dropped");
            continue;
        }
        if tcp_fallback && get16(reply, 2) & FLAG_TC != 0 {
            return exchange_tcp(addr, query, timeout).await;
        }
        return Ok(Reply {
            bytes: reply.to_vec(),
            upstream: upstream.into(),
            transport: "udp",
        });
    }
}

/// One exchange over a new TCP connection.
pub async fn exchange_tcp(
    addr: SocketAddr,
    query: &[u8],
    timeout: Duration,
) -> Result<Reply, ExchangeError> {
    let upstream = addr.to_string();
    let run = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut q = query.to_vec();
        new_id(&mut q);
        let reply = framed_exchange(&mut stream, &q).await?;
        Ok::<_, std::io::Error>((q, reply))
    };
    match tokio::time::timeout(timeout, run).await {
        Err(_) => Err(ExchangeError::Timeout {
            upstream,
            timeout_ms: timeout.as_millis() as u64,
        }),
        Ok(Err(source)) => Err(ExchangeError::Io {
            upstream,
            transport: "tcp",
            source,
        }),
        Ok(Ok((q, reply))) if wire::answers_query(&q, &reply) => Ok(Reply {
            bytes: reply,
            upstream: upstream.into(),
            transport: "tcp",
        }),
        Ok(Ok(_)) => Err(ExchangeError::Mismatch {
            upstream,
            transport: "tcp",
        }),
    }
}

/// Write one length-prefixed message and read one back (RFC 1035 §4.2.2).
async fn framed_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    query: &[u8],
) -> std::io::Result<Vec<u8>> {
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
    framed.extend_from_slice(query);
    s.write_all(&framed).await?;
    s.flush().await?;
    let len = s.read_u16().await? as usize;
    let mut reply = vec![0u8; len];
    s.read_exact(&mut reply).await?;
    Ok(reply)
}

/// Trust for DNS-over-TLS upstreams: the Mozilla roots, the system's, and `extra_roots`.
pub fn tls_client_config(extra_roots: &[PathBuf]) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    for path in extra_roots {
        let certs = rustls::pki_types::pem::PemObject::pem_file_iter(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        for c in certs {
            let c = c.map_err(|e| format!("{}: {e}", path.display()))?;
            roots
                .add(c)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Idle DNS-over-TLS connections kept per upstream.
const TLS_IDLE_MAX: usize = 4;

/// One upstream and its health.
pub struct Upstream {
    spec: UpstreamSpec,
    label: Arc<str>,
    failures: AtomicU32,
    /// Milliseconds since the pool's epoch until which the upstream is skipped.
    down_until: AtomicU64,
    tls_idle: Mutex<Vec<TlsStream<TcpStream>>>,
}

impl Upstream {
    /// How logs name it.
    pub fn label(&self) -> &Arc<str> {
        &self.label
    }
}

/// The configured upstreams, tried in order.
pub struct UpstreamPool {
    list: Vec<Upstream>,
    timeout: Duration,
    tls: Option<TlsConnector>,
    epoch: Instant,
    dropped: Counter,
}

impl UpstreamPool {
    /// A pool over `specs`; `tls` is needed when any of them is `tls://`.
    pub fn new(
        specs: Vec<UpstreamSpec>,
        timeout: Duration,
        tls: Option<Arc<ClientConfig>>,
        dropped: Counter,
    ) -> Self {
        let list = specs
            .into_iter()
            .map(|spec| Upstream {
                label: spec.label().into(),
                spec,
                failures: AtomicU32::new(0),
                down_until: AtomicU64::new(0),
                tls_idle: Mutex::new(Vec::new()),
            })
            .collect();
        UpstreamPool {
            list,
            timeout,
            tls: tls.map(TlsConnector::from),
            epoch: Instant::now(),
            dropped,
        }
    }

    /// The upstreams.
    pub fn upstreams(&self) -> &[Upstream] {
        &self.list
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether `u` is marked down now.
    pub fn is_down(&self, u: &Upstream) -> bool {
        u.down_until.load(Ordering::Relaxed) > self.now_ms()
    }

    /// Whether every upstream is marked down (a stale answer then goes out at once).
    pub fn all_down(&self) -> bool {
        !self.list.is_empty() && self.list.iter().all(|u| self.is_down(u))
    }

    fn succeeded(&self, u: &Upstream) {
        u.failures.store(0, Ordering::Relaxed);
        u.down_until.store(0, Ordering::Relaxed);
    }

    fn failed(&self, u: &Upstream) {
        let n = u.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= 3 {
            let backoff = (5_000u64 << (n - 3).min(4)).min(60_000);
            u.down_until
                .store(self.now_ms() + backoff, Ordering::Relaxed);
            if n == 3 {
                tracing::warn!(upstream = %u.label, backoff_ms = backoff, "upstream marked down");
            }
        }
    }

    /// Ask the upstreams in order until one answers well. Healthy upstreams are asked first;
    /// those marked down only when no healthy one is left.
    pub async fn query(&self, query: &[u8], tcp_fallback: bool) -> Result<Reply, ExchangeError> {
        let healthy: Vec<&Upstream> = self.list.iter().filter(|u| !self.is_down(u)).collect();
        let order = if healthy.is_empty() {
            self.list.iter().collect()
        } else {
            healthy
        };
        let mut last_err = ExchangeError::NoUpstream;
        let mut soft: Option<Reply> = None;
        for u in order {
            let result = match &u.spec {
                UpstreamSpec::Plain(addr) => {
                    exchange_plain(*addr, query, self.timeout, &self.dropped, tcp_fallback).await
                }
                UpstreamSpec::Tls { addr, server_name } => {
                    self.exchange_tls(u, *addr, server_name, query).await
                }
            };
            match result {
                Ok(mut reply) => {
                    reply.upstream = u.label.clone();
                    let code = (get16(&reply.bytes, 2) & 0x000f) as u8;
                    if code == rcode::SERVFAIL || code == rcode::REFUSED {
                        self.failed(u);
                        soft = Some(reply);
                        continue;
                    }
                    self.succeeded(u);
                    return Ok(reply);
                }
                Err(e) => {
                    self.failed(u);
                    tracing::debug!(upstream = %u.label, error = %e, "upstream exchange failed");
                    last_err = e;
                }
            }
        }
        soft.ok_or(last_err)
    }

    async fn exchange_tls(
        &self,
        u: &Upstream,
        addr: SocketAddr,
        server_name: &str,
        query: &[u8],
    ) -> Result<Reply, ExchangeError> {
        let label = u.label.to_string();
        let io = |source| ExchangeError::Io {
            upstream: label.clone(),
            transport: "tls",
            source,
        };
        let Some(connector) = &self.tls else {
            return Err(io(std::io::Error::other("no TLS configuration")));
        };
        let mut q = query.to_vec();
        new_id(&mut q);
        let run = async {
            // A kept connection may have been closed by the server meanwhile: one retry on a
            // fresh connection.
            let idle = u.tls_idle.lock().ok().and_then(|mut v| v.pop());
            if let Some(mut conn) = idle
                && let Ok(reply) = framed_exchange(&mut conn, &q).await
            {
                return Ok((conn, reply));
            }
            let name = ServerName::try_from(server_name.to_string())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let mut conn = connector.connect(name, tcp).await?;
            let reply = framed_exchange(&mut conn, &q).await?;
            Ok((conn, reply))
        };
        match tokio::time::timeout(self.timeout, run).await {
            Err(_) => Err(ExchangeError::Timeout {
                upstream: label,
                timeout_ms: self.timeout.as_millis() as u64,
            }),
            Ok(Err(e)) => Err(io(e)),
            Ok(Ok((conn, reply))) => {
                if !wire::answers_query(&q, &reply) {
                    return Err(ExchangeError::Mismatch {
                        upstream: label,
                        transport: "tls",
                    });
                }
                if let Ok(mut idle) = u.tls_idle.lock()
                    && idle.len() < TLS_IDLE_MAX
                {
                    idle.push(conn);
                }
                Ok(Reply {
                    bytes: reply,
                    upstream: u.label.clone(),
                    transport: "tls",
                })
            }
        }
    }
}

#[cfg(test)]
#[path = "upstream_tests.rs"]
mod tests;
