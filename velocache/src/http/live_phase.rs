//! What the web dashboard sees of each request: its live record and its inspector exchange.
//!
//! Two phases share one [`Captured`] slot in the request's `Ctx` extensions, so each head is
//! copied where it is true to the wire: [`LiveFirst`] runs first in the chain and copies the
//! client's request and the origin's response *as received* (before any phase changes them);
//! [`LiveLast`] runs last (`Phase::runs_last`) and copies the request sent to the origin and
//! the response sent to the client *as sent* (after every phase changed them). At `logging` it
//! turns the `Ctx` — the rule, the cache's decision and reason, the timings — into one
//! [`Record`] for the live view and one [`Exchange`] for the inspector, and hands both to the
//! feed. Only built when the feed is on; header lists are capped so a request with thousands of
//! headers cannot grow the inspector's memory.
use std::time::Instant;

use http::{HeaderMap, request, response};

use super::{
    ProxyError,
    ctx::{CacheStatus, Ctx, RequestEnd},
    phase::{Phase, Step},
};
use crate::{
    cache::policy::current_age,
    live::{
        Live, kind,
        record::{CacheReason, Exchange, Head, Header, Record, Timing},
    },
};

/// Headers copied per head.
const MAX_HEADERS: usize = 100;
/// Bytes copied per header value.
const MAX_VALUE: usize = 2048;

/// The heads one request has seen so far.
#[derive(Debug, Clone, Default)]
struct Captured {
    client: Head,
    origin: Head,
}

fn headers(map: &HeaderMap) -> Vec<Header> {
    map.iter()
        .take(MAX_HEADERS)
        .map(|(k, v)| {
            let mut value = String::from_utf8_lossy(v.as_bytes()).into_owned();
            if value.len() > MAX_VALUE {
                let mut cut = MAX_VALUE;
                while !value.is_char_boundary(cut) {
                    cut -= 1;
                }
                value.truncate(cut);
                value.push('…');
            }
            (k.as_str().to_string(), value)
        })
        .collect()
}

fn request_line(req: &request::Parts) -> String {
    format!("{} {} {:?}", req.method, req.uri, req.version)
}

fn status_line(resp: &response::Parts) -> String {
    format!(
        "{:?} {} {}",
        resp.version,
        resp.status.as_u16(),
        resp.status.canonical_reason().unwrap_or("")
    )
    .trim_end()
    .to_string()
}

fn slot(ctx: &mut Ctx) -> &mut Captured {
    ctx.extensions.get_or_insert_default::<Captured>()
}

/// The phase that runs first: heads as received.
pub struct LiveFirst;

/// The phase that runs last: heads as sent, and the record at the end.
pub struct LiveLast {
    live: Live,
}

/// The two phases for `live`: put the first at the head of the chain; the second places itself
/// last.
pub fn phases(live: Live) -> (LiveFirst, LiveLast) {
    (LiveFirst, LiveLast { live })
}

impl Phase for LiveFirst {
    fn name(&self) -> &str {
        "live (received)"
    }

    fn request_filter<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        req: &'a mut request::Parts,
    ) -> Step<'a, Result<Option<http::Response<super::Body>>, ProxyError>> {
        let c = slot(ctx);
        c.client.request_line = request_line(req);
        c.client.request_headers = headers(&req.headers);
        Step::Ready(Ok(None))
    }

    fn upstream_response_filter<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        resp: &'a mut response::Parts,
    ) -> Step<'a, Result<(), ProxyError>> {
        let c = slot(ctx);
        c.origin.status_line = status_line(resp);
        c.origin.response_headers = headers(&resp.headers);
        Step::Ready(Ok(()))
    }
}

impl Phase for LiveLast {
    fn name(&self) -> &str {
        "live (sent)"
    }

    fn runs_last(&self) -> bool {
        true
    }

    fn upstream_request_filter<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        req: &'a mut request::Parts,
    ) -> Step<'a, Result<(), ProxyError>> {
        let c = slot(ctx);
        c.origin.request_line = request_line(req);
        c.origin.request_headers = headers(&req.headers);
        // A later origin response belongs to this request, not to an earlier one.
        c.origin.status_line.clear();
        c.origin.response_headers.clear();
        Step::Ready(Ok(()))
    }

    fn response_filter<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        resp: &'a mut response::Parts,
    ) -> Step<'a, Result<(), ProxyError>> {
        let c = slot(ctx);
        c.client.status_line = status_line(resp);
        c.client.response_headers = headers(&resp.headers);
        Step::Ready(Ok(()))
    }

    fn logging(&self, ctx: &Ctx, end: &RequestEnd) {
        let captured = ctx
            .extensions
            .get::<Captured>()
            .cloned()
            .unwrap_or_default();
        let exchange = exchange(ctx, end, captured);
        let record = Record {
            service: match ctx.conn.scheme {
                super::ctx::Scheme::Http => kind::HTTP,
                super::ctx::Scheme::Https => kind::HTTPS,
            }
            .into(),
            ts_ms: exchange.timing.started_ms,
            client: ctx.conn.client.to_string(),
            host: ctx.host.clone(),
            what: format!("{} {}", ctx.method, ctx.path),
            status: end.status.to_string(),
            cache: ctx.cache.status.as_str().into(),
            bytes: end.bytes,
            duration_us: ctx.timings.started.elapsed().as_micros() as u64,
            rule: ctx.rule.clone().unwrap_or_default(),
            id: ctx.trace_id.clone(),
            count: 1,
            direction: String::new(),
            detail: vec![("orig_dst".into(), ctx.conn.orig_dst.to_string())],
            ..Record::default()
        };
        self.live.store_exchange(exchange);
        self.live.publish(record);
    }
}

fn ms_since(start: Instant, t: Option<Instant>) -> Option<f64> {
    t.map(|t| t.saturating_duration_since(start).as_secs_f64() * 1000.0)
}

fn exchange(ctx: &Ctx, end: &RequestEnd, captured: Captured) -> Exchange {
    let t = &ctx.timings;
    let now_ms = crate::live::now_ms();
    let total = t.started.elapsed();
    let from_cache = ctx.cache.status.from_cache();
    Exchange {
        id: ctx.trace_id.clone(),
        service: ctx.conn.scheme.service_name().into(),
        client: ctx.conn.client.to_string(),
        orig_dst: ctx.conn.orig_dst.to_string(),
        host: ctx.host.clone(),
        client_side: captured.client,
        origin_side: captured.origin,
        cache: reason(ctx),
        status: end.status,
        complete: end.complete,
        error: end.error.clone().unwrap_or_default(),
        timing: Timing {
            started_ms: now_ms.saturating_sub(total.as_millis() as u64),
            upstream_sent_ms: ms_since(t.started, t.upstream_sent),
            origin_ttfb_ms: ms_since(t.started, t.upstream_head),
            client_ttfb_ms: ms_since(t.started, t.response_head),
            total_ms: total.as_secs_f64() * 1000.0,
            bytes_from_cache: if from_cache { end.bytes } else { 0 },
            bytes_from_origin: if from_cache { 0 } else { end.bytes },
        },
    }
}

/// The cache's decision, with the sentence the inspector leads with.
fn reason(ctx: &Ctx) -> CacheReason {
    let c = &ctx.cache;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let lifetime = c.object.as_ref().map(|o| o.lifetime);
    let age = c.object.as_ref().map(|o| current_age(o, now));
    let rule = ctx.rule.clone().unwrap_or_default();
    let action = ctx
        .action
        .as_ref()
        .map(|a| a.name().to_string())
        .unwrap_or_default();
    let by_rule = if rule.is_empty() {
        String::new()
    } else {
        format!(" (rule `{rule}`, {action})")
    };
    let fresh = match (lifetime, age) {
        (Some(l), Some(a)) => format!("age {a} s of a freshness lifetime of {l} s"),
        _ => String::new(),
    };
    let explanation = match c.status {
        CacheStatus::Hit if c.collapsed => {
            "Joined a download of the same object already in progress.".to_string()
        }
        CacheStatus::Hit => format!("Fresh in the cache: {fresh}{by_rule}."),
        CacheStatus::Revalidated => format!(
            "Stored but stale ({fresh}): the origin confirmed it with 304 Not Modified, so the \
             stored body was sent{by_rule}."
        ),
        CacheStatus::Stale if c.stale_on_error => format!(
            "The origin failed: answered stale from the cache ({fresh}), as stale-if-error \
             allows{by_rule}."
        ),
        CacheStatus::Stale => format!(
            "Stale in the cache ({fresh}): sent at once while revalidating in the background \
             (stale-while-revalidate){by_rule}."
        ),
        CacheStatus::Miss => match c.not_stored {
            Some(why) => format!("Fetched from the origin and not stored: {why}{by_rule}."),
            None => format!("Not in the cache: fetched from the origin and stored{by_rule}."),
        },
        CacheStatus::Bypass => match (c.not_stored, rule.is_empty()) {
            (Some(why), _) => format!("The cache was not used: {why}{by_rule}."),
            (None, false) => format!("The cache was not used{by_rule}."),
            (None, true) => "The cache was not consulted for this request (its method, \
                             an Authorization header, an upgrade, or caching is off)."
                .to_string(),
        },
        CacheStatus::Ghost => "The origin failed: answered from ghost mode's learned response \
                               to this request."
            .to_string(),
        CacheStatus::GhostNearest => "The origin failed: answered from ghost mode's learned \
                                      response to the nearest request of the same path template."
            .to_string(),
    };
    CacheReason {
        status: c.status.as_str().into(),
        rule,
        action,
        key: c.key.as_ref().map(|k| k.text.clone()).unwrap_or_default(),
        not_stored: c.not_stored.unwrap_or("").into(),
        freshness_lifetime_secs: lifetime,
        age_secs: age,
        revalidated: c.status == CacheStatus::Revalidated,
        collapsed: c.collapsed,
        stale_if_error: c.stale_on_error,
        explanation,
    }
}
