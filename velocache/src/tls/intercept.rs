//! The decrypting path: the client's handshake with a leaf for its SNI, then HTTP through the
//! proxy (or, for protocols the proxy does not speak, a relay of the decrypted bytes).
//!
//! Two orders, by rule:
//! - `cache` rules are served **client first**: the client's handshake completes at once and
//!   the proxy opens (and verifies) origin connections only for what the cache cannot answer,
//!   so a hit needs no origin at all; a miss whose origin fails verification is a 502 naming
//!   the reason, over HTTP/2 as over HTTP/1.1;
//! - other interceptions are **origin first**: the origin is contacted and verified before the
//!   client's handshake, so a bad origin certificate reaches the client as a 502 (HTTP/1.1) or
//!   a TLS alert instead of being hidden behind ours.
//!
//! A client that speaks HTTP (ALPN `h2` or `http/1.1`, or none) is served by the daemon's HTTP
//! proxy — rules, cache, access log — over HTTP/2 or HTTP/1.1 as it chose, while the proxy
//! talks to the origin over whichever of the two the origin chose (`origin`). A client that
//! offered only other protocols gets exactly the ALPN the origin agreed to, and the decrypted
//! bytes are relayed both ways (logged, never stored).
use std::sync::Arc;

use rustls::{
    ServerConfig,
    server::{Acceptor, ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio::{
    io::{AsyncWriteExt as _, copy_bidirectional_with_sizes},
    net::TcpStream,
};
use tokio_rustls::{
    LazyConfigAcceptor, client::TlsStream as ClientTls, server::TlsStream as ServerTls,
};
use tracing::warn;

use super::{
    Prefixed, TlsShared,
    origin::{self, HTTP_ALPN, OriginTimeouts, TlsOrigin},
};
use crate::{
    flow::{FlowGuard, Metered},
    http::{ClientProtocol, Proxy},
    net::{ClientAddr, OrigDstAddr},
};

/// ALPN protocols the gateway itself speaks when it terminates TLS.
const HTTP11: &[u8] = b"http/1.1";

/// Resolves the client's SNI to a leaf minted by the current CA.
struct SniResolver {
    shared: Arc<TlsShared>,
    host: String,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver")
            .field("host", &self.host)
            .finish()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match self.shared.authority.load().leaves.get(&self.host) {
            Ok(k) => Some(k),
            Err(e) => {
                warn!(sni = %self.host, error = %e, "no certificate could be minted");
                None
            }
        }
    }
}

/// Resolves whatever SNI a ClientHello names to a leaf of the current CA: the resolver of the
/// server configurations shared by every intercepted connection (`shared_server_config`).
struct HelloResolver {
    shared: std::sync::Weak<TlsShared>,
}

impl std::fmt::Debug for HelloResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HelloResolver")
    }
}

impl ResolvesServerCert for HelloResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name()?;
        let shared = self.shared.upgrade()?;
        match shared.authority.load().leaves.get(sni) {
            Ok(k) => Some(k),
            Err(e) => {
                warn!(sni, error = %e, "no certificate could be minted");
                None
            }
        }
    }
}

/// The server configuration for an ALPN offer, built once and shared: one session cache and
/// one ticket key for every intercepted connection (so clients can resume), and no per-
/// connection set-up cost.
fn shared_server_config(shared: &Arc<TlsShared>, alpn: Vec<Vec<u8>>) -> Option<Arc<ServerConfig>> {
    let mut configs = shared.server_configs.lock();
    if let Some(c) = configs.get(&alpn) {
        return Some(c.clone());
    }
    let resolver = Arc::new(HelloResolver {
        shared: Arc::downgrade(shared),
    });
    let cfg = server_config(shared, resolver, alpn.clone())?;
    configs.insert(alpn, cfg.clone());
    Some(cfg)
}

/// A resolver that never has a certificate: the handshake fails with an alert.
#[derive(Debug)]
struct NoCert;

impl ResolvesServerCert for NoCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

fn server_config(
    shared: &TlsShared,
    resolver: Arc<dyn ResolvesServerCert>,
    alpn: Vec<Vec<u8>>,
) -> Option<Arc<ServerConfig>> {
    let mut cfg = ServerConfig::builder_with_provider(shared.provider.clone())
        .with_safe_default_protocol_versions()
        .ok()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = alpn;
    Some(Arc::new(cfg))
}

/// Whether a client's handshake error means "I do not accept your certificate".
fn rejected_our_certificate(e: &std::io::Error) -> bool {
    use rustls::AlertDescription as A;
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(
            A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::AccessDenied,
        )) => true,
        // Pinning apps often just close the connection after seeing the certificate.
        _ => e.kind() == std::io::ErrorKind::UnexpectedEof,
    }
}

/// What the proxy needs to serve a decrypted connection.
pub(super) struct ToProxy {
    /// The daemon's HTTP proxy.
    pub proxy: Arc<Proxy>,
    /// Timeouts of origin connections.
    pub timeouts: OriginTimeouts,
}

/// One connection to intercept: its ClientHello (`raw`) named `sni` and offered `alpn`.
pub(super) struct Intercepted<'a> {
    pub stream: TcpStream,
    pub raw: Vec<u8>,
    pub client: ClientAddr,
    pub orig_dst: OrigDstAddr,
    pub sni: &'a str,
    pub alpn: &'a [Vec<u8>],
    /// Complete the client's handshake before contacting the origin (for `cache` rules: a
    /// hit then needs no origin connection at all, and a miss whose origin fails verification
    /// gets a 502 naming the reason, over HTTP/2 as over HTTP/1.1).
    pub client_first: bool,
}

/// Whether the client can be served HTTP by the proxy: it offered `h2` or `http/1.1`, or no
/// ALPN at all (which means HTTP/1.1 on port 443).
fn speaks_http(alpn: &[Vec<u8>]) -> bool {
    alpn.is_empty() || alpn.iter().any(|p| HTTP_ALPN.contains(&p.as_slice()))
}

/// Intercept one connection: through the proxy when the client speaks HTTP and there is one,
/// else as a relay of the decrypted bytes.
pub(super) async fn run(
    shared: &Arc<TlsShared>,
    conn: Intercepted<'_>,
    to_proxy: Option<&ToProxy>,
    flow: &FlowGuard,
) {
    let Intercepted {
        stream,
        raw,
        client,
        orig_dst,
        sni,
        alpn,
        client_first,
    } = conn;
    let http = to_proxy.filter(|_| speaks_http(alpn));
    if let Some(to_proxy) = http
        && client_first
    {
        let offer = if alpn.is_empty() {
            Vec::new()
        } else {
            HTTP_ALPN.iter().map(|p| p.to_vec()).collect()
        };
        if let Some(client_tls) = accept_client(shared, stream, raw, client, sni, offer).await {
            serve(
                shared, client_tls, client, orig_dst, sni, None, to_proxy, flow,
            )
            .await;
        }
        return;
    }
    let offer: Vec<Vec<u8>> = match http {
        Some(_) => HTTP_ALPN.iter().map(|p| p.to_vec()).collect(),
        None => alpn.to_vec(),
    };
    let upstream = match origin::connect(shared, orig_dst.0, sni, &offer).await {
        Ok(u) => u,
        Err(e) => {
            let reason = e.to_string();
            warn!(%client, %orig_dst, sni, reason = %reason, "origin refused or failed verification; telling the client");
            refuse_client(shared, stream, raw, alpn, sni, &reason).await;
            return;
        }
    };
    // Through the proxy, the client gets its own choice of h2 / http/1.1 (rustls picks by our
    // order among what it offered); relayed, it gets exactly what the origin agreed to.
    let client_alpn: Vec<Vec<u8>> = match http {
        Some(_) if alpn.is_empty() => Vec::new(),
        Some(_) => HTTP_ALPN.iter().map(|p| p.to_vec()).collect(),
        None => upstream
            .get_ref()
            .1
            .alpn_protocol()
            .map(<[u8]>::to_vec)
            .into_iter()
            .collect(),
    };
    let Some(client_tls) = accept_client(shared, stream, raw, client, sni, client_alpn).await
    else {
        return;
    };
    let Some(to_proxy) = http else {
        relay(client_tls, upstream, flow).await;
        return;
    };
    serve(
        shared,
        client_tls,
        client,
        orig_dst,
        sni,
        Some(upstream),
        to_proxy,
        flow,
    )
    .await;
}

/// Hand a decrypted client connection to the proxy, bound to an origin client for `sni` at
/// `orig_dst` (starting with `first`, if the origin was contacted already).
#[expect(
    clippy::too_many_arguments,
    reason = "one call site each way; a struct would only rename them"
)]
async fn serve(
    shared: &Arc<TlsShared>,
    client_tls: ServerTls<Prefixed<TcpStream>>,
    client: ClientAddr,
    orig_dst: OrigDstAddr,
    sni: &str,
    first: Option<ClientTls<TcpStream>>,
    to_proxy: &ToProxy,
    flow: &FlowGuard,
) {
    let protocol = match client_tls.get_ref().1.alpn_protocol() {
        Some(b"h2") => ClientProtocol::Http2,
        _ => ClientProtocol::Http1,
    };
    let origin = TlsOrigin::new(shared.clone(), orig_dst.0, sni, first, to_proxy.timeouts);
    let proxy = to_proxy.proxy.with_origin(Arc::new(origin));
    let conn = crate::http::Conn {
        scheme: crate::http::Scheme::Https,
        client,
        orig_dst,
    };
    crate::http::serve_decrypted(proxy, client_tls, conn, protocol, flow).await;
}

/// Complete the client's handshake with a leaf for its SNI, offering `alpn`. A client that
/// rejects our certificate is remembered as pinning the host.
async fn accept_client(
    shared: &Arc<TlsShared>,
    stream: TcpStream,
    raw: Vec<u8>,
    client: ClientAddr,
    sni: &str,
    alpn: Vec<Vec<u8>>,
) -> Option<ServerTls<Prefixed<TcpStream>>> {
    let cfg = shared_server_config(shared, alpn)?;
    let accepted = LazyConfigAcceptor::new(Acceptor::default(), Prefixed::new(raw, stream)).await;
    let handshake = match accepted {
        Ok(start) => start.into_stream(cfg).await,
        Err(e) => Err(e),
    };
    match handshake {
        Ok(s) => Some(s),
        Err(e) => {
            if rejected_our_certificate(&e) {
                shared.pinning.learn(client.0.ip(), sni);
                warn!(%client, sni, error = %e, "client rejected our certificate (pinned, or our CA not trusted): this host is spliced for this client from now on");
            } else {
                warn!(%client, sni, error = %e, "TLS handshake with the client failed");
            }
            None
        }
    }
}

/// Relay decrypted bytes both ways (a protocol the proxy does not speak), counted into `flow`.
async fn relay(
    client_tls: ServerTls<Prefixed<TcpStream>>,
    upstream: ClientTls<TcpStream>,
    flow: &FlowGuard,
) {
    let protocol = upstream
        .get_ref()
        .1
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    flow.record("protocol", &protocol);
    let mut client = Metered::new(client_tls, flow.counts());
    let mut upstream = upstream;
    if let Err(e) =
        copy_bidirectional_with_sizes(&mut client, &mut upstream, 64 * 1024, 64 * 1024).await
    {
        flow.fail(&e);
    }
}

/// Tell the client the origin could not be reached safely: a 502 with the reason when it
/// speaks HTTP/1.1 (or offered no ALPN), else a TLS alert.
async fn refuse_client(
    shared: &Arc<TlsShared>,
    stream: TcpStream,
    raw: Vec<u8>,
    alpn: &[Vec<u8>],
    sni: &str,
    reason: &str,
) {
    let can_http1 = alpn.is_empty() || alpn.iter().any(|p| p == HTTP11);
    let accepted =
        match LazyConfigAcceptor::new(Acceptor::default(), Prefixed::new(raw, stream)).await {
            Ok(a) => a,
            Err(_) => return,
        };
    if !can_http1 {
        if let Some(cfg) = server_config(shared, Arc::new(NoCert), Vec::new()) {
            // Fails on purpose: rustls answers with a handshake_failure alert.
            let _ = accepted.into_stream(cfg).await;
        }
        return;
    }
    let resolver = Arc::new(SniResolver {
        shared: shared.clone(),
        host: sni.to_string(),
    });
    let alpn_offer = if alpn.is_empty() {
        Vec::new()
    } else {
        vec![HTTP11.to_vec()]
    };
    let Some(cfg) = server_config(shared, resolver, alpn_offer) else {
        return;
    };
    let Ok(mut tls) = accepted.into_stream(cfg).await else {
        return;
    };
    let body = format!("VeloCache could not open a trustworthy connection to {sni}:\n{reason}\n");
    let response = format!(
        "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nX-VeloCache-Error: upstream-tls\r\n\r\n{body}",
        body.len()
    );
    let _ = tls.write_all(response.as_bytes()).await;
    let _ = tls.shutdown().await;
}
