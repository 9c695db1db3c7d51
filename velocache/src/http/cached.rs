//! The cache path of the proxy: lookup, hit, revalidation, miss, collapsed forwarding, fills.
//!
//! A request enters with its key; it leaves through `serve` (a response from the stored or
//! being-stored object) or — when nothing may be stored — as the origin's response as is.
//! Fills run in their own tasks and outlive the request that started them.
use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header, request};
use tracing::{debug, warn};

use super::{
    Body, ProxyError,
    body::{data_stream, empty},
    ctx::{CacheStatus, Ctx},
    headers::strip_hop_by_hop,
    proxy::{Proxy, Verdict},
    serve::serve,
};
use crate::cache::{
    CacheError, KeyInput, ObjectId, ObjectKey, ObjectMeta, Storage,
    fill::FillJob,
    lock::{Acquired, FillEnd, FillPermit, Fills},
    policy::{self, Usable},
    range::{ContentRange, RangeRequest},
};

/// The store, the fills and the RAM tier.
pub struct HttpCache {
    /// The store.
    pub storage: Arc<dyn Storage>,
    /// Fills in progress.
    pub fills: Arc<Fills>,
    pub(super) hot: moka::sync::Cache<(ObjectId, u64), Bytes>,
}

impl HttpCache {
    /// A cache over `storage` with a RAM tier of `memory_bytes`.
    pub fn new(storage: Arc<dyn Storage>, lock_age: Duration, memory_bytes: u64) -> HttpCache {
        HttpCache {
            storage,
            fills: Fills::new(lock_age),
            hot: moka::sync::Cache::builder()
                .max_capacity(memory_bytes)
                .weigher(|_, v: &Bytes| v.len().try_into().unwrap_or(u32::MAX))
                .build(),
        }
    }

    /// §4.4: forget what is stored for the request's URI (and `Location`/`Content-Location`
    /// on the same host).
    pub async fn invalidate(&self, ctx: &Ctx, resp: &HeaderMap) {
        let mut paths = vec![ctx.path.clone()];
        for h in [header::LOCATION, header::CONTENT_LOCATION] {
            if let Some(v) = resp.get(h).and_then(|v| v.to_str().ok()) {
                if v.starts_with('/') {
                    paths.push(v.to_string());
                } else if let Ok(uri) = v.parse::<http::Uri>()
                    && uri
                        .host()
                        .is_some_and(|h| ctx.host.split(':').next() == Some(h))
                {
                    paths.push(uri.path_and_query().map_or("/", |p| p.as_str()).to_string());
                }
            }
        }
        for p in paths {
            let key = key_for(ctx, &p);
            if self.storage.lookup(&key.id).is_some() {
                debug!(trace_id = %ctx.trace_id, key = %key.text, method = %ctx.method, "invalidated by an unsafe method");
                let _ = self.storage.remove(key.id).await;
            }
        }
    }
}

fn key_for(ctx: &Ctx, path: &str) -> ObjectKey {
    ObjectKey::derive(
        KeyInput {
            host: &ctx.host,
            dst: ctx.conn.orig_dst.0,
            path_and_query: path,
        },
        &ctx.key_options,
    )
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Entry point from the proxy for GET/HEAD requests the cache may answer.
pub(super) async fn handle(
    proxy: &Arc<Proxy>,
    cache: &Arc<HttpCache>,
    ctx: &mut Ctx,
    parts: request::Parts,
) -> Result<Response<Body>, ProxyError> {
    let key = key_for(ctx, &ctx.path.clone());
    if let Some(snap) = cache.storage.lookup(&key.id) {
        let m = &snap.meta;
        let usable = m.len.is_some()
            && (m.sha256.is_none() || m.verified)
            && policy::vary_matches(m, &parts.headers);
        if usable {
            match policy::evaluate(m, &parts.headers, unix_now()) {
                Usable::Fresh => {
                    ctx.cache = CacheStatus::Hit;
                    return serve(proxy, cache, ctx, &parts, &key, snap.meta).await;
                }
                Usable::StaleWhileRevalidate => {
                    ctx.cache = CacheStatus::Stale;
                    revalidate_in_background(proxy, cache, ctx, &parts, &key, snap.meta.clone());
                    return serve(proxy, cache, ctx, &parts, &key, snap.meta).await;
                }
                Usable::Revalidate if parts.method == Method::GET => {
                    return fetch(proxy, cache, ctx, parts, key, Some(snap.meta)).await;
                }
                Usable::Revalidate => {}
            }
        }
    }
    if parts.method == Method::HEAD {
        // Nothing to answer from: ask the origin, store nothing (a HEAD has no body).
        ctx.cache = CacheStatus::Miss;
        ctx.not_stored = Some("method");
        return proxy.forward(ctx, parts, empty()).await;
    }
    fetch(proxy, cache, ctx, parts, key, None).await
}

/// Miss or revalidation: become the object's writer, or join the writer.
async fn fetch(
    proxy: &Arc<Proxy>,
    cache: &Arc<HttpCache>,
    ctx: &mut Ctx,
    parts: request::Parts,
    key: ObjectKey,
    stale: Option<Arc<ObjectMeta>>,
) -> Result<Response<Body>, ProxyError> {
    match cache.fills.acquire(key.id) {
        Acquired::Writer(permit) => {
            fetch_as_writer(proxy, cache, ctx, parts, key, stale, permit).await
        }
        Acquired::Reader(fill) => {
            let st = fill.wait_headers(proxy.settings.lock_wait).await;
            let joinable = st.as_ref().and_then(|st| match (&st.meta, &st.end) {
                (Some(m), None | Some(FillEnd::Complete))
                    if policy::vary_matches(m, &parts.headers) =>
                {
                    Some(m.clone())
                }
                _ => None,
            });
            match joinable {
                Some(m) => {
                    ctx.cache = CacheStatus::Hit;
                    ctx.collapsed = true;
                    // A fill that has completed meanwhile may have learnt the length.
                    let m = match cache.storage.lookup(&key.id) {
                        Some(s) if s.meta.version == m.version => s.meta,
                        _ => m,
                    };
                    serve(proxy, cache, ctx, &parts, &key, m).await
                }
                None => {
                    ctx.cache = CacheStatus::Miss;
                    ctx.not_stored = Some(if st.is_none() {
                        "waited too long for another download"
                    } else {
                        "the other download is not stored"
                    });
                    // Nothing is stored on this path: the client's request goes as it is.
                    proxy.forward(ctx, parts, empty()).await
                }
            }
        }
    }
}

/// The request the cache sends upstream for a client's request: no client validators, no
/// client Range (the cache wants whole objects or whole slices).
pub(super) fn without_conditionals(mut parts: request::Parts, keep_range: bool) -> request::Parts {
    for h in [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
    ] {
        parts.headers.remove(h);
    }
    if !keep_range {
        parts.headers.remove(header::RANGE);
        parts.headers.remove(header::IF_RANGE);
    }
    parts.method = Method::GET;
    parts
}

async fn fetch_as_writer(
    proxy: &Arc<Proxy>,
    cache: &Arc<HttpCache>,
    ctx: &mut Ctx,
    parts: request::Parts,
    key: ObjectKey,
    stale: Option<Arc<ObjectMeta>>,
    permit: FillPermit,
) -> Result<Response<Body>, ProxyError> {
    let s = proxy.settings.slice_bytes;
    let range = parts
        .headers
        .get(header::RANGE)
        .and_then(|v| RangeRequest::parse(v.as_bytes()));
    // A Range far into an object nobody has stored yet: fetch from its slice on, not from 0.
    let start = match (&stale, range.and_then(|r| r.first_byte()), key.sha256) {
        (None, Some(first), None) if first >= s => first / s * s,
        _ => 0,
    };
    let mut up = without_conditionals(parts.clone(), false);
    if start > 0
        && let Ok(v) = HeaderValue::from_str(&format!("bytes={start}-"))
    {
        up.headers.insert(header::RANGE, v);
    }
    if let Some(m) = &stale {
        for (n, v) in policy::conditional_headers(m) {
            up.headers.insert(n, v);
        }
    }
    let request_time = unix_now();
    let resp = match proxy.send(ctx, up, empty()).await {
        Ok(r) => r,
        Err(e) => {
            permit.finish(FillEnd::Failed(e.to_string().into()));
            if let Some(old) = stale
                && policy::stale_if_error(&old, unix_now())
            {
                warn!(trace_id = %ctx.trace_id, error = %e, "origin failed; serving the stored response (stale-if-error)");
                ctx.cache = CacheStatus::Stale;
                return serve(proxy, cache, ctx, &parts, &key, old).await;
            }
            return Err(e);
        }
    };
    let response_time = unix_now();
    let status = resp.status();
    if status.is_server_error()
        && let Some(old) = &stale
        && policy::stale_if_error(old, response_time)
    {
        permit.finish(FillEnd::NotStored);
        ctx.cache = CacheStatus::Stale;
        return serve(proxy, cache, ctx, &parts, &key, old.clone()).await;
    }

    if status == StatusCode::NOT_MODIFIED
        && let Some(old) = &stale
    {
        if policy::not_modified_matches(old, resp.headers()) {
            let mut m = (**old).clone();
            m.headers = policy::merge_304(&m.headers, resp.headers());
            m.request_time = request_time;
            m.response_time = response_time;
            m.initial_age = policy::initial_age(resp.headers(), request_time, response_time);
            m.lifetime = policy::lifetime(
                StatusCode::from_u16(m.status).unwrap_or(StatusCode::OK),
                &m.headers,
                response_time,
                proxy.settings.heuristic,
                ctx.ttl_override,
            );
            m.ttl_override = ctx.ttl_override.is_some();
            let m = Arc::new(m);
            if let Err(e) = cache.storage.put_meta(key.id, m.clone()).await {
                warn!(trace_id = %ctx.trace_id, error = %e, "updating a revalidated object failed");
            }
            permit.finish(FillEnd::Complete);
            ctx.cache = CacheStatus::Revalidated;
            return serve(proxy, cache, ctx, &parts, &key, m).await;
        }
        // A 304 about some other representation: drop ours and ask plainly.
        let _ = cache.storage.remove(key.id).await;
        permit.finish(FillEnd::NotStored);
        ctx.cache = CacheStatus::Miss;
        ctx.not_stored = Some("304 for another representation");
        return proxy
            .forward(ctx, without_conditionals(parts, true), empty())
            .await;
    }

    let (rparts, body) = resp.into_parts();
    let mut fill_start = 0;
    let mut store_status = status;
    let mut total = content_length(&rparts.headers);
    let mut unusable_partial = false;
    if status == StatusCode::PARTIAL_CONTENT {
        match rparts
            .headers
            .get(header::CONTENT_RANGE)
            .and_then(|v| ContentRange::parse(v.as_bytes()))
        {
            Some(cr) if start > 0 && cr.span.start == start && cr.total.is_some() => {
                fill_start = start;
                store_status = StatusCode::OK;
                total = cr.total;
            }
            _ => unusable_partial = true,
        }
    }
    let mut verdict = policy::storable(
        &Method::GET,
        &parts.headers,
        store_status,
        &rparts.headers,
        ctx.ttl_override,
    )
    .map_err(|r| r.as_str());
    match proxy.content_type_verdict(ctx, &rparts.headers) {
        Verdict::Deny(rule) => {
            permit.finish(FillEnd::NotStored);
            return Ok(super::proxy::deny_response(&rule));
        }
        Verdict::DontStore if verdict.is_ok() => verdict = Err("rule"),
        _ => {}
    }
    if verdict.is_ok() {
        if unusable_partial {
            verdict = Err("unexpected partial response");
        } else if total.is_some_and(|t| t > proxy.settings.max_object_bytes) {
            verdict = Err("larger than max_object_bytes");
        } else if rparts.headers.contains_key(header::CONTENT_RANGE) && status == StatusCode::OK {
            verdict = Err("Content-Range on a 200");
        }
    }
    if let Err(reason) = verdict {
        permit.finish(FillEnd::NotStored);
        ctx.cache = CacheStatus::Miss;
        ctx.not_stored = Some(reason);
        if stale.is_some() {
            // The origin's new answer replaces what was stored.
            let _ = cache.storage.remove(key.id).await;
        }
        if start > 0 {
            // We asked for a range the client did not: ask again with the client's request.
            drop(body);
            return proxy
                .forward(ctx, without_conditionals(parts, true), empty())
                .await;
        }
        return Ok(proxy.relay(Response::from_parts(rparts, body)));
    }

    let mut headers = rparts.headers.clone();
    strip_hop_by_hop(&mut headers);
    for h in [header::CONTENT_LENGTH, header::CONTENT_RANGE, header::AGE] {
        headers.remove(h);
    }
    let meta = Arc::new(ObjectMeta {
        key: key.text.clone(),
        version: rand::random(),
        status: store_status.as_u16(),
        len: total,
        request_time,
        response_time,
        initial_age: policy::initial_age(&rparts.headers, request_time, response_time),
        lifetime: policy::lifetime(
            store_status,
            &rparts.headers,
            response_time,
            proxy.settings.heuristic,
            ctx.ttl_override,
        ),
        ttl_override: ctx.ttl_override.is_some(),
        vary: policy::vary_capture(&rparts.headers, &parts.headers).unwrap_or_default(),
        sha256: key.sha256,
        verified: false,
        slice_bytes: s,
        headers,
    });
    if let Err(e) = cache.storage.put_meta(key.id, meta.clone()).await {
        warn!(trace_id = %ctx.trace_id, error = %e, "cannot store; relaying");
        permit.finish(FillEnd::NotStored);
        ctx.cache = CacheStatus::Miss;
        ctx.not_stored = Some("store error");
        return Ok(proxy.relay(Response::from_parts(rparts, body)));
    }
    permit.set_meta(meta.clone(), fill_start);
    let job = FillJob {
        storage: cache.storage.clone(),
        id: key.id,
        meta: meta.clone(),
        start: fill_start,
        end: None,
        body_offset: fill_start,
        max_object_bytes: proxy.settings.max_object_bytes,
        permit,
    };
    spawn_fill(proxy, ctx, job, body);
    ctx.cache = CacheStatus::Miss;
    serve(proxy, cache, ctx, &parts, &key, meta).await
}

fn spawn_fill(proxy: &Arc<Proxy>, ctx: &Ctx, job: FillJob, body: hyper::body::Incoming) {
    let metrics = proxy.metrics.clone();
    let storage = job.storage.clone();
    let trace_id = ctx.trace_id.clone();
    let key = job.meta.key.clone();
    tokio::spawn(async move {
        match job.run(data_stream(body)).await {
            Ok(o) => debug!(%trace_id, %key, bytes = o.bytes, complete = o.complete, "stored"),
            Err(CacheError::TooLarge { limit }) => {
                debug!(%trace_id, %key, limit, "not stored: larger than max_object_bytes")
            }
            Err(e) => {
                warn!(%trace_id, %key, error = %e, "storing the object failed; nothing partial is served")
            }
        }
        metrics.store(storage.usage());
    });
}

pub(super) fn content_length(h: &HeaderMap) -> Option<u64> {
    if h.contains_key(header::TRANSFER_ENCODING) {
        return None;
    }
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn revalidate_in_background(
    proxy: &Arc<Proxy>,
    cache: &Arc<HttpCache>,
    ctx: &Ctx,
    parts: &request::Parts,
    key: &ObjectKey,
    meta: Arc<ObjectMeta>,
) {
    let Acquired::Writer(permit) = cache.fills.acquire(key.id) else {
        return;
    };
    let (proxy, cache, mut ctx, parts, key) = (
        proxy.clone(),
        cache.clone(),
        ctx.clone(),
        parts.clone(),
        key.clone(),
    );
    tokio::spawn(async move {
        let r = fetch_as_writer(&proxy, &cache, &mut ctx, parts, key, Some(meta), permit).await;
        if let Err(e) = r {
            debug!(trace_id = %ctx.trace_id, error = %e, "background revalidation failed");
        }
    });
}
