//! The admin API client the CLI uses: one HTTP/1.1 request per call over the Unix socket (or
//! the TCP listener with its token), JSON in and out.
//!
//! Errors say what a script needs to branch on: the daemon is not running (no socket, or
//! nothing answers), the socket is root-only, the daemon answered an error ([`ErrorBody`]).
use std::{path::PathBuf, time::Duration};

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde::{Serialize, de::DeserializeOwned};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::admin::api::ErrorBody;

/// Where the daemon's admin API is.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// The Unix socket.
    Socket(PathBuf),
    /// The TCP listener, with its bearer token.
    Tcp {
        /// `host:port`.
        addr: String,
        /// The token.
        token: String,
    },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Socket(p) => write!(f, "{}", p.display()),
            Endpoint::Tcp { addr, .. } => write!(f, "{addr}"),
        }
    }
}

/// Why a call did not get an answer.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Nothing listens: the daemon is not running (or uses another socket).
    #[error("the velocache daemon is not running (cannot connect to {endpoint}: {source})")]
    NotRunning {
        /// Where we looked.
        endpoint: String,
        /// The connect error.
        #[source]
        source: std::io::Error,
    },
    /// The socket exists but is root-only.
    #[error("permission denied on {endpoint}: the admin socket is root-only (try sudo)")]
    PermissionDenied {
        /// The socket.
        endpoint: String,
    },
    /// The daemon answered with an error.
    #[error("{}", body.error)]
    Api {
        /// HTTP status.
        status: u16,
        /// The error.
        body: ErrorBody,
    },
    /// The exchange itself failed (connection reset, bad JSON, timeout).
    #[error("talking to the daemon at {endpoint}: {reason}")]
    Protocol {
        /// Where.
        endpoint: String,
        /// What happened.
        reason: String,
    },
}

/// A client for one endpoint.
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
    timeout: Duration,
}

impl Client {
    /// A client; each call gives up after `timeout`.
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Self {
        Client { endpoint, timeout }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// `GET path`, JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let bytes = self.call(Method::GET, path, None).await?;
        self.decode(&bytes)
    }

    /// `POST path` with a JSON body, JSON answer.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| self.protocol(e.to_string()))?;
        let bytes = self.call(Method::POST, path, Some(body)).await?;
        self.decode(&bytes)
    }

    /// `GET path`, the answer's bytes as they are (a pcap file).
    pub async fn get_bytes(&self, path: &str) -> Result<Bytes, ClientError> {
        self.call(Method::GET, path, None).await
    }

    /// `GET path?k=v&…` (values percent-encoded) and decode the JSON answer.
    pub async fn get_query<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &[(&str, &str)],
    ) -> Result<T, ClientError> {
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", query_escape(v)))
            .collect();
        self.get(&format!("{path}?{}", query.join("&"))).await
    }

    /// `GET path`, text answer (`/metrics`).
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let bytes = self.call(Method::GET, path, None).await?;
        String::from_utf8(bytes.to_vec()).map_err(|e| self.protocol(e.to_string()))
    }

    fn protocol(&self, reason: impl Into<String>) -> ClientError {
        ClientError::Protocol {
            endpoint: self.endpoint.to_string(),
            reason: reason.into(),
        }
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, ClientError> {
        serde_json::from_slice(bytes).map_err(|e| self.protocol(format!("unexpected answer: {e}")))
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        let exchange = async {
            match &self.endpoint {
                Endpoint::Socket(p) => {
                    let stream = tokio::net::UnixStream::connect(p)
                        .await
                        .map_err(|e| self.connect_error(e))?;
                    self.exchange(stream, method, path, body, None).await
                }
                Endpoint::Tcp { addr, token } => {
                    let stream = tokio::net::TcpStream::connect(addr.as_str())
                        .await
                        .map_err(|e| self.connect_error(e))?;
                    self.exchange(stream, method, path, body, Some(token)).await
                }
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| self.protocol(format!("no answer within {:?}", self.timeout)))?
    }

    fn connect_error(&self, e: std::io::Error) -> ClientError {
        match e.kind() {
            std::io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
                endpoint: self.endpoint.to_string(),
            },
            _ => ClientError::NotRunning {
                endpoint: self.endpoint.to_string(),
                source: e,
            },
        }
    }

    async fn exchange<S>(
        &self,
        stream: S,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        token: Option<&String>,
    ) -> Result<Bytes, ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.protocol(e.to_string()))?;
        let driver = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "velocache");
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.protocol(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| self.protocol(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.protocol(e.to_string()))?
            .to_bytes();
        driver.abort();
        if status.is_success() {
            return Ok(bytes);
        }
        let body: ErrorBody = serde_json::from_slice(&bytes).map_err(|_| {
            self.protocol(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ))
        })?;
        Err(ClientError::Api {
            status: status.as_u16(),
            body,
        })
    }
}

/// `s` for a query string: unreserved characters as they are, every other byte `%XX`.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
