//! Per-request state (`Ctx`) carried through the phases, and the access-log line it becomes.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tracing::info;

use super::{Scheme, metrics::Metrics};
use crate::net::{ClientAddr, OrigDstAddr};

/// How the cache took part in a response (the access log's `cache` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheStatus {
    /// Served from the cache (or from a download already in progress).
    Hit,
    /// Fetched from the origin (and stored if allowed).
    Miss,
    /// Stored, revalidated with the origin (304), served from the cache.
    Revalidated,
    /// Served stale while being revalidated in the background.
    Stale,
    /// The cache was not consulted (method, rule, `Authorization`, `no-store`, upgrade).
    Bypass,
}

impl CacheStatus {
    /// The log and header spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Revalidated => "revalidated",
            CacheStatus::Stale => "stale",
            CacheStatus::Bypass => "bypass",
        }
    }

    /// Whether the body comes from the store.
    pub fn from_cache(self) -> bool {
        matches!(
            self,
            CacheStatus::Hit | CacheStatus::Revalidated | CacheStatus::Stale
        )
    }
}

/// The connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    /// `http` or `https` (decrypted by the TLS layer).
    pub scheme: Scheme,
    /// Who.
    pub client: ClientAddr,
    /// Where the client meant to go.
    pub orig_dst: OrigDstAddr,
}

/// One request's state through the phases.
#[derive(Clone)]
pub struct Ctx {
    /// The connection.
    pub conn: Conn,
    /// Random id on every line about this request.
    pub trace_id: String,
    /// `Host` (or the original destination when there is none).
    pub host: String,
    /// Method.
    pub method: http::Method,
    /// Path and query.
    pub path: String,
    /// The rule that decided, if any.
    pub rule: Option<String>,
    /// Its action.
    pub action: Option<crate::rules::Action>,
    /// A rule on the response's content type may still decide.
    pub content_type_pending: bool,
    /// The rule's freshness override, seconds.
    pub ttl_override: Option<u64>,
    /// The rule's cache-key options.
    pub key_options: crate::rules::CacheKeyOptions,
    /// What the cache did.
    pub cache: CacheStatus,
    /// Joined a download already in progress.
    pub collapsed: bool,
    /// Why the response was not stored, when it was fetched and not stored.
    pub not_stored: Option<&'static str>,
    /// When the request arrived.
    pub started: Instant,
}

impl Ctx {
    /// Turn into the access log, once the response head is known.
    pub fn into_log(self, status: u16, metrics: Arc<Metrics>) -> AccessLog {
        AccessLog {
            ttfb: self.started.elapsed(),
            ctx: self,
            status,
            bytes: 0,
            complete: false,
            error: None,
            expected: None,
            metrics,
        }
    }
}

/// The access-log line of one request, written when it is dropped.
pub struct AccessLog {
    ctx: Ctx,
    status: u16,
    ttfb: Duration,
    /// Body bytes sent.
    pub bytes: u64,
    /// Whether the body was sent completely.
    pub complete: bool,
    /// Why the body broke off.
    pub error: Option<String>,
    /// The body length announced (`Content-Length`), if any.
    pub expected: Option<u64>,
    metrics: Arc<Metrics>,
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        let c = &self.ctx;
        self.metrics.record(c.cache, self.bytes);
        let ttfb_ms = self.ttfb.as_millis() as u64;
        let duration_ms = c.started.elapsed().as_millis() as u64;
        info!(
            target: "velocache::http::access",
            service = c.conn.scheme.service_name(),
            trace_id = %c.trace_id,
            client = %c.conn.client,
            orig_dst = %c.conn.orig_dst,
            host = %c.host,
            method = %c.method,
            path = %c.path,
            status = self.status,
            cache = c.cache.as_str(),
            bytes = self.bytes,
            ttfb_ms,
            duration_ms,
            rule = c.rule.as_deref().unwrap_or(""),
            collapsed = c.collapsed,
            not_stored = c.not_stored.unwrap_or(""),
            complete = self.complete || self.expected == Some(self.bytes),
            error = self.error.as_deref().unwrap_or(""),
            "request"
        );
    }
}

/// A random trace id (16 hex digits).
pub fn trace_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}
