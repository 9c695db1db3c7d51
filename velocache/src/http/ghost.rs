//! Ghost mode (`ghost = true` in a rule): the proxy's side of `crate::origins::ghost`.
//!
//! Learning: [`GhostPhase`] keeps the request head of every GET/HEAD a ghost rule matched
//! (`request_filter`, into the `Ctx`'s extensions) and taps the body of its good answers
//! (`body_tap`: a 2xx other than 206, from the origin or the cache, not itself stale or
//! ghost, no larger than `ghost_max_body_bytes`); a body that ends complete is learned. The
//! origin's answer leaves for the client untouched.
//!
//! Answering: [`fallback`] gets every request's result; when the request is a ghost rule's
//! GET/HEAD and the origin failed — an error (refused, reset, closed, timed out), its breaker is
//! open, or a 5xx the cache could not answer for — it answers from the learned response to the
//! same request (`X-Cache-Status: ghost`) or, for a request never seen, to the nearest request
//! of the same path template (`ghost-nearest`, `X-Ghost-Source` naming it), with `Age` since it
//! was learned. One `ghost answer` log line each, counted in `velocache_origins_ghost_answers`.
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header, request, response};
use tracing::warn;

use super::{
    Body, ProxyError,
    body::{empty, full},
    ctx::{CacheStatus, Ctx, RequestEnd},
    phase::{BodyTap, Phase, Step},
};
use crate::origins::{
    Origins,
    ghost::{GhostKey, Learned},
};

/// The request head of a ghost rule's request, kept for learning and answering.
#[derive(Clone)]
struct GhostRequest {
    headers: HeaderMap,
}

/// Learns good answers to ghost rules' requests.
pub struct GhostPhase {
    origins: Arc<Origins>,
}

impl GhostPhase {
    /// Learn into `origins`' learned store.
    pub fn new(origins: Arc<Origins>) -> GhostPhase {
        GhostPhase { origins }
    }
}

fn ghost_method(m: &Method) -> bool {
    *m == Method::GET || *m == Method::HEAD
}

impl Phase for GhostPhase {
    fn name(&self) -> &str {
        "ghost"
    }

    fn request_filter<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        req: &'a mut request::Parts,
    ) -> Step<'a, Result<Option<Response<Body>>, ProxyError>> {
        if ctx.ghost && ghost_method(&ctx.method) {
            ctx.extensions.insert(GhostRequest {
                headers: req.headers.clone(),
            });
        }
        Step::Ready(Ok(None))
    }

    fn body_tap(&self, ctx: &Ctx, resp: &response::Parts) -> Option<Box<dyn BodyTap>> {
        let learnable = ctx.ghost
            && ctx.method == Method::GET
            && resp.status.is_success()
            && resp.status != StatusCode::PARTIAL_CONTENT
            && !matches!(
                ctx.cache.status,
                CacheStatus::Stale | CacheStatus::Ghost | CacheStatus::GhostNearest
            );
        if !learnable {
            return None;
        }
        let max = self.origins.ghost.max_body;
        let announced = resp
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|n| n > max) {
            return None;
        }
        let req = ctx.extensions.get::<GhostRequest>()?;
        Some(Box::new(LearnTap {
            origins: self.origins.clone(),
            key: GhostKey::new(ctx.conn.orig_dst.0, &ctx.host, &ctx.path, &req.headers),
            req: req.headers.clone(),
            status: resp.status.as_u16(),
            headers: resp.headers.clone(),
            body: Vec::with_capacity(announced.unwrap_or(0) as usize),
            max,
            over: false,
        }))
    }
}

/// Copies one body, up to the cap, and learns it if it ends complete.
struct LearnTap {
    origins: Arc<Origins>,
    key: GhostKey,
    req: HeaderMap,
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
    max: u64,
    over: bool,
}

impl BodyTap for LearnTap {
    fn chunk(&mut self, data: &Bytes) {
        if self.over {
            return;
        }
        if (self.body.len() + data.len()) as u64 > self.max {
            self.over = true;
            self.body = Vec::new();
            return;
        }
        self.body.extend_from_slice(data);
    }

    fn end(self: Box<Self>, _ctx: &Ctx, end: &RequestEnd) {
        if !end.complete || self.over {
            return;
        }
        let t = *self;
        t.origins
            .ghost
            .learn(&t.key, &t.req, t.status, t.headers, Bytes::from(t.body));
        t.origins.ghost_learned();
    }
}

/// A request's result, or — when a ghost rule's origin failed — a learned answer (see the
/// module's doc).
pub(super) fn fallback(
    origins: &Origins,
    ctx: &mut Ctx,
    result: Result<Response<Body>, ProxyError>,
) -> Result<Response<Body>, ProxyError> {
    if !ctx.ghost || !ghost_method(&ctx.method) {
        return result;
    }
    let why = match &result {
        Err(e) if e.origin_failed() => e.to_string(),
        Ok(r) if r.status().is_server_error() && !ctx.cache.status.from_cache() => {
            format!("the origin answered {}", r.status())
        }
        _ => return result,
    };
    let Some(req) = ctx.extensions.get::<GhostRequest>() else {
        return result;
    };
    let key = GhostKey::new(ctx.conn.orig_dst.0, &ctx.host, &ctx.path, &req.headers);
    let (learned, status) = match origins.ghost.exact(&key, &req.headers) {
        Some(l) => (l, CacheStatus::Ghost),
        None => match origins.ghost.nearest(&key, &req.headers) {
            Some(l) => (l, CacheStatus::GhostNearest),
            None => return result,
        },
    };
    let scheme = match ctx.conn.scheme {
        super::Scheme::Http => "http",
        super::Scheme::Https => "https",
    };
    let source = format!("{scheme}://{}{}", ctx.host, learned.path);
    warn!(service = ctx.conn.scheme.service_name(), trace_id = %ctx.trace_id,
        origin = %ctx.conn.orig_dst, host = %ctx.host, path = %ctx.path, kind = status.as_str(),
        source = %source, age_secs = learned.age_secs(), error = %why,
        "origin failed; answering from ghost mode's learned response");
    origins.ghost_answered(status.as_str());
    ctx.cache.status = status;
    ctx.cache.not_stored = None;
    Ok(respond(
        &learned,
        status,
        &source,
        ctx.method == Method::HEAD,
    ))
}

fn respond(l: &Learned, status: CacheStatus, source: &str, head: bool) -> Response<Body> {
    let mut r = Response::new(if head { empty() } else { full(l.body.clone()) });
    *r.status_mut() = StatusCode::from_u16(l.status).unwrap_or(StatusCode::OK);
    let h = r.headers_mut();
    *h = l.headers.clone();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(l.body.len()));
    h.insert(header::AGE, HeaderValue::from(l.age_secs()));
    h.insert("x-cache-status", HeaderValue::from_static(status.as_str()));
    if status == CacheStatus::GhostNearest
        && let Ok(v) = HeaderValue::from_str(source)
    {
        h.insert("x-ghost-source", v);
    }
    r
}
