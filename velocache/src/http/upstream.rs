//! Connections to origins: a keep-alive pool keyed by the original destination.
//!
//! Every request is sent to the address the client originally connected to — the request URI
//! given to the client library is rewritten to `http://<orig_dst><path>` and the client's
//! `Host` header is kept — so the pool's key (scheme + authority) is the original destination,
//! and a `Host` naming some other server can never redirect the connection there.
use std::{net::SocketAddr, time::Duration};

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};

use super::{Body, ProxyError};

/// Sends requests to origins. The plain-HTTP pool ([`Upstream`]) is the default; the TLS layer
/// supplies one that speaks TLS to the original destination, and gets the same proxy, cache
/// and rules through [`super::Proxy::with_origin`].
pub trait OriginClient: Send + Sync + 'static {
    /// Send `req` (origin-form URI, headers already filtered) to `orig_dst`.
    fn send(
        &self,
        orig_dst: SocketAddr,
        req: Request<Body>,
    ) -> futures::future::BoxFuture<'static, Result<Response<Incoming>, ProxyError>>;
}

/// The origin side of the proxy for plain HTTP.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, Body>,
    response_timeout: Duration,
}

impl Upstream {
    /// A pool whose connections time out connecting after `connect` and are closed after
    /// `idle` unused; responses must start within `response`.
    pub fn new(connect: Duration, idle: Duration, response: Duration) -> Upstream {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(connect));
        conn.set_keepalive(Some(Duration::from_secs(60)));
        conn.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(idle)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(conn);
        Upstream {
            client,
            response_timeout: response,
        }
    }

    /// Send `req` (origin-form URI, headers already filtered) to `orig_dst`.
    pub async fn request(
        &self,
        orig_dst: SocketAddr,
        mut req: Request<Body>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let pq = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let authority = match orig_dst {
            SocketAddr::V4(v4) => v4.to_string(),
            SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
        };
        *req.uri_mut() = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(pq)
            .build()
            .map_err(|e| ProxyError::BadRequest(format!("request target: {e}")))?;
        *req.version_mut() = http::Version::HTTP_11;
        match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(source)) => Err(ProxyError::Upstream { orig_dst, source }),
            Err(_) => Err(ProxyError::UpstreamTimeout {
                orig_dst,
                ms: self.response_timeout.as_millis() as u64,
            }),
        }
    }
}

impl OriginClient for Upstream {
    fn send(
        &self,
        orig_dst: SocketAddr,
        req: Request<Body>,
    ) -> futures::future::BoxFuture<'static, Result<Response<Incoming>, ProxyError>> {
        let this = self.clone();
        Box::pin(async move { this.request(orig_dst, req).await })
    }
}
