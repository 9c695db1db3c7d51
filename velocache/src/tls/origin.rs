//! The origin side of decrypted HTTPS: TLS connections from the gateway to the original
//! destination, verified like a browser would, for the HTTP proxy to send requests on.
//!
//! One [`TlsOrigin`] serves one intercepted client connection. It may be handed a connection the
//! interception opened (and verified) before the client's handshake, and dials — always to
//! the original destination, always with the client's SNI, never to what a `Host` header says —
//! when the client asks for more in parallel than one origin connection carries. hyper-util's
//! pool keeps them: HTTP/1.1 connections are reused one request at a time, an HTTP/2 one
//! multiplexes every request; which of the two the origin speaks is its ALPN choice, whatever
//! the client speaks to us.
use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use http::{Request, Response, Uri, header};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{
        Client,
        connect::{Connected, Connection},
    },
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use thiserror::Error;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

use super::TlsShared;
use crate::http::{Body, OriginClient, ProxyError};

/// ALPN offered to origins when the gateway speaks HTTP to them itself.
pub(super) const HTTP_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why no usable TLS connection to the origin could be had.
#[derive(Debug, Error)]
pub enum OriginTlsError {
    /// TCP connect failed or timed out.
    #[error("connecting to {dst}: {reason}")]
    Connect {
        /// The original destination.
        dst: SocketAddr,
        /// What happened.
        reason: String,
    },
    /// The SNI is not a name a certificate can be checked against.
    #[error("bad SNI `{sni}`: {reason}")]
    BadName {
        /// The client's SNI.
        sni: String,
        /// Why.
        reason: String,
    },
    /// The origin's certificate did not verify.
    #[error("the origin's certificate failed verification: {0}")]
    Certificate(String),
    /// Any other handshake failure.
    #[error("TLS with the origin failed: {0}")]
    Handshake(String),
}

/// Open and verify a TLS connection to `dst` for `sni`, offering `alpn`.
pub(super) async fn connect(
    shared: &TlsShared,
    dst: SocketAddr,
    sni: &str,
    alpn: &[Vec<u8>],
) -> Result<TlsStream<TcpStream>, OriginTlsError> {
    let tcp = tokio::time::timeout(shared.origin_connect_timeout, TcpStream::connect(dst))
        .await
        .map_err(|_| OriginTlsError::Connect {
            dst,
            reason: "timed out".into(),
        })?
        .map_err(|e| OriginTlsError::Connect {
            dst,
            reason: e.to_string(),
        })?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(sni.to_string()).map_err(|e| OriginTlsError::BadName {
        sni: sni.to_string(),
        reason: e.to_string(),
    })?;
    let connector = TlsConnector::from(shared.upstream.config(alpn));
    connector.connect(name, tcp).await.map_err(|e| {
        match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::InvalidCertificate(c)) => {
                OriginTlsError::Certificate(format!("{c:?}"))
            }
            Some(other) => OriginTlsError::Handshake(other.to_string()),
            None => OriginTlsError::Handshake(e.to_string()),
        }
    })
}

/// A TLS connection to an origin, as hyper-util's pool sees it.
pub(super) struct OriginConn(TlsStream<TcpStream>);

impl Connection for OriginConn {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        if self.0.get_ref().1.alpn_protocol() == Some(b"h2") {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl AsyncRead for OriginConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for OriginConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// Dials the original destination for the pool, whatever URI it is asked for: the URI only
/// carries the `Host` (for `:authority` and the pool key), never where to connect.
#[derive(Clone)]
struct Dialer {
    shared: Arc<TlsShared>,
    dst: SocketAddr,
    sni: Arc<str>,
    /// The connection opened before the client's handshake; the first dial takes it.
    first: Arc<Mutex<Option<TlsStream<TcpStream>>>>,
}

impl tower_service::Service<Uri> for Dialer {
    type Response = TokioIo<OriginConn>;
    type Error = OriginTlsError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let first = self.first.lock().take();
        let this = self.clone();
        Box::pin(async move {
            let tls = match first {
                Some(tls) => tls,
                None => {
                    let alpn: Vec<Vec<u8>> = HTTP_ALPN.iter().map(|p| p.to_vec()).collect();
                    connect(&this.shared, this.dst, &this.sni, &alpn).await?
                }
            };
            Ok(TokioIo::new(OriginConn(tls)))
        })
    }
}

/// Timeouts for origin connections (from `[http]`).
#[derive(Debug, Clone, Copy)]
pub struct OriginTimeouts {
    /// Pooled connections unused this long are closed.
    pub idle: Duration,
    /// A response must start within this.
    pub response: Duration,
}

impl OriginTimeouts {
    /// The `[http]` origin timeouts (HTTP and decrypted HTTPS share them).
    pub fn from_config(http: &crate::config::HttpConfig) -> OriginTimeouts {
        OriginTimeouts {
            idle: http.upstream_idle_secs.get(),
            response: http.response_timeout_ms.get(),
        }
    }
}

/// The origin client of one decrypted client connection.
pub(super) struct TlsOrigin {
    client: Client<Dialer, Body>,
    sni: Arc<str>,
    response_timeout: Duration,
}

impl TlsOrigin {
    /// An origin client for `sni` at `dst`, starting with the already verified `first` if any.
    pub(super) fn new(
        shared: Arc<TlsShared>,
        dst: SocketAddr,
        sni: &str,
        first: Option<TlsStream<TcpStream>>,
        timeouts: OriginTimeouts,
    ) -> TlsOrigin {
        let sni: Arc<str> = Arc::from(sni);
        let dialer = Dialer {
            shared,
            dst,
            sni: sni.clone(),
            first: Arc::new(Mutex::new(first)),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(timeouts.idle)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(dialer);
        TlsOrigin {
            client,
            sni,
            response_timeout: timeouts.response,
        }
    }
}

impl OriginClient for TlsOrigin {
    fn send(
        &self,
        orig_dst: SocketAddr,
        mut req: Request<Body>,
    ) -> BoxFuture<'static, Result<Response<Incoming>, ProxyError>> {
        // The client's `Host` becomes the URI authority: `:authority` over HTTP/2, `Host`
        // again over HTTP/1.1 (hyper-util sets it from the URI).
        let host = req
            .headers_mut()
            .remove(header::HOST)
            .and_then(|h| h.to_str().ok().map(str::to_string))
            .unwrap_or_else(|| self.sni.to_string());
        let pq = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let uri = Uri::builder()
            .scheme("https")
            .authority(host.as_str())
            .path_and_query(pq.as_str())
            .build()
            .or_else(|_| {
                Uri::builder()
                    .scheme("https")
                    .authority(&*self.sni)
                    .path_and_query(pq.as_str())
                    .build()
            });
        let uri = match uri {
            Ok(u) => u,
            Err(e) => {
                let e = ProxyError::BadRequest(format!("request target: {e}"));
                return Box::pin(async move { Err(e) });
            }
        };
        *req.uri_mut() = uri;
        *req.version_mut() = http::Version::HTTP_11;
        let fut = self.client.request(req);
        let timeout = self.response_timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, fut).await {
                Ok(Ok(resp)) => Ok(resp),
                Ok(Err(source)) => Err(ProxyError::Upstream { orig_dst, source }),
                Err(_) => Err(ProxyError::UpstreamTimeout {
                    orig_dst,
                    ms: timeout.as_millis() as u64,
                }),
            }
        })
    }
}
