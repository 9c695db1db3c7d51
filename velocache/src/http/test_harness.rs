//! The harness the proxy's unit tests share: a real in-process origin (hyper on loopback) whose
//! routes the test sets and whose received requests it can read back, and the proxy over the
//! in-memory store in front of it.
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::{
    cache::MemoryStorage,
    config::HttpConfig,
    net::{ClientAddr, OrigDstAddr},
    rules::RuleSet,
};

#[derive(Clone, Default)]
pub(super) struct Route {
    pub(super) status: u16,
    pub(super) headers: Vec<(&'static str, String)>,
    pub(super) body: Bytes,
    /// Answer `If-None-Match` with 304 when it matches this.
    pub(super) etag: Option<String>,
    /// Pause before the body.
    pub(super) delay_ms: u64,
    /// Send the body chunked (no Content-Length), in this many pieces.
    pub(super) chunked: usize,
    /// Answer `Upgrade: echo` with 101 and echo bytes back.
    pub(super) echo_upgrade: bool,
}

#[derive(Default)]
pub(super) struct Origin {
    pub(super) routes: Mutex<HashMap<String, Route>>,
    pub(super) hits: Mutex<HashMap<String, usize>>,
    pub(super) last: Mutex<HashMap<String, HeaderMap>>,
    /// Close every request's connection without a response (a dead origin).
    pub(super) down: std::sync::atomic::AtomicBool,
}

impl Origin {
    pub(super) fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }
    pub(super) fn route(&self, path: &str, r: Route) {
        self.routes.lock().unwrap().insert(path.to_string(), r);
    }
    pub(super) fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
    pub(super) fn last(&self, path: &str) -> HeaderMap {
        self.last
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .unwrap_or_default()
    }
}

pub(super) type OBody = BoxBody<Bytes, std::convert::Infallible>;

pub(super) fn ofull(b: Bytes) -> OBody {
    Full::new(b).boxed()
}

pub(super) async fn answer(
    origin: Arc<Origin>,
    mut req: Request<hyper::body::Incoming>,
) -> Response<OBody> {
    let path = req.uri().path().to_string();
    *origin.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    origin
        .last
        .lock()
        .unwrap()
        .insert(path.clone(), req.headers().clone());
    let route = origin.routes.lock().unwrap().get(&path).cloned();
    let Some(r) = route else {
        let mut resp = Response::new(ofull(Bytes::from_static(b"nope")));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return resp;
    };
    if r.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(r.delay_ms)).await;
    }
    let mut b = Response::builder().status(r.status);
    for (k, v) in &r.headers {
        b = b.header(*k, v.as_str());
    }
    if let Some(tag) = &r.etag {
        b = b.header("etag", tag.as_str());
        if req.headers().get("if-none-match").map(|v| v.as_bytes()) == Some(tag.as_bytes()) {
            return b.status(304).body(ofull(Bytes::new())).unwrap();
        }
    }
    // Ranges, for slice fetches.
    if let Some(range) = req
        .headers()
        .get("range")
        .and_then(|v| crate::cache::range::RangeRequest::parse(v.as_bytes()))
        && let crate::cache::range::Resolved::Partial(span) = range.resolve(r.body.len() as u64)
    {
        return b
            .status(206)
            .header("content-range", span.content_range(r.body.len() as u64))
            .body(ofull(r.body.slice(span.start as usize..span.end as usize)))
            .unwrap();
    }
    if r.echo_upgrade {
        let up = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(u) = up.await {
                let (mut rd, mut wr) = tokio::io::split(TokioIo::new(u));
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
            }
        });
        return b
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(ofull(Bytes::new()))
            .unwrap();
    }
    if r.chunked > 0 {
        let size = r.body.len().div_ceil(r.chunked).max(1);
        let chunks: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = r
            .body
            .chunks(size)
            .map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        return b
            .body(StreamBody::new(futures::stream::iter(chunks)).boxed())
            .unwrap();
    }
    b.body(ofull(r.body.clone())).unwrap()
}

pub(super) struct Setup {
    pub(super) origin: Arc<Origin>,
    pub(super) proxy_addr: SocketAddr,
    pub(super) origins: Arc<crate::origins::Origins>,
}

pub(super) async fn setup(rules: &str, tweak: impl FnOnce(&mut HttpConfig)) -> Setup {
    setup_with(rules, tweak, Vec::new()).await
}

/// [`setup`] with `phases` before the rules.
pub(super) async fn setup_with(
    rules: &str,
    tweak: impl FnOnce(&mut HttpConfig),
    phases: Vec<Arc<dyn Phase>>,
) -> Setup {
    setup_all(
        rules,
        tweak,
        phases,
        crate::config::OriginsConfig::default(),
    )
    .await
}

/// [`setup_with`] with `[origins]` settings.
pub(super) async fn setup_all(
    rules: &str,
    tweak: impl FnOnce(&mut HttpConfig),
    phases: Vec<Arc<dyn Phase>>,
    origins_cfg: crate::config::OriginsConfig,
) -> Setup {
    let (origin, origin_addr) = spawn_origin().await;
    let origins = crate::origins::Origins::unregistered(&origins_cfg);
    let proxy_addr = proxy_with_origins(origin_addr, rules, tweak, phases, origins.clone()).await;
    Setup {
        origin,
        proxy_addr,
        origins,
    }
}

/// The in-process origin on loopback, and its address.
pub(super) async fn spawn_origin() -> (Arc<Origin>, SocketAddr) {
    let origin = Arc::new(Origin::default());
    let ol = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin_addr = ol.local_addr().unwrap();
    let o = origin.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = ol.accept().await.unwrap();
            let o = o.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let o = o.clone();
                    async move {
                        if o.down.load(std::sync::atomic::Ordering::SeqCst) {
                            // hyper closes the connection without writing a response.
                            return Err(std::io::Error::other("origin is down"));
                        }
                        Ok(answer(o, req).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (origin, origin_addr)
}

/// A proxy on loopback whose clients all meant to reach `origin_addr`.
pub(super) async fn proxy_for(
    origin_addr: SocketAddr,
    rules: &str,
    tweak: impl FnOnce(&mut HttpConfig),
    phases: Vec<Arc<dyn Phase>>,
) -> SocketAddr {
    let origins = crate::origins::Origins::unregistered(&crate::config::OriginsConfig::default());
    proxy_with_origins(origin_addr, rules, tweak, phases, origins).await
}

/// [`proxy_for`] asking and telling `origins`.
pub(super) async fn proxy_with_origins(
    origin_addr: SocketAddr,
    rules: &str,
    tweak: impl FnOnce(&mut HttpConfig),
    phases: Vec<Arc<dyn Phase>>,
    origins: Arc<crate::origins::Origins>,
) -> SocketAddr {
    let mut cfg = HttpConfig {
        slice_bytes: 64 << 10,
        memory_object_max_bytes: 1024,
        lock_wait_ms: crate::config::Millis(5_000),
        ..HttpConfig::default()
    };
    tweak(&mut cfg);
    let rules = crate::rules::Rules::from_set(RuleSet::parse(rules, "test").unwrap());
    let mut registry = prometheus_client::registry::Registry::default();
    let proxy = proxy_with_storage(
        &cfg,
        Some(MemoryStorage::new(64 << 20)),
        rules,
        origins,
        &mut registry,
        phases,
    );
    let pl = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = pl.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, peer) = pl.accept().await.unwrap();
            let p = proxy.clone();
            tokio::spawn(p.serve(
                s,
                Conn {
                    scheme: Scheme::Http,
                    client: ClientAddr(peer),
                    orig_dst: OrigDstAddr(origin_addr),
                },
                super::ClientProtocol::Http1,
            ));
        }
    });
    proxy_addr
}

pub(super) struct Got {
    pub(super) status: u16,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

pub(super) async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Got {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "origin.test");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = sender
        .send_request(b.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Got {
        status,
        headers,
        body,
    }
}

pub(super) async fn get(addr: SocketAddr, path: &str) -> Got {
    send(addr, "GET", path, &[]).await
}

pub(super) fn blob(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| (i % 253) as u8).collect::<Vec<_>>())
}

pub(super) fn cacheable(body: Bytes) -> Route {
    Route {
        status: 200,
        headers: vec![("cache-control", "max-age=3600".into())],
        body,
        ..Default::default()
    }
}

/// Wait until the store holds `path` completely (fills finish after the response).
pub(super) async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}
