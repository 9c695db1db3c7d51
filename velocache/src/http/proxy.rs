//! The proxy: a client connection enters ([`Proxy::serve`]), hyper parses its requests, and this
//! file puts each request through its phases in order — it decides nothing itself beyond the
//! order. A response leaves for each request, with a body that reports its end to the logging
//! step. The order (pingora's, `docs/user_guide/phase.md`):
//!
//! 1. framing checks (`framing`: one `Host`, known `Expect`) — the proxy's own, never a phase;
//! 2. `request_filter` phases (the CA page, the rules: `deny` answers here); then the `Host`
//!    check against the original destination (logged, never acted upon);
//! 3. tunnels (`CONNECT`, `Upgrade`) leave here for `upgrade`;
//! 4. requests the cache may answer (GET/HEAD without a body, rules permitting, no
//!    `Authorization`, no `no-store`): `cache_key_filter` phases, the key, then the cache path
//!    (`cached`), which gets the [`Fetcher`] and returns an outcome; everything else is sent by
//!    the fetcher as is (`upstream_request_filter`/`upstream_response_filter` phases run in it),
//!    a successful unsafe method invalidates what is stored for its URI, and the
//!    `response_cache_filter` phases may answer instead (a content-type `deny`);
//! 5. `response_filter` phases on every response head, `response_body_filter` on its body;
//! 6. `body_tap` phases: taps that see the response body as it leaves;
//! 7. logging — when the body has been sent or abandoned: the metrics, the access-log line, the
//!    `logging` phases.
use std::{
    convert::Infallible,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header, response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{Instrument as _, Span, debug, info_span, warn};

use super::{
    Body, ProxyError,
    answer::error_response,
    body::{BodyEnd, Logged, OnEnd, boxed},
    cached::{self, Outcome},
    ctx::{CacheDecision, CacheStatus, ClientProtocol, Conn, Ctx, RequestEnd, Timings, trace_id},
    fetch::{Fetcher, OriginFetcher},
    framing, ghost,
    headers::{HostCheck, check_host, is_upgrade},
    hostnames::HostNames,
    interim::{InterimIo, InterimSender},
    metrics::Metrics,
    phase::{BodyTap, Chain, Verdict},
    sendfile::{Gate, SendfileConn},
    store::{HttpCache, key_for},
    upgrade::{self, Tunnels},
    upstream::OriginClient,
};
use crate::{
    cache::cache_control::CacheControl,
    origins::Origins,
    rules::{Action, CacheKeyOptions, Rules},
};

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

/// Settings of the proxy itself (the cache path has its own: `store::CacheSettings`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `Via` pseudonym.
    pub via: HeaderValue,
    /// Client request-header timeout.
    pub header_read_timeout: Duration,
    /// Plain HTTP/1.1 connections send hits' bodies from the slice files (`[http] sendfile`).
    pub sendfile: bool,
    /// How long an origin has to accept a tunnel's connection (`[http] connect_timeout_ms`).
    pub connect_timeout: Duration,
}

/// The HTTP proxy.
pub struct Proxy {
    settings: Settings,
    chain: Chain,
    /// The rules, for keying an admin request as a client's would be (the rules phase holds
    /// the same handle).
    rules: Rules,
    cache: Option<Arc<HttpCache>>,
    fetcher: Arc<dyn Fetcher>,
    origins: Arc<Origins>,
    metrics: Arc<Metrics>,
    hosts: HostNames,
}

impl Proxy {
    /// A proxy running `chain`, storing in `cache`, sending to origins through `origin`.
    pub(super) fn new(
        settings: Settings,
        chain: Chain,
        rules: Rules,
        cache: Option<Arc<HttpCache>>,
        origin: Arc<dyn OriginClient>,
        origins: Arc<Origins>,
        metrics: Arc<Metrics>,
    ) -> Proxy {
        let fetcher = Arc::new(OriginFetcher::new(
            origin,
            origins.clone(),
            chain.clone(),
            settings.via.clone(),
            metrics.clone(),
        ));
        Proxy {
            settings,
            chain,
            rules,
            cache,
            fetcher,
            origins,
            metrics,
            hosts: HostNames::default(),
        }
    }

    /// The same proxy — settings, phases, rules, cache, metrics — sending to origins through
    /// `origin`: what the TLS layer uses for decrypted HTTPS, so that an object fetched over
    /// HTTP and over HTTPS is stored once.
    pub fn with_origin(&self, origin: Arc<dyn OriginClient>) -> Arc<Proxy> {
        Arc::new(Proxy {
            fetcher: Arc::new(OriginFetcher::new(
                origin,
                self.origins.clone(),
                self.chain.clone(),
                self.settings.via.clone(),
                self.metrics.clone(),
            )),
            settings: self.settings.clone(),
            chain: self.chain.clone(),
            rules: self.rules.clone(),
            cache: self.cache.clone(),
            origins: self.origins.clone(),
            metrics: self.metrics.clone(),
            hosts: self.hosts.clone(),
        })
    }

    /// Whether plain connections send hits' bodies with `sendfile` (`[http] sendfile`).
    pub(super) fn sendfile(&self) -> bool {
        self.settings.sendfile
    }

    /// The counter a [`SendfileIo`](super::sendfile::SendfileIo) counts its file bytes into.
    pub(super) fn sendfile_counter(&self) -> prometheus_client::metrics::counter::Counter {
        self.metrics.sendfile_bytes.clone()
    }

    /// The cache, when caching is on.
    pub(super) fn cache(&self) -> Option<&Arc<HttpCache>> {
        self.cache.as_ref()
    }

    /// The rules in force.
    pub(super) fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Serve `io` — an intercepted TCP stream, or a stream the TLS layer has decrypted — in
    /// `protocol` until the client closes it.
    pub async fn serve<S>(self: Arc<Self>, io: S, conn: Conn, protocol: ClientProtocol)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.serve_with(io, conn, protocol, None).await;
    }

    /// [`Proxy::serve`]; with `sendfile`, `io` is (a wrapper around) the matching
    /// [`SendfileIo`](super::sendfile::SendfileIo) and cache hits' bodies go out from their
    /// files.
    pub(super) async fn serve_with<S>(
        self: Arc<Self>,
        io: S,
        conn: Conn,
        protocol: ClientProtocol,
        sendfile: Option<SendfileConn>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let result = match protocol {
            ClientProtocol::Http1 => {
                // The origin's 1xx heads reach an HTTP/1 client through its stream (`interim`).
                let (io, interim) = InterimIo::new(io);
                let proxy = self.clone();
                let files = sendfile.clone();
                let svc = hyper::service::service_fn(move |req| {
                    let p = proxy.clone();
                    let interim = interim.clone();
                    let files = files.clone();
                    async move { Ok::<_, Infallible>(p.handle(conn, req, Some(interim), files).await) }
                });
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(self.settings.header_read_timeout)
                    // A client may send its request and shut its side down (half-close); it
                    // still gets its answer, as from any origin.
                    .half_close(true)
                    .keep_alive(true);
                if sendfile.is_some() {
                    // Body buffers are queued and written as they are, never copied into
                    // hyper's own buffer: a placeholder must reach the stream (`sendfile`).
                    builder.writev(true);
                }
                builder
                    .serve_connection(TokioIo::new(io), svc)
                    .with_upgrades()
                    .await
            }
            ClientProtocol::Http2 => {
                let proxy = self.clone();
                let svc = hyper::service::service_fn(move |req| {
                    let p = proxy.clone();
                    async move { Ok::<_, Infallible>(p.handle(conn, req, None, None).await) }
                });
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

    /// One request, start to end.
    async fn handle(
        self: Arc<Self>,
        conn: Conn,
        req: Request<Incoming>,
        interim: Option<InterimSender>,
        sendfile: Option<SendfileConn>,
    ) -> Response<Body> {
        let mut ctx = new_ctx(conn, &req);
        if let Some(interim) = interim {
            ctx.extensions.insert(interim);
        }
        if let Some(sendfile) = sendfile {
            ctx.extensions.insert(sendfile);
        }
        let span =
            info_span!("http", trace_id = %ctx.trace_id, client = %conn.client, host = %ctx.host);
        let result = self.process(&mut ctx, req).instrument(span).await;
        let resp = match ghost::fallback(&self.origins, &mut ctx, result) {
            Ok(r) => r,
            Err(e) => self.failed(&ctx, &e),
        };
        let (mut parts, body) = resp.into_parts();
        let (parts, body) = match self.chain.response_filter(&mut ctx, &mut parts).await {
            Ok(()) => (parts, body),
            Err(e) => self.failed(&ctx, &e).into_parts(),
        };
        let body = self.chain.response_body_filter(&ctx, body);
        ctx.timings.response_head = Some(Instant::now());
        let expected = if head_only(&parts) {
            Some(0)
        } else {
            parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        };
        let taps = self.chain.body_taps(&ctx, &parts);
        // A tap sees the bytes of each chunk: a body with taps never sends from files.
        if taps.is_empty()
            && let Some(gate) = ctx.extensions.get::<Gate>()
        {
            gate.arm();
        }
        let end = Finished {
            ctx,
            status: parts.status.as_u16(),
            expected,
            taps,
            proxy: self.clone(),
        };
        Response::from_parts(parts, boxed(Logged::new(body, end)))
    }

    /// The error's page, and the line that says which side failed.
    fn failed(&self, ctx: &Ctx, e: &ProxyError) -> Response<Body> {
        if let ProxyError::OriginUnavailable { .. } = e {
            // The breaker's own line said why when it opened; one line per refused request
            // would flood the log exactly when an origin is down (the access log has each).
            debug!(trace_id = %ctx.trace_id, host = %ctx.host, error = %e, "request refused by an open breaker");
        } else {
            self.log_failure(ctx, e);
        }
        self.error_page(e)
    }

    fn log_failure(&self, ctx: &Ctx, e: &ProxyError) {
        warn!(
            service = ctx.conn.scheme.service_name(),
            trace_id = %ctx.trace_id,
            client = %ctx.conn.client,
            host = %ctx.host,
            orig_dst = %ctx.conn.orig_dst,
            error = %e,
            side = ?e.side(),
            retryable = e.retryable(),
            "request failed"
        );
    }

    /// The page a failed request gets.
    fn error_page(&self, e: &ProxyError) -> Response<Body> {
        let mut r = error_response(e.status(), &e.to_string());
        if let ProxyError::OriginUnavailable {
            retry_after_secs, ..
        } = e
        {
            // A client (or a script) waits this long before asking again; never 0, which some
            // read as "at once".
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from((*retry_after_secs).max(1)),
            );
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        r
    }

    /// Phases 1–4 (see the module's doc).
    async fn process(
        &self,
        ctx: &mut Ctx,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        if let Err(refusal) = framing::check_request(&parts) {
            return Err(ProxyError::Refused(refusal));
        }
        if let Some(answer) = self.chain.request_filter(ctx, &mut parts).await? {
            return Ok(answer);
        }
        self.check_host(ctx);
        let tunnels = Tunnels {
            via: &self.settings.via,
            metrics: &self.metrics,
            connect_timeout: self.settings.connect_timeout,
        };
        if parts.method == http::Method::CONNECT {
            return upgrade::connect(tunnels, ctx, parts, body).await;
        }
        if is_upgrade(&parts.headers) {
            return upgrade::upgrade(tunnels, ctx, parts, body).await;
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
            self.chain.cache_key_filter(ctx, &parts).await?;
            let key = match ctx.cache.key.take() {
                Some(key) => key,
                None => key_for(ctx, &ctx.path),
            };
            let outcome = cached::handle(cache, &self.fetcher, ctx, parts, &key).await;
            ctx.cache.key = Some(key);
            return outcome.map(Outcome::into_response);
        }
        ctx.cache.status = CacheStatus::Bypass;
        if with_body && matches!(parts.method, http::Method::GET | http::Method::HEAD) {
            ctx.cache.not_stored = Some("request has a body");
        }
        let method = parts.method.clone();
        let body = self
            .chain
            .request_body_filter(ctx, boxed(framing::ClientBody::new(body)));
        let resp = self.fetcher.fetch(ctx, parts, body).await?;
        if let Some(cache) = &self.cache
            && crate::cache::policy::invalidates(&method, resp.status())
        {
            cached::invalidate(cache, ctx, resp.headers()).await;
        }
        let (mut head, body) = resp.into_parts();
        if let Verdict::Answer(answer) = self.fetcher.verdict(ctx, &mut head).await? {
            return Ok(answer);
        }
        Ok(self.fetcher.relay(Response::from_parts(head, body)))
    }

    /// How `Host` relates to the original destination: logged, never acted upon (the request
    /// goes to the original destination whatever `Host` says).
    fn check_host(&self, ctx: &Ctx) {
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
    }
}

/// A request's state from its head.
fn new_ctx(conn: Conn, req: &Request<Incoming>) -> Ctx {
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
        ghost: false,
        ttl_override: None,
        key_options: CacheKeyOptions::default(),
        cache: CacheDecision::default(),
        timings: Timings::start(),
        extensions: http::Extensions::new(),
    }
}

/// Phase 6, when the response body ends: metrics, the access-log line, the `logging` phases.
struct Finished {
    ctx: Ctx,
    status: u16,
    /// The body length announced (`Content-Length`), if any.
    expected: Option<u64>,
    /// The phases' body taps (usually none).
    taps: Vec<Box<dyn BodyTap>>,
    proxy: Arc<Proxy>,
}

impl OnEnd for Finished {
    fn on_data(&mut self, data: &Bytes) {
        for tap in &mut self.taps {
            tap.chunk(data);
        }
    }

    fn on_end(self, body: BodyEnd) {
        let end = RequestEnd {
            status: self.status,
            bytes: body.bytes,
            complete: body.complete || self.expected == Some(body.bytes),
            error: body.error,
        };
        self.proxy.metrics.record(self.ctx.cache.status, end.bytes);
        super::ctx::write_access_log(&self.ctx, &end);
        for tap in self.taps {
            tap.end(&self.ctx, &end);
        }
        self.proxy.chain.logging(&self.ctx, &end);
    }
}

/// Responses that never have a body.
fn head_only(parts: &response::Parts) -> bool {
    parts.status == StatusCode::NOT_MODIFIED
        || parts.status == StatusCode::NO_CONTENT
        || parts.status.is_informational()
}
