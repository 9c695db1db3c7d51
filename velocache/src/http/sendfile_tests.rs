//! Cache hits sent with `sendfile` on plain connections: the proxy over the real disk store,
//! its client connections wrapped as the HTTP service wraps them, against the in-process origin.
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use http::response;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpSocket},
};

use super::{sendfile::SendfileIo, test_harness::*, *};
use crate::{
    cache::DiskStorage,
    config::HttpConfig,
    net::{ClientAddr, OrigDstAddr},
    rules::RuleSet,
};

const SLICE: u64 = 1 << 20;

/// What the logging phase saw of each request: status, bytes, complete.
type Ends = Arc<Mutex<Vec<(u16, u64, bool)>>>;

struct Ended(Ends);

impl Phase for Ended {
    fn name(&self) -> &str {
        "ended"
    }

    fn logging(&self, _ctx: &Ctx, end: &RequestEnd) {
        self.0
            .lock()
            .unwrap()
            .push((end.status, end.bytes, end.complete));
    }
}

/// Copies every body it is shown (a capture would).
struct Tap(Arc<Mutex<Vec<u8>>>);

struct Tapping(Arc<Mutex<Vec<u8>>>);

impl BodyTap for Tapping {
    fn chunk(&mut self, data: &bytes::Bytes) {
        self.0.lock().unwrap().extend_from_slice(data);
    }

    fn end(self: Box<Self>, _ctx: &Ctx, _end: &RequestEnd) {}
}

impl Phase for Tap {
    fn name(&self) -> &str {
        "tap"
    }

    fn body_tap(&self, ctx: &Ctx, _resp: &response::Parts) -> Option<Box<dyn BodyTap>> {
        ctx.path
            .starts_with("/tap/")
            .then(|| Box::new(Tapping(self.0.clone())) as Box<dyn BodyTap>)
    }
}

struct Rig {
    origin: Arc<Origin>,
    /// Clients on plain TCP, served as the HTTP service serves them (sendfile).
    plain: std::net::SocketAddr,
    /// Clients served without a sendfile queue (as decrypted HTTPS is).
    copied: std::net::SocketAddr,
    proxy: Arc<Proxy>,
    store: Arc<DiskStorage>,
    ends: Ends,
    tapped: Arc<Mutex<Vec<u8>>>,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn sent_from_files(&self) -> u64 {
        self.proxy.sendfile_counter().get()
    }

    /// Wait until every stored object is complete (fills finish after the response).
    async fn stored(&self) {
        let done = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let list = self.store.list();
                if !list.is_empty() && list.iter().all(|(_, h)| h.complete()) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(done.is_ok(), "the object was never stored completely");
    }

    /// Wait for the `n`th request's end, and return it.
    async fn end(&self, n: usize) -> (u16, u64, bool) {
        let done = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Some(e) = self.ends.lock().unwrap().get(n - 1) {
                    return *e;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        done.unwrap_or_else(|_| panic!("request {n} never reached its logging phase"))
    }
}

async fn rig() -> Rig {
    rig_with("").await
}

async fn rig_with(rules: &str) -> Rig {
    let (origin, origin_addr) = spawn_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStorage::open(dir.path(), 1 << 30, 64, false).unwrap();
    let cfg = HttpConfig {
        slice_bytes: SLICE,
        memory_object_max_bytes: 1024,
        lock_wait_ms: crate::config::Millis(5_000),
        ..HttpConfig::default()
    };
    let ends = Ends::default();
    let tapped = Arc::new(Mutex::new(Vec::new()));
    let phases: Vec<Arc<dyn Phase>> =
        vec![Arc::new(Ended(ends.clone())), Arc::new(Tap(tapped.clone()))];
    let rules = crate::rules::Rules::from_set(RuleSet::parse(rules, "test").unwrap());
    let origins = crate::origins::Origins::unregistered(&crate::config::OriginsConfig::default());
    let mut registry = prometheus_client::registry::Registry::default();
    let storage: Arc<dyn crate::cache::Storage> = store.clone();
    let proxy = proxy_with_storage(&cfg, Some(storage), rules, origins, &mut registry, phases);
    let conn = move |peer| Conn {
        scheme: Scheme::Http,
        client: ClientAddr(peer),
        orig_dst: OrigDstAddr(origin_addr),
    };
    let (pl, cl) = (
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    );
    let (plain, copied) = (pl.local_addr().unwrap(), cl.local_addr().unwrap());
    let p = proxy.clone();
    tokio::spawn(async move {
        loop {
            let (s, peer) = pl.accept().await.unwrap();
            let (io, files) = SendfileIo::new(s, p.sendfile_counter());
            let fut = p
                .clone()
                .serve_with(io, conn(peer), ClientProtocol::Http1, Some(files));
            tokio::spawn(fut);
        }
    });
    let p = proxy.clone();
    tokio::spawn(async move {
        loop {
            let (s, peer) = cl.accept().await.unwrap();
            tokio::spawn(p.clone().serve(s, conn(peer), ClientProtocol::Http1));
        }
    });
    Rig {
        origin,
        plain,
        copied,
        proxy,
        store,
        ends,
        tapped,
        _dir: dir,
    }
}

fn stored_object(r: &Rig, path: &str, len: usize) -> bytes::Bytes {
    let body = blob(len);
    r.origin.route(
        path,
        Route {
            etag: Some("\"v1\"".into()),
            ..cacheable(body.clone())
        },
    );
    body
}

#[tokio::test]
async fn a_hit_of_many_slices_is_sent_from_the_slice_files_byte_for_byte() {
    let r = rig().await;
    let len = 5 * SLICE as usize + 777;
    let body = stored_object(&r, "/big", len);
    let miss = get(r.plain, "/big").await;
    assert_eq!(miss.headers["x-cache-status"], "miss");
    assert!(miss.body == body, "the miss got the origin's bytes");
    r.stored().await;
    r.end(1).await;

    let before = r.sent_from_files();
    let hit = get(r.plain, "/big").await;
    assert_eq!(hit.status, 200);
    assert_eq!(hit.headers["x-cache-status"], "hit");
    assert_eq!(hit.headers["content-length"], len.to_string());
    assert!(hit.body == body, "the hit's bytes are the object's");
    assert_eq!(
        r.sent_from_files() - before,
        len as u64,
        "every body byte of the hit went out with sendfile"
    );
    assert_eq!(r.end(2).await, (200, len as u64, true));
    assert_eq!(r.origin.hits("/big"), 1);

    // A connection without a sendfile queue (decrypted HTTPS) gets the same bytes, copied.
    let before = r.sent_from_files();
    let copied = get(r.copied, "/big").await;
    assert_eq!(copied.headers["x-cache-status"], "hit");
    assert!(copied.body == body);
    assert_eq!(r.sent_from_files(), before);
}

#[tokio::test]
async fn a_range_across_slices_heads_and_conditionals_on_the_sendfile_path() {
    let r = rig().await;
    let len = 4 * SLICE as usize;
    let body = stored_object(&r, "/obj", len);
    get(r.plain, "/obj").await;
    r.stored().await;

    let (from, to) = (SLICE as usize - 10, 3 * SLICE as usize + 5);
    let before = r.sent_from_files();
    let part = send(
        r.plain,
        "GET",
        "/obj",
        &[("range", &format!("bytes={from}-{to}"))],
    )
    .await;
    assert_eq!(part.status, 206);
    assert_eq!(
        part.headers["content-range"],
        format!("bytes {from}-{to}/{len}")
    );
    assert!(part.body == body.slice(from..=to), "the range's bytes");
    assert_eq!(r.sent_from_files() - before, (to - from + 1) as u64);

    // HEAD and a conditional hit send no body at all.
    let before = r.sent_from_files();
    let head = send(r.plain, "HEAD", "/obj", &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-length"], len.to_string());
    assert!(head.body.is_empty());
    let not_modified = send(r.plain, "GET", "/obj", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    assert_eq!(r.sent_from_files(), before);

    // Several hits on one keep-alive connection stay in step.
    let tcp = tokio::net::TcpStream::connect(r.plain).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    for range in ["bytes=0-99", "bytes=2097000-2097300", "bytes=-5"] {
        let req = http::Request::get("/obj")
            .header("host", "origin.test")
            .header("range", range)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 206);
        let got = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let want = match range {
            "bytes=0-99" => body.slice(0..100),
            "bytes=-5" => body.slice(len - 5..),
            _ => body.slice(2_097_000..=2_097_300),
        };
        assert!(got == want, "{range}");
    }
}

#[tokio::test]
async fn a_client_that_leaves_mid_body_ends_its_request_and_the_next_one_is_whole() {
    let r = rig().await;
    let len = 16 * SLICE as usize;
    let body = stored_object(&r, "/huge", len);
    get(r.plain, "/huge").await;
    r.stored().await;
    r.end(1).await;

    // A client with a small window that reads a little of the body and goes.
    let before = r.sent_from_files();
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut c = socket.connect(r.plain).await.unwrap();
    c.write_all(b"GET /huge HTTP/1.1\r\nhost: origin.test\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    while got.len() < 100_000 {
        let n = c.read(&mut buf).await.unwrap();
        assert!(n > 0, "the proxy closed early");
        got.extend_from_slice(&buf[..n]);
    }
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(String::from_utf8_lossy(&got[..head_end]).contains("x-cache-status: hit"));
    assert!(
        got[head_end..] == body[..got.len() - head_end],
        "the bytes it got are right"
    );
    drop(c);
    let (status, bytes, complete) = r.end(2).await;
    assert_eq!(status, 200);
    assert!(!complete, "the request is logged as broken off");
    assert!(bytes < len as u64);
    assert!(
        r.sent_from_files() > before,
        "it was being sent from the files"
    );

    let again = get(r.plain, "/huge").await;
    assert!(again.body == body, "the next client gets the whole object");
    assert_eq!(r.end(3).await, (200, len as u64, true));
}

#[tokio::test]
async fn a_body_tap_gets_the_real_bytes_and_the_body_is_copied_for_it() {
    let r = rig().await;
    let len = 2 * SLICE as usize + 3;
    let body = stored_object(&r, "/tap/x", len);
    get(r.plain, "/tap/x").await;
    r.stored().await;
    r.end(1).await;
    r.tapped.lock().unwrap().clear();

    let before = r.sent_from_files();
    let hit = get(r.plain, "/tap/x").await;
    assert_eq!(hit.headers["x-cache-status"], "hit");
    assert!(hit.body == body);
    r.end(2).await;
    assert!(
        *r.tapped.lock().unwrap() == body,
        "the tap saw the object's bytes"
    );
    assert_eq!(
        r.sent_from_files(),
        before,
        "a tapped body is not sent from files"
    );
}

#[tokio::test]
async fn a_bandwidth_fault_paces_a_hit_sent_from_the_files_without_changing_its_bytes() {
    // 80 Mbit/s: pieces of 1 MB, so each slice's placeholder is split in two.
    let r = rig_with(
        "[[rule]]\nname = \"thin\"\nmatch_path = \"/thin/*\"\naction = \"cache\"\nfault = { bandwidth_kbps = 80000 }\n",
    )
    .await;
    let len = 3 * SLICE as usize + 99;
    let body = stored_object(&r, "/thin/x", len);
    get(r.plain, "/thin/x").await;
    r.stored().await;
    r.end(1).await;

    let before = r.sent_from_files();
    let hit = get(r.plain, "/thin/x").await;
    assert_eq!(hit.headers["x-cache-status"], "hit");
    assert!(hit.body == body, "the paced hit's bytes");
    assert_eq!(r.sent_from_files() - before, len as u64);
}
