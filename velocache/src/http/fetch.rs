//! Fetching from the origin: the one way a request leaves the proxy for an origin (tunnels
//! aside, which need a connection of their own: `upgrade`).
//!
//! A request head and body enter with the request's [`Ctx`]. What a proxy owes the origin is
//! applied first (hop-by-hop fields out, `Via` in), then the upstream-request phases, then the
//! framing recomputed from the body actually sent (`framing`) and the `Host` the request was
//! settled on — last, so that no phase can make the origin read the request differently from
//! us. It goes to the original destination through an [`OriginClient`]; the response head
//! passes the upstream-response phases and leaves as received. A client body that broke its own
//! framing is reported as the client's fault, not the origin's.
//!
//! The cache path is given a [`Fetcher`] instead of the proxy: it sends requests and asks the
//! phases' verdict on responses without knowing what sits above it.
use std::{sync::Arc, time::Instant};

use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response, header, request, response};
use hyper::body::Incoming;
use tracing::debug;

use super::{
    Body, ProxyError,
    body::boxed,
    ctx::Ctx,
    framing,
    headers::{add_via, strip_hop_by_hop},
    interim::InterimSender,
    metrics::Metrics,
    phase::{Chain, Verdict},
    upstream::OriginClient,
};

/// Sends requests to the origin for the cache path.
pub trait Fetcher: Send + Sync + 'static {
    /// Send `req` with `body` to the request's original destination (see the module's doc for
    /// what is applied on the way); the response head as received.
    fn fetch<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        req: request::Parts,
        body: Body,
    ) -> BoxFuture<'a, Result<Response<Incoming>, ProxyError>>;

    /// The phases' verdict on an origin response about to be stored, or forwarded around the
    /// cache ([`super::phase::Phase::response_cache_filter`]).
    fn verdict<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        resp: &'a mut response::Parts,
    ) -> BoxFuture<'a, Result<Verdict, ProxyError>>;

    /// An origin's response as the client gets it when relayed as is (hop-by-hop fields out,
    /// `Via` in).
    fn relay(&self, resp: Response<Incoming>) -> Response<Body>;
}

/// The proxy's fetcher: an origin client and the phase chain.
pub struct OriginFetcher {
    origin: Arc<dyn OriginClient>,
    chain: Chain,
    via: HeaderValue,
    metrics: Arc<Metrics>,
}

impl OriginFetcher {
    /// Fetch through `origin`, running `chain`'s upstream phases, counting in `metrics`.
    pub fn new(
        origin: Arc<dyn OriginClient>,
        chain: Chain,
        via: HeaderValue,
        metrics: Arc<Metrics>,
    ) -> OriginFetcher {
        OriginFetcher {
            origin,
            chain,
            via,
            metrics,
        }
    }

    async fn send(
        &self,
        ctx: &mut Ctx,
        mut parts: request::Parts,
        body: Body,
    ) -> Result<Response<Incoming>, ProxyError> {
        strip_hop_by_hop(&mut parts.headers);
        add_via(&mut parts.headers, parts.version, &self.via);
        self.chain.upstream_request_filter(ctx, &mut parts).await?;
        // Framing headers describe `body` exactly, so a pooled connection never goes back to
        // the pool owing bytes.
        framing::frame_upstream(&mut parts, &http_body::Body::size_hint(&body));
        // The host the request is for, as the proxy settled it: HTTP/2 clients name it in
        // `:authority`, which the origin-form request has lost, and an absolute-form request
        // line overrides whatever `Host` came with it (RFC 9112 §3.2.2).
        if let Ok(host) = HeaderValue::from_str(&ctx.host) {
            parts.headers.insert(header::HOST, host);
        }
        self.metrics.origin_fetch();
        ctx.timings.upstream_sent = Some(Instant::now());
        let mut req = Request::from_parts(parts, body);
        if let Some(interim) = ctx.extensions.get::<InterimSender>().cloned() {
            let trace_id = ctx.trace_id.clone();
            hyper::ext::on_informational(&mut req, move |head| {
                match interim.relay(head.status(), head.headers()) {
                    Ok(()) => {
                        debug!(%trace_id, status = head.status().as_u16(), "origin's interim response relayed")
                    }
                    Err(why) => {
                        debug!(%trace_id, status = head.status().as_u16(), ?why, "origin's interim response not relayed")
                    }
                }
            });
        }
        let sent = self.origin.send(ctx.conn.orig_dst.0, req).await;
        if let Err(ProxyError::Upstream { source, .. }) = &sent
            && let Some(reason) = framing::client_body_fault(source)
        {
            return Err(ProxyError::ClientBody(reason));
        }
        let (mut head, body) = sent?.into_parts();
        ctx.timings.upstream_head = Some(Instant::now());
        self.chain.upstream_response_filter(ctx, &mut head).await?;
        Ok(Response::from_parts(head, body))
    }
}

impl Fetcher for OriginFetcher {
    fn fetch<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        req: request::Parts,
        body: Body,
    ) -> BoxFuture<'a, Result<Response<Incoming>, ProxyError>> {
        Box::pin(self.send(ctx, req, body))
    }

    fn verdict<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        resp: &'a mut response::Parts,
    ) -> BoxFuture<'a, Result<Verdict, ProxyError>> {
        Box::pin(self.chain.response_cache_filter(ctx, resp))
    }

    fn relay(&self, resp: Response<Incoming>) -> Response<Body> {
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        add_via(&mut parts.headers, http::Version::HTTP_11, &self.via);
        Response::from_parts(parts, boxed(body))
    }
}
