//! Per-request state carried through the phases ([`Ctx`]), the connection it arrived on
//! ([`Conn`]), and the access-log line it becomes.
//!
//! The proxy makes a `Ctx` from the request head and hands it, `&mut`, to every phase in turn:
//! phases write what they decided (the rule and its action, the cache's decision and the reason
//! it did not store, timings) and read what the others decided. It leaves, once the response
//! body has been sent or abandoned, as the input of the `logging` phases and as the request's
//! `request` access-log line ([`write_access_log`]). A phase that needs per-request state of its
//! own keeps it in [`Ctx::extensions`] (one slot per type; nothing is allocated unless a phase
//! uses it) — where a capture phase would keep the request and response heads it saw.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tracing::info;
use velocache_common::Service;

use crate::{
    cache::{ObjectKey, ObjectMeta},
    net::{ClientAddr, OrigDstAddr},
    rules::{Action, CacheKeyOptions},
};

/// The scheme a connection's requests were sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTPS, decrypted by the TLS layer.
    Https,
}

impl Scheme {
    /// The service a request on this scheme counts as.
    pub fn service(self) -> Service {
        match self {
            Scheme::Http => Service::Http,
            Scheme::Https => Service::Https,
        }
    }

    /// Its name in logs.
    pub fn service_name(self) -> &'static str {
        self.service().name()
    }
}

/// The HTTP version a client speaks on its connection (for HTTPS, what ALPN chose).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientProtocol {
    /// HTTP/1.1 (and 1.0).
    Http1,
    /// HTTP/2.
    Http2,
}

impl ClientProtocol {
    /// Its ALPN name (`h2`, `http/1.1`), as logged.
    pub fn alpn(self) -> &'static str {
        match self {
            ClientProtocol::Http1 => "http/1.1",
            ClientProtocol::Http2 => "h2",
        }
    }
}

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
    /// The origin failed: answered from ghost mode's learned response to this request.
    Ghost,
    /// The origin failed: answered from ghost mode's learned response to the nearest request
    /// of the same path template.
    GhostNearest,
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
            CacheStatus::Ghost => "ghost",
            CacheStatus::GhostNearest => "ghost-nearest",
        }
    }

    /// Whether the body comes from the store.
    pub fn from_cache(self) -> bool {
        matches!(
            self,
            CacheStatus::Hit
                | CacheStatus::Revalidated
                | CacheStatus::Stale
                | CacheStatus::Ghost
                | CacheStatus::GhostNearest
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

/// What the cache decided for a request, and why.
#[derive(Debug, Clone)]
pub struct CacheDecision {
    /// What it did.
    pub status: CacheStatus,
    /// The key the request was looked up under (set once the cache path is done; `None` when
    /// the cache was not consulted).
    pub key: Option<ObjectKey>,
    /// Joined a download already in progress.
    pub collapsed: bool,
    /// Why the response was not stored, when it was fetched and not stored (an RFC 9111
    /// reason such as `no-store`, or `rule`, `method`, `larger than max_object_bytes`…).
    pub not_stored: Option<&'static str>,
    /// The stored object the response was answered from (its freshness lifetime, age and
    /// validators), for hits, stale and revalidated answers.
    pub object: Option<Arc<ObjectMeta>>,
    /// Answered stale because the origin failed (stale-if-error), not while revalidating.
    pub stale_on_error: bool,
}

impl Default for CacheDecision {
    fn default() -> Self {
        CacheDecision {
            status: CacheStatus::Bypass,
            key: None,
            collapsed: false,
            not_stored: None,
            object: None,
            stale_on_error: false,
        }
    }
}

/// When things happened to a request.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// The request head was read.
    pub started: Instant,
    /// The (last) request to the origin was sent, if one was.
    pub upstream_sent: Option<Instant>,
    /// Its response head arrived.
    pub upstream_head: Option<Instant>,
    /// The response head was handed to the client's connection (time to first byte).
    pub response_head: Option<Instant>,
}

impl Timings {
    /// Timings of a request whose head was read now.
    pub fn start() -> Timings {
        Timings {
            started: Instant::now(),
            upstream_sent: None,
            upstream_head: None,
            response_head: None,
        }
    }
}

/// One request's state through the phases.
#[derive(Clone)]
pub struct Ctx {
    /// The connection.
    pub conn: Conn,
    /// Random id on every line about this request.
    pub trace_id: String,
    /// The host the request is for: the request line's authority (absolute form, HTTP/2's
    /// `:authority`), else `Host`, else the original destination's address.
    pub host: String,
    /// Method.
    pub method: http::Method,
    /// Path and query.
    pub path: String,
    /// The rule that decided, if any.
    pub rule: Option<String>,
    /// Its action.
    pub action: Option<Action>,
    /// A rule on the response's content type may still decide.
    pub content_type_pending: bool,
    /// The rule asked for ghost mode (`ghost = true`).
    pub ghost: bool,
    /// The rule's freshness override, seconds.
    pub ttl_override: Option<u64>,
    /// The cache-key options the key is derived with (the rule's; a cache-key phase may change
    /// them, or set `cache.key` itself).
    pub key_options: CacheKeyOptions,
    /// What the cache did and why.
    pub cache: CacheDecision,
    /// When things happened.
    pub timings: Timings,
    /// Per-request state of phases, by type.
    pub extensions: http::Extensions,
}

/// How a request ended, as the `logging` phases and the access log see it.
#[derive(Debug, Clone)]
pub struct RequestEnd {
    /// The status sent.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// Whether the whole body was sent.
    pub complete: bool,
    /// Why the body broke off.
    pub error: Option<String>,
}

/// Write the `request` access-log line of a finished request.
pub fn write_access_log(c: &Ctx, end: &RequestEnd) {
    let ttfb_ms = c
        .timings
        .response_head
        .map_or(Duration::ZERO, |t| t.duration_since(c.timings.started))
        .as_millis() as u64;
    let duration_ms = c.timings.started.elapsed().as_millis() as u64;
    info!(
        target: "velocache::http::access",
        service = c.conn.scheme.service_name(),
        trace_id = %c.trace_id,
        client = %c.conn.client,
        orig_dst = %c.conn.orig_dst,
        host = %c.host,
        method = %c.method,
        path = %c.path,
        status = end.status,
        cache = c.cache.status.as_str(),
        bytes = end.bytes,
        ttfb_ms,
        duration_ms,
        rule = c.rule.as_deref().unwrap_or(""),
        collapsed = c.cache.collapsed,
        stale_if_error = c.cache.stale_on_error,
        not_stored = c.cache.not_stored.unwrap_or(""),
        complete = end.complete,
        error = end.error.as_deref().unwrap_or(""),
        "request"
    );
}

/// A random trace id (16 hex digits).
pub fn trace_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}
