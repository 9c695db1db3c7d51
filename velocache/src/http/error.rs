//! Proxy errors: where they came from, whether a retry could help, what the client is told.
use std::net::SocketAddr;

use http::StatusCode;
use thiserror::Error;

use crate::{cache::CacheError, origins::Failure};

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
    /// The origin's circuit breaker is open: the request was not sent (`crate::origins`).
    #[error("origin {orig_dst}{} is unavailable: {reason}; retry in {retry_after_secs} s", host.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
    OriginUnavailable {
        /// The original destination.
        orig_dst: SocketAddr,
        /// A host name it serves, if known.
        host: Option<String>,
        /// Why its breaker is open.
        reason: String,
        /// When it lets a probe through again.
        retry_after_secs: u64,
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
            | ProxyError::OriginUnavailable { .. }
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
            ProxyError::OriginUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upstream { .. } | ProxyError::Upgrade { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::BadRequest(_) | ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::Refused(r) => r.status(),
            ProxyError::Cache(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl ProxyError {
    /// What this error says about the origin's health (`None`: nothing — the client's fault,
    /// the gateway's, or a request that was never sent).
    pub fn origin_failure(&self) -> Option<Failure> {
        match self {
            ProxyError::UpstreamTimeout { .. } => Some(Failure::Timeout),
            ProxyError::Upstream { source, .. } => Some(classify(source)),
            _ => None,
        }
    }

    /// Whether the origin failed (or its breaker is open): what may be answered from a stale
    /// or learned response instead (RFC 5861 §4's "error").
    pub fn origin_failed(&self) -> bool {
        self.origin_failure().is_some() || matches!(self, ProxyError::OriginUnavailable { .. })
    }
}

/// The failure a client-library error means, from the first cause in its chain that tells.
fn classify(e: &hyper_util::client::legacy::Error) -> Failure {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            let f = crate::origins::io_failure(io);
            if f != Failure::Other {
                return f;
            }
        }
        if let Some(h) = c.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() {
                return Failure::Closed;
            }
            if h.is_timeout() {
                return Failure::Timeout;
            }
        }
        cause = c.source();
    }
    Failure::Other
}
