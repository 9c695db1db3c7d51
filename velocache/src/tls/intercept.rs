//! The decrypting path: origin first, then the client, then relay.
//!
//! The origin is contacted (and verified) before the client's handshake completes, so that a
//! bad origin certificate can be reported to the client instead of hidden behind ours, and so
//! that the client is offered exactly the protocol (ALPN) the origin agreed to.
use std::{
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use rustls::{
    ServerConfig,
    pki_types::ServerName,
    server::{Acceptor, ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio::{
    io::{AsyncWriteExt as _, copy_bidirectional_with_sizes},
    net::TcpStream,
};
use tokio_rustls::{LazyConfigAcceptor, TlsConnector, client::TlsStream as ClientTls};
use tracing::{info, warn};

use super::{CONNECT_TIMEOUT, Prefixed, TlsShared};
use crate::{
    net::{ClientAddr, OrigDstAddr},
    passthrough::Counted,
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

async fn connect_upstream(
    shared: &TlsShared,
    orig_dst: OrigDstAddr,
    sni: &str,
    alpn: &[Vec<u8>],
) -> Result<ClientTls<TcpStream>, String> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(orig_dst.0))
        .await
        .map_err(|_| format!("connecting to {orig_dst} timed out"))?
        .map_err(|e| format!("connecting to {orig_dst}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let name =
        ServerName::try_from(sni.to_string()).map_err(|e| format!("bad SNI `{sni}`: {e}"))?;
    let connector = TlsConnector::from(shared.upstream.config(alpn));
    connector.connect(name, tcp).await.map_err(|e| {
        match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::InvalidCertificate(c)) => {
                format!("the origin's certificate failed verification: {c:?}")
            }
            Some(other) => format!("TLS with the origin failed: {other}"),
            None => format!("TLS with the origin failed: {e}"),
        }
    })
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

/// Intercept one connection whose ClientHello (`raw`) named `sni` and offered `alpn`.
pub(super) async fn run(
    shared: &Arc<TlsShared>,
    stream: TcpStream,
    raw: Vec<u8>,
    client: ClientAddr,
    orig_dst: OrigDstAddr,
    sni: &str,
    alpn: &[Vec<u8>],
) {
    let started = Instant::now();
    let upstream = match connect_upstream(shared, orig_dst, sni, alpn).await {
        Ok(u) => u,
        Err(reason) => {
            warn!(%client, %orig_dst, sni, reason = %reason, "origin refused or failed verification; telling the client");
            refuse_client(shared, stream, raw, alpn, sni, &reason).await;
            return;
        }
    };
    // Offer the client exactly what the origin agreed to, so both sides speak one protocol.
    let negotiated: Vec<Vec<u8>> = upstream
        .get_ref()
        .1
        .alpn_protocol()
        .map(<[u8]>::to_vec)
        .into_iter()
        .collect();
    let resolver = Arc::new(SniResolver {
        shared: shared.clone(),
        host: sni.to_string(),
    });
    let Some(cfg) = server_config(shared, resolver, negotiated.clone()) else {
        return;
    };
    let accepted = LazyConfigAcceptor::new(Acceptor::default(), Prefixed::new(raw, stream)).await;
    let client_tls = match accepted {
        Ok(start) => start.into_stream(cfg).await,
        Err(e) => Err(e),
    };
    let client_tls = match client_tls {
        Ok(s) => s,
        Err(e) => {
            if rejected_our_certificate(&e) {
                shared.pinning.learn(client.0.ip(), sni);
                warn!(%client, sni, error = %e, "client rejected our certificate (pinned, or our CA not trusted): this host is spliced for this client from now on");
            } else {
                warn!(%client, sni, error = %e, "TLS handshake with the client failed");
            }
            return;
        }
    };
    let protocol = negotiated
        .first()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let (mut down, up_count) = Counted::new(client_tls);
    let (mut up, down_count) = Counted::new(upstream);
    let result = copy_bidirectional_with_sizes(&mut down, &mut up, 64 * 1024, 64 * 1024).await;
    let bytes_up = up_count.load(Ordering::Relaxed);
    let bytes_down = down_count.load(Ordering::Relaxed);
    let duration_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(_) => {
            info!(%client, %orig_dst, transport = "tcp", protocol, bytes_up, bytes_down, duration_ms, "flow")
        }
        Err(e) => {
            info!(%client, %orig_dst, transport = "tcp", protocol, bytes_up, bytes_down, duration_ms, error = %e, "flow")
        }
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
