//! The phase chain through the proxy, against the shared in-process origin: which hooks a miss
//! and a hit meet and in what order, a phase that answers, what a capture phase can see from the
//! `Ctx` alone, a phase that waits, a cache-key phase, and the framing no phase can break.
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::FutureExt as _;
use http::{HeaderMap, HeaderValue, Response, StatusCode, request, response};

use super::{test_harness::*, *};

/// Records every hook it meets, by name.
struct Recorder {
    log: Arc<Mutex<Vec<&'static str>>>,
    /// Answer requests for this path itself.
    answer: Option<&'static str>,
}

impl Recorder {
    fn note(&self, hook: &'static str) {
        self.log.lock().unwrap().push(hook);
    }
}

impl Phase for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    fn request_filter<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        _req: &'a mut request::Parts,
    ) -> Step<'a, Result<Option<Response<Body>>, ProxyError>> {
        self.note("request");
        if self.answer == Some(ctx.path.as_str()) {
            let mut r = Response::new(body::full("from a phase"));
            *r.status_mut() = StatusCode::IM_A_TEAPOT;
            return Step::Ready(Ok(Some(r)));
        }
        Step::Ready(Ok(None))
    }

    fn cache_key_filter<'a>(
        &'a self,
        _ctx: &'a mut Ctx,
        _req: &'a request::Parts,
    ) -> Step<'a, Result<(), ProxyError>> {
        self.note("cache_key");
        Step::Ready(Ok(()))
    }

    fn upstream_request_filter<'a>(
        &'a self,
        _ctx: &'a mut Ctx,
        _req: &'a mut request::Parts,
    ) -> Step<'a, Result<(), ProxyError>> {
        self.note("upstream_request");
        Step::Ready(Ok(()))
    }

    fn upstream_response_filter<'a>(
        &'a self,
        _ctx: &'a mut Ctx,
        _resp: &'a mut response::Parts,
    ) -> Step<'a, Result<(), ProxyError>> {
        self.note("upstream_response");
        Step::Ready(Ok(()))
    }

    fn response_cache_filter<'a>(
        &'a self,
        _ctx: &'a mut Ctx,
        _resp: &'a mut response::Parts,
    ) -> Step<'a, Result<Verdict, ProxyError>> {
        self.note("response_cache");
        Step::Ready(Ok(Verdict::Store))
    }

    fn response_filter<'a>(
        &'a self,
        _ctx: &'a mut Ctx,
        _resp: &'a mut response::Parts,
    ) -> Step<'a, Result<(), ProxyError>> {
        self.note("response");
        Step::Ready(Ok(()))
    }

    fn logging(&self, _ctx: &Ctx, _end: &RequestEnd) {
        self.note("logging");
    }
}

/// Wait (bounded) until `done` holds: `logging` runs when hyper is done with the body, which
/// may be just after the client has read it.
async fn until(done: impl Fn() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "the request never reached its logging phase"
    );
}

async fn recorded(log: &Arc<Mutex<Vec<&'static str>>>) -> Vec<&'static str> {
    until(|| log.lock().unwrap().last() == Some(&"logging")).await;
    std::mem::take(&mut *log.lock().unwrap())
}

#[tokio::test]
async fn a_miss_and_a_hit_meet_the_hooks_in_order() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let phases: Vec<Arc<dyn Phase>> = vec![Arc::new(Recorder {
        log: log.clone(),
        answer: None,
    })];
    let s = setup_with("", |_| {}, phases).await;
    s.origin.route("/obj", cacheable(blob(300)));
    assert_eq!(get(s.proxy_addr, "/obj").await.status, 200);
    assert_eq!(
        recorded(&log).await,
        [
            "request",
            "cache_key",
            "upstream_request",
            "upstream_response",
            "response_cache",
            "response",
            "logging"
        ]
    );
    settle().await;
    let hit = get(s.proxy_addr, "/obj").await;
    assert_eq!(hit.headers["x-cache-status"], "hit");
    assert_eq!(
        recorded(&log).await,
        ["request", "cache_key", "response", "logging"]
    );
    // A POST goes around the cache: no cache key, but the verdict on the response still runs.
    s.origin.route("/form", cacheable(blob(10)));
    assert_eq!(send(s.proxy_addr, "POST", "/form", &[]).await.status, 200);
    assert_eq!(
        recorded(&log).await,
        [
            "request",
            "upstream_request",
            "upstream_response",
            "response_cache",
            "response",
            "logging"
        ]
    );
}

#[tokio::test]
async fn a_phase_that_answers_ends_the_request_before_the_rules_and_the_origin() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let phases: Vec<Arc<dyn Phase>> = vec![Arc::new(Recorder {
        log: log.clone(),
        answer: Some("/teapot"),
    })];
    // The rules would deny it: the earlier phase answers first.
    let s = setup_with(
        "[[rule]]\nname = \"no-tea\"\nmatch_path = [\"/teapot\"]\naction = \"deny\"\n",
        |_| {},
        phases,
    )
    .await;
    s.origin.route("/teapot", cacheable(blob(10)));
    let r = get(s.proxy_addr, "/teapot").await;
    assert_eq!(r.status, 418);
    assert_eq!(&r.body[..], b"from a phase");
    assert_eq!(s.origin.hits("/teapot"), 0);
    assert_eq!(recorded(&log).await, ["request", "response", "logging"]);
}

/// What a capture phase (the dashboard's inspector) records of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    client_head: HeaderMap,
    upstream_head: Option<HeaderMap>,
    origin_status: Option<u16>,
    status: u16,
    cache: CacheStatus,
    not_stored: Option<&'static str>,
    key: Option<String>,
    lifetime: Option<u64>,
    upstream_timed: bool,
    ttfb_known: bool,
    bytes: u64,
}

/// Its per-request state, kept in `ctx.extensions`.
#[derive(Clone, Default)]
struct Heads {
    client: HeaderMap,
    upstream: Option<HeaderMap>,
    origin_status: Option<u16>,
}

/// A capture phase built on the hooks and the `Ctx` alone.
struct Capture {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Phase for Capture {
    fn name(&self) -> &str {
        "capture"
    }

    fn request_filter<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        req: &'a mut request::Parts,
    ) -> Step<'a, Result<Option<Response<Body>>, ProxyError>> {
        ctx.extensions.insert(Heads {
            client: req.headers.clone(),
            ..Heads::default()
        });
        Step::Ready(Ok(None))
    }

    fn upstream_request_filter<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        req: &'a mut request::Parts,
    ) -> Step<'a, Result<(), ProxyError>> {
        if let Some(h) = ctx.extensions.get_mut::<Heads>() {
            h.upstream = Some(req.headers.clone());
        }
        Step::Ready(Ok(()))
    }

    fn upstream_response_filter<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        resp: &'a mut response::Parts,
    ) -> Step<'a, Result<(), ProxyError>> {
        if let Some(h) = ctx.extensions.get_mut::<Heads>() {
            h.origin_status = Some(resp.status.as_u16());
        }
        Step::Ready(Ok(()))
    }

    fn logging(&self, ctx: &Ctx, end: &RequestEnd) {
        let heads = ctx.extensions.get::<Heads>().cloned().unwrap_or_default();
        self.seen.lock().unwrap().push(Seen {
            path: ctx.path.clone(),
            client_head: heads.client,
            upstream_head: heads.upstream,
            origin_status: heads.origin_status,
            status: end.status,
            cache: ctx.cache.status,
            not_stored: ctx.cache.not_stored,
            key: ctx.cache.key.as_ref().map(|k| k.text.clone()),
            lifetime: ctx.cache.object.as_ref().map(|m| m.lifetime),
            upstream_timed: ctx.timings.upstream_sent.is_some()
                && ctx.timings.upstream_head.is_some(),
            ttfb_known: ctx.timings.response_head.is_some(),
            bytes: end.bytes,
        });
    }
}

async fn captured(seen: &Arc<Mutex<Vec<Seen>>>) -> Seen {
    until(|| !seen.lock().unwrap().is_empty()).await;
    seen.lock().unwrap().remove(0)
}

#[tokio::test]
async fn a_capture_phase_sees_heads_decision_reason_and_timings_in_the_ctx() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let phases: Vec<Arc<dyn Phase>> = vec![Arc::new(Capture { seen: seen.clone() })];
    let s = setup_with("", |_| {}, phases).await;
    s.origin.route("/cap", cacheable(blob(100)));

    send(s.proxy_addr, "GET", "/cap", &[("x-client", "1")]).await;
    let miss = captured(&seen).await;
    assert_eq!((miss.path.as_str(), miss.status), ("/cap", 200));
    assert_eq!(miss.cache, CacheStatus::Miss);
    assert_eq!(miss.not_stored, None);
    let key = miss.key.as_deref().unwrap_or_default();
    assert!(key.starts_with("url:origin.test@127.0.0.1"), "{key}");
    assert_eq!(miss.lifetime, Some(3600));
    assert!(miss.upstream_timed && miss.ttfb_known);
    assert_eq!(miss.origin_status, Some(200));
    assert_eq!(miss.bytes, 100);
    assert_eq!(miss.client_head["x-client"], "1");
    assert!(!miss.client_head.contains_key("via"));
    let upstream = miss.upstream_head.unwrap_or_default();
    assert_eq!(upstream["x-client"], "1");
    assert!(upstream.contains_key("via"), "{upstream:?}");

    settle().await;
    send(s.proxy_addr, "GET", "/cap", &[]).await;
    let hit = captured(&seen).await;
    assert_eq!(hit.cache, CacheStatus::Hit);
    assert_eq!(hit.lifetime, Some(3600));
    assert!(hit.upstream_head.is_none() && !hit.upstream_timed);
    assert_eq!(hit.key, miss.key);

    s.origin.route(
        "/private",
        Route {
            status: 200,
            headers: vec![("cache-control", "no-store".into())],
            body: blob(5),
            ..Default::default()
        },
    );
    get(s.proxy_addr, "/private").await;
    let not_stored = captured(&seen).await;
    assert_eq!(not_stored.cache, CacheStatus::Miss);
    assert_eq!(not_stored.not_stored, Some("no-store"));
}

/// Adds a header to requests for the origin after waiting on a timer: a hook that is not
/// ready at once.
struct Slow;

impl Phase for Slow {
    fn name(&self) -> &str {
        "slow"
    }

    fn upstream_request_filter<'a>(
        &'a self,
        _ctx: &'a mut Ctx,
        req: &'a mut request::Parts,
    ) -> Step<'a, Result<(), ProxyError>> {
        Step::Pending(
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                req.headers
                    .insert("x-waited", HeaderValue::from_static("yes"));
                Ok(())
            }
            .boxed(),
        )
    }
}

#[tokio::test]
async fn a_phase_that_waits_is_awaited_before_the_request_leaves() {
    let s = setup_with("", |_| {}, vec![Arc::new(Slow)]).await;
    s.origin.route("/w", cacheable(blob(10)));
    assert_eq!(get(s.proxy_addr, "/w").await.status, 200);
    assert_eq!(s.origin.last("/w")["x-waited"], "yes");
}

/// Keys every request without its query.
struct NoQuery;

impl Phase for NoQuery {
    fn name(&self) -> &str {
        "no-query"
    }

    fn cache_key_filter<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        _req: &'a request::Parts,
    ) -> Step<'a, Result<(), ProxyError>> {
        ctx.key_options.ignore_query = true;
        Step::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_cache_key_phase_decides_what_counts_as_the_same_object() {
    let s = setup_with("", |_| {}, vec![Arc::new(NoQuery)]).await;
    s.origin.route("/q", cacheable(blob(50)));
    get(s.proxy_addr, "/q?a=1").await;
    settle().await;
    let second = get(s.proxy_addr, "/q?a=2").await;
    assert_eq!(second.headers["x-cache-status"], "hit");
    assert_eq!(s.origin.hits("/q"), 1);
}

/// Tries to give a bodiless GET a body's framing on its way to the origin.
struct Smuggler;

impl Phase for Smuggler {
    fn name(&self) -> &str {
        "smuggler"
    }

    fn upstream_request_filter<'a>(
        &'a self,
        _ctx: &'a mut Ctx,
        req: &'a mut request::Parts,
    ) -> Step<'a, Result<(), ProxyError>> {
        req.headers
            .insert("transfer-encoding", HeaderValue::from_static("chunked"));
        req.headers
            .insert("content-length", HeaderValue::from_static("5"));
        req.headers
            .insert("host", HeaderValue::from_static("elsewhere.test"));
        Step::Ready(Ok(()))
    }
}

#[tokio::test]
async fn an_upstream_phase_cannot_change_the_framing_or_the_host_the_origin_sees() {
    let s = setup_with("", |_| {}, vec![Arc::new(Smuggler)]).await;
    s.origin.route("/f", cacheable(blob(10)));
    let r = get(s.proxy_addr, "/f").await;
    assert_eq!(r.status, 200);
    let seen = s.origin.last("/f");
    assert!(
        !seen.contains_key("transfer-encoding") && !seen.contains_key("content-length"),
        "{seen:?}"
    );
    assert_eq!(seen["host"], "origin.test");
}

/// What a tap saw of one response: status, body, whether it ended complete, cache status.
type TapSeen = Arc<Mutex<Vec<(u16, Vec<u8>, bool, CacheStatus)>>>;

/// A body tap that keeps what it saw, for one response.
struct Tapped {
    status: u16,
    data: Vec<u8>,
    out: TapSeen,
}

impl BodyTap for Tapped {
    fn chunk(&mut self, data: &bytes::Bytes) {
        self.data.extend_from_slice(data);
    }

    fn end(self: Box<Self>, ctx: &Ctx, end: &RequestEnd) {
        let me = *self;
        me.out
            .lock()
            .unwrap()
            .push((me.status, me.data, end.complete, ctx.cache.status));
    }
}

/// Taps the bodies of responses to paths under `/tap/`.
struct Tapper {
    out: TapSeen,
}

impl Phase for Tapper {
    fn name(&self) -> &str {
        "tapper"
    }

    fn body_tap(&self, ctx: &Ctx, resp: &response::Parts) -> Option<Box<dyn BodyTap>> {
        ctx.path.starts_with("/tap/").then(|| {
            Box::new(Tapped {
                status: resp.status.as_u16(),
                data: Vec::new(),
                out: self.out.clone(),
            }) as Box<dyn BodyTap>
        })
    }
}

#[tokio::test]
async fn a_body_tap_sees_every_byte_the_client_gets_from_the_origin_and_the_cache() {
    let out = Arc::new(Mutex::new(Vec::new()));
    let phases: Vec<Arc<dyn Phase>> = vec![Arc::new(Tapper { out: out.clone() })];
    let s = setup_with("", |_| {}, phases).await;
    let body = blob(300_000);
    s.origin.route("/tap/obj", cacheable(body.clone()));
    s.origin.route("/other", cacheable(blob(10)));
    let miss = get(s.proxy_addr, "/tap/obj").await;
    assert_eq!(miss.body, body);
    until(|| out.lock().unwrap().len() == 1).await;
    settle().await;
    let hit = get(s.proxy_addr, "/tap/obj").await;
    assert_eq!(hit.headers["x-cache-status"], "hit");
    until(|| out.lock().unwrap().len() == 2).await;
    assert_eq!(get(s.proxy_addr, "/other").await.status, 200);
    let seen = std::mem::take(&mut *out.lock().unwrap());
    assert_eq!(seen.len(), 2, "only the tapped path is tapped");
    for (i, (status, data, complete, cache)) in seen.into_iter().enumerate() {
        assert_eq!(status, 200);
        assert!(complete, "response {i} ended complete");
        assert!(
            data == body,
            "response {i}: the tap saw the body the client got"
        );
        let want = if i == 0 {
            CacheStatus::Miss
        } else {
            CacheStatus::Hit
        };
        assert_eq!(cache, want);
    }
}
