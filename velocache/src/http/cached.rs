//! The cache path of the proxy: lookup, hit, revalidation, miss, collapsed forwarding, fills.
//!
//! A GET or HEAD the cache may answer enters with its key, its head and a [`Fetcher`] (what
//! sends requests to the origin and asks the phases' verdict on its responses); an [`Outcome`]
//! leaves — an answer built from the stored or being-stored object (`serve`), the origin's
//! response relayed as is when nothing may be stored, or a phase's answer in its place. What the
//! cache did and why is written into the request's `Ctx` (`ctx.cache`). Fills run in their own
//! tasks and outlive the request that started them.
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header, request};
use tracing::{debug, warn};

use super::{
    Body, ProxyError,
    body::{data_stream, empty},
    ctx::{CacheStatus, Ctx},
    fetch::Fetcher,
    headers::strip_hop_by_hop,
    phase::Verdict,
    serve::serve,
    store::{HttpCache, content_length, key_for, unix_now, without_conditionals},
};
use crate::cache::{
    CacheError, Hit, ObjectId, ObjectKey, ObjectMeta,
    fill::FillJob,
    lock::{Acquired, FillEnd, FillPermit},
    policy::{self, Usable},
    range::{ContentRange, RangeRequest},
};

/// What the cache path made of a request.
pub enum Outcome {
    /// Answered from the stored object, or from the object being stored (a miss).
    Cached(Response<Body>),
    /// The origin's response as is: nothing was stored (`ctx.cache.not_stored` says why).
    Relayed(Response<Body>),
    /// A phase answered instead of the origin's response (a content-type `deny`).
    Answered(Response<Body>),
}

impl Outcome {
    /// The response to send.
    pub fn into_response(self) -> Response<Body> {
        match self {
            Outcome::Cached(r) | Outcome::Relayed(r) | Outcome::Answered(r) => r,
        }
    }
}

/// The object under `id`; a store that cannot answer counts as a miss.
async fn lookup(cache: &HttpCache, ctx: &Ctx, id: &ObjectId) -> Option<Hit> {
    match cache.storage.lookup(id).await {
        Ok(hit) => hit,
        Err(e) => {
            warn!(trace_id = %ctx.trace_id, error = %e, "cache lookup failed; treating it as a miss");
            None
        }
    }
}

/// Send the client's request and relay the answer (nothing is stored).
async fn forward(
    fetcher: &Arc<dyn Fetcher>,
    ctx: &mut Ctx,
    parts: request::Parts,
) -> Result<Outcome, ProxyError> {
    let resp = fetcher.fetch(ctx, parts, empty()).await?;
    // Nothing is stored here, but the phases still judge the response: a content-type `deny`
    // must hold for the client that waited on someone else's download as for that one.
    let (mut head, body) = resp.into_parts();
    if let Verdict::Answer(answer) = fetcher.verdict(ctx, &mut head).await? {
        return Ok(Outcome::Answered(answer));
    }
    Ok(Outcome::Relayed(
        fetcher.relay(Response::from_parts(head, body)),
    ))
}

/// §4.4: forget what is stored for the request's URI (and `Location`/`Content-Location`
/// on the same host) after a successful unsafe method.
pub(super) async fn invalidate(cache: &HttpCache, ctx: &Ctx, resp: &HeaderMap) {
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
        if lookup(cache, ctx, &key.id).await.is_some() {
            debug!(trace_id = %ctx.trace_id, key = %key.text, method = %ctx.method, "invalidated by an unsafe method");
            let _ = cache.storage.remove(key.id).await;
        }
    }
}

/// The cache path for a GET or HEAD the cache may answer, under `key`.
pub(super) async fn handle(
    cache: &Arc<HttpCache>,
    fetcher: &Arc<dyn Fetcher>,
    ctx: &mut Ctx,
    parts: request::Parts,
    key: &ObjectKey,
) -> Result<Outcome, ProxyError> {
    if let Some(hit) = lookup(cache, ctx, &key.id).await {
        let m = &hit.meta;
        let usable = m.len.is_some()
            && (m.sha256.is_none() || m.verified)
            && policy::vary_matches(m, &parts.headers);
        if usable {
            match policy::evaluate(m, &parts.headers, unix_now()) {
                Usable::Fresh => {
                    ctx.cache.status = CacheStatus::Hit;
                    return serve(cache, fetcher, ctx, &parts, key, hit.meta)
                        .await
                        .map(Outcome::Cached);
                }
                Usable::StaleWhileRevalidate => {
                    ctx.cache.status = CacheStatus::Stale;
                    revalidate_in_background(cache, fetcher, ctx, &parts, key, hit.meta.clone())
                        .await;
                    return serve(cache, fetcher, ctx, &parts, key, hit.meta)
                        .await
                        .map(Outcome::Cached);
                }
                Usable::Revalidate if parts.method == Method::GET => {
                    return fetch(cache, fetcher, ctx, parts, key, Some(hit.meta)).await;
                }
                Usable::Revalidate => {}
            }
        }
    }
    if parts.method == Method::HEAD {
        // Nothing to answer from: ask the origin, store nothing (a HEAD has no body).
        ctx.cache.status = CacheStatus::Miss;
        ctx.cache.not_stored = Some("method");
        return forward(fetcher, ctx, parts).await;
    }
    fetch(cache, fetcher, ctx, parts, key, None).await
}

/// Miss or revalidation: become the object's writer, or join the writer.
async fn fetch(
    cache: &Arc<HttpCache>,
    fetcher: &Arc<dyn Fetcher>,
    ctx: &mut Ctx,
    parts: request::Parts,
    key: &ObjectKey,
    stale: Option<Arc<ObjectMeta>>,
) -> Result<Outcome, ProxyError> {
    let fill = match cache.lock.acquire(key.id).await {
        Acquired::Writer(permit) => {
            return fetch_as_writer(cache, fetcher, ctx, parts, key, stale, permit).await;
        }
        Acquired::Reader(fill) => fill,
    };
    let st = fill.wait_headers(cache.settings.lock_wait).await;
    let joinable = st.as_ref().and_then(|st| match (&st.meta, &st.end) {
        (Some(m), None | Some(FillEnd::Complete)) if policy::vary_matches(m, &parts.headers) => {
            Some(m.clone())
        }
        _ => None,
    });
    match joinable {
        Some(m) => {
            ctx.cache.status = CacheStatus::Hit;
            ctx.cache.collapsed = true;
            // A fill that has completed meanwhile may have learnt the length.
            let m = match lookup(cache, ctx, &key.id).await {
                Some(s) if s.meta.version == m.version => s.meta,
                _ => m,
            };
            serve(cache, fetcher, ctx, &parts, key, m)
                .await
                .map(Outcome::Cached)
        }
        None => {
            ctx.cache.status = CacheStatus::Miss;
            ctx.cache.not_stored = Some(if st.is_none() {
                "waited too long for another download"
            } else {
                "the other download is not stored"
            });
            // Nothing is stored on this path: the client's request goes as it is.
            forward(fetcher, ctx, parts).await
        }
    }
}

/// The writer's part: ask the origin (conditionally when revalidating), decide whether the
/// answer may be stored, and if so start the fill and serve from it.
async fn fetch_as_writer(
    cache: &Arc<HttpCache>,
    fetcher: &Arc<dyn Fetcher>,
    ctx: &mut Ctx,
    parts: request::Parts,
    key: &ObjectKey,
    stale: Option<Arc<ObjectMeta>>,
    permit: FillPermit,
) -> Result<Outcome, ProxyError> {
    let s = cache.settings.slice_bytes;
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
    let resp = match fetcher.fetch(ctx, up, empty()).await {
        Ok(r) => r,
        Err(e) => {
            permit.finish(FillEnd::Failed(e.to_string().into()));
            if let Some(old) = stale
                && policy::stale_if_error(&old, unix_now())
            {
                warn!(trace_id = %ctx.trace_id, error = %e, "origin failed; serving the stored response (stale-if-error)");
                ctx.cache.status = CacheStatus::Stale;
                return serve(cache, fetcher, ctx, &parts, key, old)
                    .await
                    .map(Outcome::Cached);
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
        ctx.cache.status = CacheStatus::Stale;
        return serve(cache, fetcher, ctx, &parts, key, old.clone())
            .await
            .map(Outcome::Cached);
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
                cache.settings.heuristic,
                ctx.ttl_override,
            );
            m.ttl_override = ctx.ttl_override.is_some();
            let m = Arc::new(m);
            if let Err(e) = cache.storage.put_meta(key.id, m.clone()).await {
                warn!(trace_id = %ctx.trace_id, error = %e, "updating a revalidated object failed");
            }
            permit.finish(FillEnd::Complete);
            ctx.cache.status = CacheStatus::Revalidated;
            return serve(cache, fetcher, ctx, &parts, key, m)
                .await
                .map(Outcome::Cached);
        }
        // A 304 about some other representation: drop ours and ask plainly.
        let _ = cache.storage.remove(key.id).await;
        permit.finish(FillEnd::NotStored);
        ctx.cache.status = CacheStatus::Miss;
        ctx.cache.not_stored = Some("304 for another representation");
        return forward(fetcher, ctx, without_conditionals(parts, true)).await;
    }

    let (mut rparts, body) = resp.into_parts();
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
    match fetcher.verdict(ctx, &mut rparts).await {
        Ok(Verdict::Answer(answer)) => {
            permit.finish(FillEnd::NotStored);
            return Ok(Outcome::Answered(answer));
        }
        Ok(Verdict::DontStore(why)) if verdict.is_ok() => verdict = Err(why),
        Ok(_) => {}
        Err(e) => {
            permit.finish(FillEnd::Failed(e.to_string().into()));
            return Err(e);
        }
    }
    if verdict.is_ok() {
        if unusable_partial {
            verdict = Err("unexpected partial response");
        } else if total.is_some_and(|t| t > cache.settings.max_object_bytes) {
            verdict = Err("larger than max_object_bytes");
        } else if rparts.headers.contains_key(header::CONTENT_RANGE) && status == StatusCode::OK {
            verdict = Err("Content-Range on a 200");
        }
    }
    if let Err(reason) = verdict {
        permit.finish(FillEnd::NotStored);
        ctx.cache.status = CacheStatus::Miss;
        ctx.cache.not_stored = Some(reason);
        if stale.is_some() {
            // The origin's new answer replaces what was stored.
            let _ = cache.storage.remove(key.id).await;
        }
        if start > 0 {
            // We asked for a range the client did not: ask again with the client's request.
            drop(body);
            return forward(fetcher, ctx, without_conditionals(parts, true)).await;
        }
        return Ok(Outcome::Relayed(
            fetcher.relay(Response::from_parts(rparts, body)),
        ));
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
            cache.settings.heuristic,
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
        ctx.cache.status = CacheStatus::Miss;
        ctx.cache.not_stored = Some("store error");
        return Ok(Outcome::Relayed(
            fetcher.relay(Response::from_parts(rparts, body)),
        ));
    }
    permit.set_meta(meta.clone(), fill_start);
    let job = FillJob {
        storage: cache.storage.clone(),
        id: key.id,
        meta: meta.clone(),
        start: fill_start,
        end: None,
        body_offset: fill_start,
        max_object_bytes: cache.settings.max_object_bytes,
        permit,
    };
    spawn_fill(cache, ctx, job, body);
    ctx.cache.status = CacheStatus::Miss;
    serve(cache, fetcher, ctx, &parts, key, meta)
        .await
        .map(Outcome::Cached)
}

fn spawn_fill(cache: &Arc<HttpCache>, ctx: &Ctx, job: FillJob, body: hyper::body::Incoming) {
    let cache = cache.clone();
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
        cache.publish_usage();
    });
}

/// Stale-while-revalidate: refetch in the background if nobody else is.
async fn revalidate_in_background(
    cache: &Arc<HttpCache>,
    fetcher: &Arc<dyn Fetcher>,
    ctx: &Ctx,
    parts: &request::Parts,
    key: &ObjectKey,
    meta: Arc<ObjectMeta>,
) {
    let Acquired::Writer(permit) = cache.lock.acquire(key.id).await else {
        return;
    };
    let (cache, fetcher, mut ctx, parts, key) = (
        cache.clone(),
        fetcher.clone(),
        ctx.clone(),
        parts.clone(),
        key.clone(),
    );
    tokio::spawn(async move {
        let r = fetch_as_writer(&cache, &fetcher, &mut ctx, parts, &key, Some(meta), permit).await;
        if let Err(e) = r {
            debug!(trace_id = %ctx.trace_id, error = %e, "background revalidation failed");
        }
    });
}
