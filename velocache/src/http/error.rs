//! Proxy errors: where they came from, whether a retry could help, what the client is told.
use std::net::SocketAddr;

use http::StatusCode;
use thiserror::Error;

use crate::cache::CacheError;

/// Which side of the proxy failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The origin (connect, timeout, bad response).
    Upstream,
    /// The client (bad request).
    Downstream,
    /// The gateway itself (cache, configuration).
    Internal,
}

/// What can go wrong while proxying one request.
#[derive(Debug, Error)]
pub enum ProxyError {
    /// The origin could not be reached or failed mid-request.
    // The client library's own message ("client error (Connect)") says little without the cause
    // it wraps (a refused connection, a certificate that failed verification).
    #[error("origin {orig_dst}: {}", crate::telemetry::error_chain(source))]
    Upstream {
        /// The original destination.
        orig_dst: SocketAddr,
        /// The client library's error.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The origin did not answer in time.
    #[error("origin {orig_dst} sent no response headers within {ms} ms")]
    UpstreamTimeout {
        /// The original destination.
        orig_dst: SocketAddr,
        /// The limit.
        ms: u64,
    },
    /// A protocol upgrade (WebSocket) failed.
    #[error("upgrade to {orig_dst}: {reason}")]
    Upgrade {
        /// The original destination.
        orig_dst: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The request cannot be proxied.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The request breaks a rule a server must enforce (`Host`, `Expect`).
    #[error("bad request: {}", .0.reason())]
    Refused(super::framing::Refusal),
    /// The client's request body broke its own framing (a bad chunk, an early close).
    #[error("bad request body: {0}")]
    ClientBody(String),
    /// The cache failed.
    #[error("cache: {0}")]
    Cache(#[from] CacheError),
}

impl ProxyError {
    /// Where the error came from.
    pub fn side(&self) -> Side {
        match self {
            ProxyError::Upstream { .. }
            | ProxyError::UpstreamTimeout { .. }
            | ProxyError::Upgrade { .. } => Side::Upstream,
            ProxyError::BadRequest(_) | ProxyError::Refused(_) | ProxyError::ClientBody(_) => {
                Side::Downstream
            }
            ProxyError::Cache(_) => Side::Internal,
        }
    }

    /// Whether sending the same request again may succeed (nothing reached the client yet and
    /// the failure was in connecting).
    pub fn retryable(&self) -> bool {
        match self {
            ProxyError::Upstream { source, .. } => source.is_connect(),
            ProxyError::Cache(_) => true,
            _ => false,
        }
    }

    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream { .. } | ProxyError::Upgrade { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::BadRequest(_) | ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::Refused(r) => r.status(),
            ProxyError::Cache(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}
