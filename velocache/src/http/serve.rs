//! Answering from the cache: a stored (or being stored) object's metadata and the client's
//! request head enter; a response leaves — its head built from the metadata (conditional 304,
//! Range 206/416, HEAD), its body from the RAM tier or an [`ObjectReader`], which follows fills
//! in progress and, through [`SliceFetcher`], has missing slices fetched with Range requests by
//! the cache path's [`Fetcher`]. On a plain HTTP/1.1 connection (a [`SendfileConn`] in the
//! `Ctx`) committed slices leave as placeholders the connection sends from their files
//! (`sendfile`).
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header, request};
use tracing::warn;

use super::{
    Body, ProxyError,
    body::{data_stream, empty, from_stream, full},
    ctx::Ctx,
    fetch::Fetcher,
    headers::add_via,
    sendfile::{Gate, PLACEHOLDER_LEN, SendfileConn},
    store::{HttpCache, content_length, unix_now, without_conditionals},
};
use crate::cache::{
    ObjectId, ObjectKey, ObjectMeta,
    fill::FillJob,
    lock::{Acquired, Fill, FillEnd},
    policy,
    range::{ContentRange, RangeRequest, Resolved},
    reader::{ObjectReader, Piece, RangeFetcher},
};

/// Answer from a stored (or being stored) object: conditional 304, Range 206/416, HEAD,
/// or the whole body.
pub(super) async fn serve(
    cache: &Arc<HttpCache>,
    fetcher: &Arc<dyn Fetcher>,
    ctx: &mut Ctx,
    parts: &request::Parts,
    key: &ObjectKey,
    meta: Arc<ObjectMeta>,
) -> Result<Response<Body>, ProxyError> {
    if ctx.cache.status.from_cache() {
        // For `velocache cache ls`: how often this copy saved a trip to the origin.
        cache.storage.record_hit(&key.id, meta.version);
    }
    ctx.cache.object = Some(meta.clone());
    let mut headers = meta.headers.clone();
    let age = policy::current_age(&meta, unix_now());
    headers.insert(header::AGE, HeaderValue::from(age));
    add_via(&mut headers, http::Version::HTTP_11, &cache.settings.via);
    headers.insert(
        "x-cache-status",
        HeaderValue::from_static(ctx.cache.status.as_str()),
    );
    let status = StatusCode::from_u16(meta.status).unwrap_or(StatusCode::OK);
    if status == StatusCode::OK
        && !parts.headers.contains_key(header::RANGE)
        && policy::client_not_modified(&meta, &parts.headers)
    {
        return Ok(build(StatusCode::NOT_MODIFIED, headers, empty()));
    }
    let total = meta.len;
    let (mut start, mut end) = (0, total);
    let mut code = status;
    if status == StatusCode::OK {
        if total.is_some() {
            headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        }
        if let (Some(total), Some(r)) = (
            total,
            parts
                .headers
                .get(header::RANGE)
                .and_then(|v| RangeRequest::parse(v.as_bytes())),
        ) && policy::if_range_allows(&meta, &parts.headers)
        {
            match r.resolve(total) {
                Resolved::Partial(span) => {
                    code = StatusCode::PARTIAL_CONTENT;
                    if let Ok(v) = HeaderValue::from_str(&span.content_range(total)) {
                        headers.insert(header::CONTENT_RANGE, v);
                    }
                    (start, end) = (span.start, Some(span.end));
                }
                Resolved::Unsatisfiable => {
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{total}")) {
                        headers.insert(header::CONTENT_RANGE, v);
                    }
                    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
                    return Ok(build(StatusCode::RANGE_NOT_SATISFIABLE, headers, empty()));
                }
            }
        }
    }
    if let Some(e) = end {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(e - start));
    }
    if parts.method == Method::HEAD {
        return Ok(build(code, headers, empty()));
    }
    if let Some(body) = hot_body(cache, key, &meta, start, end).await {
        return Ok(build(code, headers, full(body)));
    }
    let slices: Arc<dyn RangeFetcher> = Arc::new(SliceFetcher {
        fetcher: fetcher.clone(),
        cache: cache.clone(),
        ctx: ctx.clone(),
        request: without_conditionals(parts.clone(), false),
    });
    // On a plain HTTP/1.1 connection, committed slices may go out from their files.
    let files = ctx.extensions.get::<SendfileConn>().cloned().map(|conn| {
        let gate = Gate::default();
        ctx.extensions.insert(gate.clone());
        (conn, gate)
    });
    let reader = ObjectReader::new(
        cache.storage.clone(),
        cache.lock.clone(),
        Some(slices),
        key.id,
        meta,
        start,
        end,
        cache.settings.lock_wait,
    );
    let body = match files {
        Some((conn, gate)) => from_stream(with_files(reader, conn, gate)),
        None => from_stream(reader.into_stream()),
    };
    Ok(build(code, headers, body))
}

/// The reader's pieces as body chunks: committed slices as placeholders for the connection's
/// stream to send from their files (once the proxy has armed `gate`), the rest as bytes.
fn with_files(
    reader: ObjectReader,
    conn: SendfileConn,
    gate: Gate,
) -> impl futures::Stream<Item = Result<Bytes, crate::cache::CacheError>> + Send {
    futures::stream::unfold((reader, conn, gate), |(mut r, conn, gate)| async move {
        let files = gate.armed().then_some(PLACEHOLDER_LEN as u64);
        let chunk = r.next_piece(files).await?.map(|p| match p {
            Piece::Bytes(b) => b,
            Piece::File(region) => conn.placeholder(region),
        });
        Some((chunk, (r, conn, gate)))
    })
}

fn build(status: StatusCode, headers: HeaderMap, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

/// Small complete objects from RAM (loaded once from the store).
async fn hot_body(
    cache: &HttpCache,
    key: &ObjectKey,
    meta: &ObjectMeta,
    start: u64,
    end: Option<u64>,
) -> Option<Bytes> {
    let len = meta.len?;
    let end = end?;
    if len > cache.settings.memory_object_max_bytes {
        return None;
    }
    let hk = (key.id, meta.version);
    let whole = match cache.hot.get(&hk) {
        Some(b) => b,
        None => {
            let hit = cache.storage.lookup(&key.id).await.ok()??;
            if hit.meta.version != meta.version || !hit.complete() {
                return None;
            }
            let mut r = ObjectReader::new(
                cache.storage.clone(),
                cache.lock.clone(),
                None,
                key.id,
                hit.meta,
                0,
                None,
                cache.settings.lock_wait,
            );
            let mut buf = Vec::with_capacity(len as usize);
            while let Some(c) = r.next_chunk().await {
                buf.extend_from_slice(&c.ok()?);
            }
            if buf.len() as u64 != len {
                return None;
            }
            let b = Bytes::from(buf);
            cache.hot.insert(hk, b.clone());
            b
        }
    };
    Some(whole.slice(start as usize..end as usize))
}

/// Fetches missing slices of a stored object with Range requests (`If-Range` guards against the
/// origin's object having changed meanwhile).
struct SliceFetcher {
    fetcher: Arc<dyn Fetcher>,
    cache: Arc<HttpCache>,
    ctx: Ctx,
    request: request::Parts,
}

impl RangeFetcher for SliceFetcher {
    fn fetch(
        &self,
        id: ObjectId,
        meta: Arc<ObjectMeta>,
        first: u64,
        last: u64,
    ) -> BoxFuture<'_, Option<Arc<Fill>>> {
        Box::pin(self.start(id, meta, first, last))
    }
}

impl SliceFetcher {
    async fn start(
        &self,
        id: ObjectId,
        meta: Arc<ObjectMeta>,
        first: u64,
        last: u64,
    ) -> Option<Arc<Fill>> {
        let permit = match self.cache.lock.acquire(id).await {
            Acquired::Reader(f) => return Some(f),
            Acquired::Writer(p) => p,
        };
        let len = meta.len?;
        let s = meta.slice_bytes;
        let start = first * s;
        let end = (last * s).min(len);
        if start >= end {
            return None;
        }
        permit.set_meta(meta.clone(), start);
        let fill = permit.fill().clone();
        let mut up = self.request.clone();
        if let Ok(v) = HeaderValue::from_str(&format!("bytes={start}-{}", end - 1)) {
            up.headers.insert(header::RANGE, v);
        }
        let validator = meta
            .headers
            .get(header::ETAG)
            .filter(|e| !e.as_bytes().starts_with(b"W/"))
            .or_else(|| meta.headers.get(header::LAST_MODIFIED))
            .cloned();
        if let Some(v) = validator {
            up.headers.insert(header::IF_RANGE, v);
        }
        let (fetcher, cache, mut ctx) =
            (self.fetcher.clone(), self.cache.clone(), self.ctx.clone());
        tokio::spawn(async move {
            let resp = match fetcher.fetch(&mut ctx, up, empty()).await {
                Ok(r) => r,
                Err(e) => {
                    permit.finish(FillEnd::Failed(e.to_string().into()));
                    return;
                }
            };
            let body_offset = match resp.status() {
                StatusCode::PARTIAL_CONTENT => resp
                    .headers()
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| ContentRange::parse(v.as_bytes()))
                    .filter(|cr| cr.span.start == start && cr.total == Some(len))
                    .map(|_| start),
                StatusCode::OK if same_object(&meta, resp.headers(), len) => Some(0),
                _ => None,
            };
            let Some(body_offset) = body_offset else {
                warn!(trace_id = %ctx.trace_id, key = %meta.key, status = %resp.status(),
                    "the origin's object changed under a partial fetch; dropping the stored one");
                let _ = cache.storage.remove(id).await;
                permit.finish(FillEnd::Failed("the origin's object changed".into()));
                return;
            };
            let job = FillJob {
                storage: cache.storage.clone(),
                id,
                meta,
                start,
                end: Some(end),
                body_offset,
                max_object_bytes: cache.settings.max_object_bytes,
                permit,
            };
            let body = resp.into_body();
            if let Err(e) = job.run(data_stream(body)).await {
                warn!(trace_id = %ctx.trace_id, error = %e, "fetching missing slices failed");
            }
            cache.publish_usage();
        });
        Some(fill)
    }
}

/// Whether a full response is the stored object (same validators and length).
fn same_object(meta: &ObjectMeta, h: &HeaderMap, len: u64) -> bool {
    let same = |name| meta.headers.get(&name) == h.get(&name);
    content_length(h) == Some(len)
        && (meta.headers.contains_key(header::ETAG)
            || meta.headers.contains_key(header::LAST_MODIFIED))
        && same(header::ETAG)
        && same(header::LAST_MODIFIED)
}
