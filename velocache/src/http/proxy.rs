//! The proxy and its phases, in the order a request meets them (pingora's phase order):
//!
//! 1. `request_filter` — the [`Phases`] hook, rules (`deny` answers
//!    403 here), the `Host` check. A filter that answers ends the request (pingora's
//!    `Ok(true)`; here `Some(response)`).
//! 2. upgrade requests (WebSocket) are relayed as a tunnel;
//! 3. cacheable requests (GET/HEAD, rules permitting, no `Authorization`, no `no-store`) go
//!    through the cache (`cached`); everything else is forwarded untouched, and a successful
//!    unsafe method invalidates what is stored for its URI;
//! 4. `upstream_request_filter` — hop-by-hop headers out, `Via` in;
//! 5. `response_filter` — the same for the response, then the [`Phases`] hook;
//! 6. logging — one access-log line per request when its body has been sent (or abandoned).
use std::{convert::Infallible, sync::Arc, time::Duration};

use http::{HeaderValue, Request, Response, StatusCode, header, request, response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{Instrument as _, Span, debug, info_span, warn};
use velocache_common::Service;

use super::{
    Body, ProxyError, Scheme,
    body::{Logged, boxed, full},
    cached::HttpCache,
    ctx::{CacheStatus, Conn, Ctx, trace_id},
    framing,
    headers::{HostCheck, add_via, check_host, is_upgrade, strip_hop_by_hop},
    hostnames::HostNames,
    metrics::Metrics,
    upstream::OriginClient,
};
use crate::{
    cache::{cache_control::CacheControl, policy::Heuristic},
    rules::{Action, CacheKeyOptions, Facts, Rules},
};

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

/// Runs HTTP/2 streams as tasks inside the connection's span, so that their log lines carry
/// what the connection's layers know (the TLS layer's `sni`, `rule`, `action`).
#[derive(Clone)]
struct InSpan(Span);

impl<F> hyper::rt::Executor<F> for InSpan
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(fut.instrument(self.0.clone()));
    }
}

/// Hooks around the built-in phases, for layers built on the proxy (the TLS layer's CA page,
/// say). Every method has a default that does nothing.
pub trait Phases: Send + Sync + 'static {
    /// Answer the request yourself: `Some(response)` ends it there.
    fn request_filter(&self, _ctx: &Ctx, _req: &request::Parts) -> Option<Response<Body>> {
        None
    }

    /// A last look at every response head sent to a client.
    fn response_filter(&self, _ctx: &Ctx, _resp: &mut response::Parts) {}
}

/// What the rules say once the response's content type is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Store it (by HTTP's rules).
    Store,
    /// Do not store it.
    DontStore,
    /// Answer 403 instead (the rule's name).
    Deny(String),
}

/// No hooks.
pub struct NoPhases;

impl Phases for NoPhases {}

/// Settings the phases use.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `Via` pseudonym.
    pub via: HeaderValue,
    /// Waiting for another client's download.
    pub lock_wait: Duration,
    /// Per-object limit.
    pub max_object_bytes: u64,
    /// Slice size of new objects.
    pub slice_bytes: u64,
    /// RAM-tier object limit.
    pub memory_object_max_bytes: u64,
    /// Heuristic freshness.
    pub heuristic: Heuristic,
    /// Client request-header timeout.
    pub header_read_timeout: Duration,
}

/// The HTTP proxy.
pub struct Proxy {
    pub(super) settings: Settings,
    pub(super) rules: Rules,
    pub(super) cache: Option<Arc<HttpCache>>,
    pub(super) upstream: Arc<dyn OriginClient>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) hosts: HostNames,
    pub(super) phases: Arc<dyn Phases>,
}

impl Proxy {
    /// The same proxy — settings, rules, cache, metrics, hooks — sending to origins through
    /// `origin`: what the TLS layer uses for decrypted HTTPS, so that an object fetched over
    /// HTTP and over HTTPS is stored once.
    pub fn with_origin(&self, origin: Arc<dyn OriginClient>) -> Arc<Proxy> {
        Arc::new(Proxy {
            settings: self.settings.clone(),
            rules: self.rules.clone(),
            cache: self.cache.clone(),
            upstream: origin,
            metrics: self.metrics.clone(),
            hosts: self.hosts.clone(),
            phases: self.phases.clone(),
        })
    }

    /// Serve `io` — an intercepted TCP stream, or a stream the TLS layer has decrypted — in
    /// `protocol` until the client closes it.
    pub async fn serve<S>(self: Arc<Self>, io: S, conn: Conn, protocol: ClientProtocol)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let proxy = self.clone();
        let svc = hyper::service::service_fn(move |req| {
            let p = proxy.clone();
            async move { Ok::<_, Infallible>(p.handle(conn, req).await) }
        });
        let result = match protocol {
            ClientProtocol::Http1 => {
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(self.settings.header_read_timeout)
                    // A client may send its request and shut its side down (half-close); it
                    // still gets its answer, as from any origin.
                    .half_close(true)
                    .keep_alive(true);
                builder
                    .serve_connection(TokioIo::new(io), svc)
                    .with_upgrades()
                    .await
            }
            ClientProtocol::Http2 => {
                let mut builder = hyper::server::conn::http2::Builder::new(InSpan(Span::current()));
                builder
                    .timer(TokioTimer::new())
                    // Idle clients are pinged, and dropped when they stop answering.
                    .keep_alive_interval(Some(Duration::from_secs(30)))
                    .keep_alive_timeout(self.settings.header_read_timeout);
                builder.serve_connection(TokioIo::new(io), svc).await
            }
        };
        if let Err(e) = result {
            debug!(client = %conn.client, orig_dst = %conn.orig_dst, error = %e, "client connection ended with an error");
        }
    }

    async fn handle(self: Arc<Self>, conn: Conn, req: Request<Incoming>) -> Response<Body> {
        let mut ctx = self.new_ctx(conn, &req);
        let span =
            info_span!("http", trace_id = %ctx.trace_id, client = %conn.client, host = %ctx.host);
        let result = self.process(&mut ctx, req).instrument(span).await;
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                warn!(
                    service = conn.scheme.service_name(),
                    trace_id = %ctx.trace_id,
                    client = %conn.client,
                    host = %ctx.host,
                    orig_dst = %conn.orig_dst,
                    error = %e,
                    side = ?e.side(),
                    retryable = e.retryable(),
                    "request failed"
                );
                error_response(e.status(), &e.to_string())
            }
        };
        let (mut parts, body) = resp.into_parts();
        self.phases.response_filter(&ctx, &mut parts);
        let mut log = ctx.into_log(parts.status.as_u16(), self.metrics.clone());
        log.expected = if ctx_head_only(&parts) {
            Some(0)
        } else {
            parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        };
        Response::from_parts(parts, boxed(Logged::new(body, log)))
    }

    fn new_ctx(&self, conn: Conn, req: &Request<Incoming>) -> Ctx {
        // The request line's authority (absolute form, or HTTP/2's `:authority`) wins over
        // `Host` (RFC 9112 §3.2.2), for the cache key as for what the origin is told.
        let host = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| match conn.orig_dst.0 {
                std::net::SocketAddr::V4(v4) => v4.ip().to_string(),
                std::net::SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
            });
        Ctx {
            conn,
            trace_id: trace_id(),
            host,
            method: req.method().clone(),
            path: req
                .uri()
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
            rule: None,
            action: None,
            content_type_pending: false,
            ttl_override: None,
            key_options: CacheKeyOptions::default(),
            cache: CacheStatus::Bypass,
            collapsed: false,
            not_stored: None,
            started: std::time::Instant::now(),
        }
    }

    async fn process(
        self: &Arc<Self>,
        ctx: &mut Ctx,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, ProxyError> {
        let (parts, body) = req.into_parts();
        if let Err(refusal) = framing::check_request(&parts) {
            return Err(ProxyError::Refused(refusal));
        }
        if let Some(resp) = self.request_filter(ctx, &parts) {
            return Ok(resp);
        }
        if parts.method == http::Method::CONNECT {
            return super::upgrade::connect(self, ctx, parts, body).await;
        }
        if is_upgrade(&parts.headers) {
            return super::upgrade::proxy(self, ctx, parts, body).await;
        }
        // A body on a GET or HEAD has no defined meaning, but a server may give it one (a
        // search API, say): such a request is never answered from, nor stored under, its URL
        // alone. It goes to the origin with its body, like any other request with one.
        let with_body = framing::has_body(&body);
        let cacheable = matches!(parts.method, http::Method::GET | http::Method::HEAD)
            && !with_body
            && matches!(ctx.action, None | Some(Action::Cache))
            && !parts.headers.contains_key(header::AUTHORIZATION)
            && !CacheControl::from_headers(&parts.headers).no_store;
        if cacheable && let Some(cache) = &self.cache {
            return super::cached::handle(self, cache, ctx, parts).await;
        }
        ctx.cache = CacheStatus::Bypass;
        if with_body && matches!(parts.method, http::Method::GET | http::Method::HEAD) {
            ctx.not_stored = Some("request has a body");
        }
        let method = parts.method.clone();
        let resp = self
            .forward(ctx, parts, boxed(framing::ClientBody::new(body)))
            .await?;
        if let Some(cache) = &self.cache
            && crate::cache::policy::invalidates(&method, resp.status())
        {
            cache.invalidate(ctx, resp.headers()).await;
        }
        if let Some(deny) = self.content_type_deny(ctx, resp.headers()) {
            return Ok(deny);
        }
        Ok(resp)
    }

    /// Phase 1.
    fn request_filter(&self, ctx: &mut Ctx, parts: &request::Parts) -> Option<Response<Body>> {
        if let Some(r) = self.phases.request_filter(ctx, parts) {
            return Some(r);
        }
        let rules = self.rules.current();
        let facts = Facts {
            service: ctx.conn.scheme.service(),
            host: &ctx.host,
            path: Some(&ctx.path),
            method: Some(ctx.method.as_str()),
            content_type: None,
        };
        if let Some(d) = rules.evaluate(&facts) {
            ctx.rule = Some(d.rule.name.clone());
            ctx.action = Some(d.action);
            ctx.ttl_override = d.ttl_override.map(|t| t.as_secs());
            ctx.key_options = d.rule.cache_key.clone();
            if d.action == Action::Deny {
                return Some(deny_response(&d.rule.name));
            }
        } else if rules.undecided_until_response(&facts) {
            ctx.content_type_pending = true;
        }
        let dst = ctx.conn.orig_dst.0.ip();
        match check_host(&ctx.host, dst) {
            HostCheck::Matches => {}
            HostCheck::Mismatch => warn!(
                trace_id = %ctx.trace_id,
                client = %ctx.conn.client,
                host = %ctx.host,
                orig_dst = %ctx.conn.orig_dst,
                "Host does not match the original destination; forwarding to the original destination"
            ),
            HostCheck::Name => self.hosts.check(&ctx.host, dst, &ctx.trace_id),
        }
        None
    }

    /// Rules that look at the response's content type, once it is known.
    pub(super) fn content_type_verdict(&self, ctx: &mut Ctx, resp: &http::HeaderMap) -> Verdict {
        if !ctx.content_type_pending {
            return Verdict::Store;
        }
        let ct = resp
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let rules = self.rules.current();
        let facts = Facts {
            service: ctx.conn.scheme.service(),
            host: &ctx.host,
            path: Some(&ctx.path),
            method: Some(ctx.method.as_str()),
            content_type: Some(ct),
        };
        let Some(d) = rules.evaluate(&facts) else {
            return Verdict::Store;
        };
        ctx.rule = Some(d.rule.name.clone());
        ctx.action = Some(d.action);
        ctx.ttl_override = d.ttl_override.map(|t| t.as_secs());
        match d.action {
            Action::Deny => Verdict::Deny(d.rule.name.clone()),
            Action::Cache => Verdict::Store,
            Action::Passthrough | Action::InterceptNoCache => Verdict::DontStore,
        }
    }

    fn content_type_deny(&self, ctx: &mut Ctx, resp: &http::HeaderMap) -> Option<Response<Body>> {
        match self.content_type_verdict(ctx, resp) {
            Verdict::Deny(rule) => Some(deny_response(&rule)),
            _ => None,
        }
    }

    /// Phase 4: what the origin may see of a client's request.
    pub(super) fn upstream_request_filter(&self, parts: &mut request::Parts) {
        strip_hop_by_hop(&mut parts.headers);
        add_via(&mut parts.headers, parts.version, &self.settings.via);
    }

    /// Send a request to the original destination (phase 4 applied here). Its framing
    /// headers are made to describe `body` exactly (`framing`), so a pooled connection never
    /// goes back to the pool owing bytes.
    pub(super) async fn send(
        &self,
        ctx: &Ctx,
        mut parts: request::Parts,
        body: Body,
    ) -> Result<Response<Incoming>, ProxyError> {
        self.upstream_request_filter(&mut parts);
        framing::frame_upstream(&mut parts, &http_body::Body::size_hint(&body));
        // The host the request is for, as `new_ctx` settled it: HTTP/2 clients name it in
        // `:authority`, which the origin-form request has lost, and an absolute-form request
        // line overrides whatever `Host` came with it (RFC 9112 §3.2.2).
        if let Ok(host) = HeaderValue::from_str(&ctx.host) {
            parts.headers.insert(header::HOST, host);
        }
        self.metrics.origin_fetch();
        let sent = self
            .upstream
            .send(ctx.conn.orig_dst.0, Request::from_parts(parts, body))
            .await;
        if let Err(ProxyError::Upstream { source, .. }) = &sent
            && let Some(reason) = framing::client_body_fault(source)
        {
            return Err(ProxyError::ClientBody(reason));
        }
        sent
    }

    /// Forward untouched (but for hop-by-hop headers and `Via`) and relay the answer.
    pub(super) async fn forward(
        &self,
        ctx: &Ctx,
        parts: request::Parts,
        body: Body,
    ) -> Result<Response<Body>, ProxyError> {
        let resp = self.send(ctx, parts, body).await?;
        Ok(self.relay(resp))
    }

    /// Phase 5 for an origin's response relayed as is.
    pub(super) fn relay(&self, resp: Response<Incoming>) -> Response<Body> {
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        add_via(
            &mut parts.headers,
            http::Version::HTTP_11,
            &self.settings.via,
        );
        Response::from_parts(parts, boxed(body))
    }
}

/// Responses that never have a body.
fn ctx_head_only(parts: &response::Parts) -> bool {
    parts.status == StatusCode::NOT_MODIFIED
        || parts.status == StatusCode::NO_CONTENT
        || parts.status.is_informational()
}

/// 403 for a `deny` rule: short, plain, and says which rule.
pub(super) fn deny_response(rule: &str) -> Response<Body> {
    let mut r = Response::new(full(format!("Forbidden by rule {rule}\n")));
    *r.status_mut() = StatusCode::FORBIDDEN;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// How the gateway's own error pages begin (the warm-up quotes what follows).
pub(super) const ERROR_PAGE_PREFIX: &str = "VeloCache: ";

/// An error page.
pub(super) fn error_response(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(full(format!("{ERROR_PAGE_PREFIX}{msg}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
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
