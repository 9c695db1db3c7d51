//! Request smuggling shapes through the proxy, checked at a strict origin that reads the bytes
//! it gets on each connection as a sequence of requests and records every request it parsed —
//! and anything that did not parse as one (a desync). The origin either answers as soon as it
//! has a request's head (as nginx and many application servers do for a GET) or only after the
//! whole body; the proxy must be right with both.
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use super::*;
use crate::{
    cache::MemoryStorage,
    config::HttpConfig,
    net::{ClientAddr, OrigDstAddr},
    rules::RuleSet,
};

/// One request as the origin read it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    target: String,
    host: String,
    body: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Respond once the head is in, then read the body.
    Early,
    /// Read the body, then respond.
    AfterBody,
}

#[derive(Default)]
struct Wire {
    seen: Mutex<Vec<Seen>>,
    desync: Mutex<Vec<String>>,
}

impl Wire {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    fn targets(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.target).collect()
    }
    fn desyncs(&self) -> Vec<String> {
        self.desync.lock().unwrap().clone()
    }
}

/// Read one request head (up to and including the empty line); `None` at a clean EOF.
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, String> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = buf.drain(..i + 4).collect();
            return Ok(Some(head));
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(format!(
                    "EOF inside a head: {:?}",
                    String::from_utf8_lossy(buf)
                ))
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn read_exact_buffered(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    n: usize,
) -> Result<Vec<u8>, String> {
    while buf.len() < n {
        let mut chunk = [0u8; 4096];
        let got = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if got == 0 {
            return Err(format!("EOF with {} of {n} body bytes", buf.len()));
        }
        buf.extend_from_slice(&chunk[..got]);
    }
    Ok(buf.drain(..n).collect())
}

async fn read_line(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Vec<u8>, String> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let line: Vec<u8> = buf.drain(..i + 2).collect();
            return Ok(line[..i].to_vec());
        }
        let mut chunk = [0u8; 4096];
        let got = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if got == 0 {
            return Err("EOF inside a chunk line".into());
        }
        buf.extend_from_slice(&chunk[..got]);
    }
}

/// A strict reading of one head: request line, fields, and the body's framing.
fn parse_head(head: &[u8]) -> Result<(Seen, Framing), String> {
    let text = std::str::from_utf8(head).map_err(|_| "head is not UTF-8".to_string())?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or("");
    let parts: Vec<&str> = line.split(' ').collect();
    if parts.len() != 3 || !parts[2].starts_with("HTTP/1.") || parts[0].is_empty() {
        return Err(format!("bad request line {line:?}"));
    }
    let (mut host, mut cl, mut chunked) = (None, None, false);
    for l in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = l.split_once(':') else {
            return Err(format!("bad field line {l:?}"));
        };
        if name.contains(' ') || l.starts_with(' ') || l.starts_with('\t') {
            return Err(format!("bad field line {l:?}"));
        }
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "host" if host.is_some() => return Err("two Host fields".into()),
            "host" => host = Some(value.to_string()),
            "content-length" if cl.is_some() => return Err("two Content-Length fields".into()),
            "content-length" => {
                cl = Some(value.parse::<usize>().map_err(|_| "bad Content-Length")?)
            }
            "transfer-encoding" if value.eq_ignore_ascii_case("chunked") => chunked = true,
            "transfer-encoding" => return Err(format!("Transfer-Encoding {value:?}")),
            _ => {}
        }
    }
    if chunked && cl.is_some() {
        return Err("both Content-Length and Transfer-Encoding".into());
    }
    let framing = if chunked {
        Framing::Chunked
    } else {
        Framing::Length(cl.unwrap_or(0))
    };
    Ok((
        Seen {
            method: parts[0].to_string(),
            target: parts[1].to_string(),
            host: host.unwrap_or_default(),
            body: Vec::new(),
        },
        framing,
    ))
}

enum Framing {
    Length(usize),
    Chunked,
}

async fn read_body(s: &mut TcpStream, buf: &mut Vec<u8>, f: &Framing) -> Result<Vec<u8>, String> {
    match f {
        Framing::Length(n) => read_exact_buffered(s, buf, *n).await,
        Framing::Chunked => {
            let mut body = Vec::new();
            loop {
                let line = read_line(s, buf).await?;
                let size = usize::from_str_radix(
                    std::str::from_utf8(&line).map_err(|_| "chunk size")?.trim(),
                    16,
                )
                .map_err(|_| format!("bad chunk size {:?}", String::from_utf8_lossy(&line)))?;
                if size == 0 {
                    let end = read_line(s, buf).await?;
                    if !end.is_empty() {
                        return Err("trailers are not expected".into());
                    }
                    return Ok(body);
                }
                body.extend(read_exact_buffered(s, buf, size).await?);
                if !read_line(s, buf).await?.is_empty() {
                    return Err("chunk not followed by CRLF".into());
                }
            }
        }
    }
}

fn response_for(seen: &Seen) -> Vec<u8> {
    if seen.method == "CONNECT" {
        return b"HTTP/1.1 200 Connection established\r\n\r\n".to_vec();
    }
    let body = format!("this is {}", seen.target);
    let body = if seen.method == "HEAD" {
        String::new()
    } else {
        body
    };
    format!(
        "HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: {}\r\n\r\n{body}",
        format!("this is {}", seen.target).len()
    )
    .into_bytes()
}

async fn serve_wire(mut s: TcpStream, wire: Arc<Wire>, answer: Answer) {
    let mut buf = Vec::new();
    loop {
        let head = match read_head(&mut s, &mut buf).await {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(e) => {
                wire.desync.lock().unwrap().push(e);
                return;
            }
        };
        let (mut seen, framing) = match parse_head(&head) {
            Ok(p) => p,
            Err(e) => {
                wire.desync
                    .lock()
                    .unwrap()
                    .push(format!("{e}: {:?}", String::from_utf8_lossy(&head)));
                let _ = s
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                return;
            }
        };
        if answer == Answer::Early && s.write_all(&response_for(&seen)).await.is_err() {
            return;
        }
        match read_body(&mut s, &mut buf, &framing).await {
            Ok(b) => seen.body = b,
            Err(e) => {
                wire.desync.lock().unwrap().push(e);
                return;
            }
        }
        let connect = seen.method == "CONNECT";
        wire.seen.lock().unwrap().push(seen.clone());
        if answer == Answer::AfterBody && s.write_all(&response_for(&seen)).await.is_err() {
            return;
        }
        if connect {
            // A forward proxy's tunnel: echo what comes.
            let (mut r, mut w) = s.split();
            let _ = w.write_all(&buf).await;
            let _ = tokio::io::copy(&mut r, &mut w).await;
            return;
        }
    }
}

async fn setup(answer: Answer) -> (Arc<Wire>, SocketAddr) {
    let wire = Arc::new(Wire::default());
    let ol = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin_addr = ol.local_addr().unwrap();
    let w = wire.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = ol.accept().await {
            tokio::spawn(serve_wire(s, w.clone(), answer));
        }
    });
    let cfg = HttpConfig {
        // Short enough that a connection waiting on a body nobody sends fails the test quickly.
        response_timeout_ms: crate::config::Millis(3_000),
        lock_wait_ms: crate::config::Millis(3_000),
        ..HttpConfig::default()
    };
    let rules = crate::rules::Rules::from_set(RuleSet::parse("", "test").unwrap());
    let mut registry = prometheus_client::registry::Registry::default();
    let proxy = proxy_with_storage(
        &cfg,
        Some(MemoryStorage::new(16 << 20)),
        rules,
        crate::origins::Origins::unregistered(&crate::config::OriginsConfig::default()),
        &mut registry,
        Vec::new(),
    );
    let pl = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = pl.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, peer)) = pl.accept().await {
            tokio::spawn(proxy.clone().serve(
                s,
                Conn {
                    scheme: Scheme::Http,
                    client: ClientAddr(peer),
                    orig_dst: OrigDstAddr(origin_addr),
                },
                ClientProtocol::Http1,
            ));
        }
    });
    (wire, proxy_addr)
}

/// Send raw bytes on a new connection and read what comes back until the proxy closes or
/// goes quiet for a moment.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_millis(1500), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: origin.test\r\nConnection: close\r\n\r\n").into_bytes()
}

/// The 30-byte body of the smuggling probes: a whole request for `/evil`.
const SMUGGLED: &[u8] = b"GET /evil HTTP/1.1\r\nX: y\r\n\r\n\r\n";

#[tokio::test]
async fn get_and_head_with_a_body_keep_their_body_and_are_never_cached() {
    assert_eq!(SMUGGLED.len(), 30);
    for answer in [Answer::Early, Answer::AfterBody] {
        let (wire, proxy) = setup(answer).await;
        for method in ["GET", "HEAD"] {
            let mut req = format!(
                "{method} /victim HTTP/1.1\r\nHost: origin.test\r\nConnection: close\r\nContent-Length: 30\r\n\r\n"
            )
            .into_bytes();
            req.extend_from_slice(SMUGGLED);
            let out = raw(proxy, &req).await;
            assert!(out.starts_with("HTTP/1.1 200"), "{method}: {out}");
            assert!(!out.contains("x-cache-status: hit"), "{method}: {out}");
            // The next client on the (pooled) origin connection gets its own answer.
            let next = raw(proxy, &get("/next")).await;
            assert!(next.contains("this is /next"), "{method}: {next}");
        }
        // Nothing was stored under /victim: a plain GET is a miss, then a hit.
        let first = raw(proxy, &get("/victim")).await;
        assert!(first.contains("x-cache-status: miss"), "{first}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let second = raw(proxy, &get("/victim")).await;
        assert!(second.contains("x-cache-status: hit"), "{second}");
        assert!(second.contains("this is /victim"), "{second}");
        assert_eq!(wire.desyncs(), Vec::<String>::new());
        let seen = wire.seen();
        assert!(!wire.targets().contains(&"/evil".to_string()), "{seen:?}");
        let bodies: Vec<usize> = seen
            .iter()
            .filter(|s| s.target == "/victim")
            .map(|s| s.body.len())
            .collect();
        assert_eq!(
            bodies,
            vec![30, 30, 0],
            "GET and HEAD went with their bodies"
        );
    }
}

#[tokio::test]
async fn expect_100_continue_is_answered_by_the_proxy() {
    let (wire, proxy) = setup(Answer::AfterBody).await;
    // A POST, and a GET that would otherwise take the cache path: both get their 100.
    for (method, path) in [("POST", "/upload"), ("GET", "/query")] {
        let mut s = TcpStream::connect(proxy).await.unwrap();
        s.write_all(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("{method}: no 100 Continue within 5 s"))
            .unwrap();
        let interim = String::from_utf8_lossy(&chunk[..n]).into_owned();
        assert!(interim.starts_with("HTTP/1.1 100"), "{method}: {interim}");
        s.write_all(b"hello").await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        let resp = String::from_utf8_lossy(&chunk[..n]).into_owned();
        assert!(resp.contains(&format!("this is {path}")), "{resp}");
    }
    let seen = wire.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.body == b"hello"), "{seen:?}");
    assert_eq!(wire.desyncs(), Vec::<String>::new());
    // Any other expectation is refused without asking the origin.
    let out = raw(
        proxy,
        b"POST /x HTTP/1.1\r\nHost: origin.test\r\nExpect: tea\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 417"), "{out}");
    assert_eq!(wire.seen().len(), 2);
}

#[tokio::test]
async fn host_rules_are_enforced_and_the_request_line_wins() {
    let (wire, proxy) = setup(Answer::Early).await;
    let two = raw(
        proxy,
        b"GET /a HTTP/1.1\r\nHost: origin.test\r\nHost: other.test\r\n\r\n",
    )
    .await;
    assert!(two.starts_with("HTTP/1.1 400"), "{two}");
    let none = raw(proxy, b"GET /a HTTP/1.1\r\n\r\n").await;
    assert!(none.starts_with("HTTP/1.1 400"), "{none}");
    assert!(wire.seen().is_empty(), "the origin never heard of them");
    let old = raw(proxy, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert!(
        old.contains("this is /old"),
        "HTTP/1.0 may omit Host: {old}"
    );

    // Absolute form naming one host with a Host naming another: the request line wins, for
    // what the origin is told and for the cache key.
    let abs = raw(
        proxy,
        b"GET http://origin.test/page HTTP/1.1\r\nHost: attacker.test\r\n\r\n",
    )
    .await;
    assert!(abs.contains("x-cache-status: miss"), "{abs}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let page = wire
        .seen()
        .into_iter()
        .find(|s| s.target == "/page")
        .unwrap();
    assert_eq!(page.host, "origin.test");
    let again = raw(proxy, &get("/page")).await;
    assert!(again.contains("x-cache-status: hit"), "{again}");
    let other = raw(proxy, b"GET /page HTTP/1.1\r\nHost: attacker.test\r\n\r\n").await;
    assert!(
        other.contains("x-cache-status: miss"),
        "keyed apart: {other}"
    );
    assert_eq!(wire.desyncs(), Vec::<String>::new());
}

#[tokio::test]
async fn conflicting_framing_never_reaches_the_origin() {
    for answer in [Answer::Early, Answer::AfterBody] {
        let (wire, proxy) = setup(answer).await;
        // CL.TE: chunked wins; the bytes after the last chunk are not a request of ours.
        let clte = raw(
            proxy,
            b"POST /clte HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: origin.test\r\n\r\n",
        )
        .await;
        assert!(clte.contains("this is /clte"), "{clte}");
        // TE.CL: the chunked body is what is forwarded, with framing of our own.
        let tecl = raw(
            proxy,
            b"POST /tecl HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
        )
        .await;
        assert!(tecl.contains("this is /tecl"), "{tecl}");
        // Two different lengths, obs-fold: refused by the parser.
        let dup = raw(
            proxy,
            b"POST /dup HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
        )
        .await;
        assert!(dup.starts_with("HTTP/1.1 400"), "{dup}");
        let fold = raw(
            proxy,
            b"GET /fold HTTP/1.1\r\nHost: origin.test\r\nX-A: 1\r\n  folded\r\n\r\n",
        )
        .await;
        assert!(fold.starts_with("HTTP/1.1 400"), "{fold}");
        // Bare LF line ends: normalised, the origin reads a proper request.
        let lf = raw(proxy, b"GET /lf HTTP/1.1\nHost: origin.test\n\n").await;
        assert!(lf.contains("this is /lf"), "{lf}");
        // A bad chunk size is the client's fault: 400, not 502.
        let bad = raw(
            proxy,
            b"POST /badchunk HTTP/1.1\r\nHost: origin.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        )
        .await;
        if answer == Answer::AfterBody {
            assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
        } else {
            // An origin that answered before the body arrived has its answer relayed; the
            // rest of the exchange is aborted on both sides.
            assert!(!bad.starts_with("HTTP/1.1 502"), "{bad}");
        }
        let next = raw(proxy, &get("/after")).await;
        assert!(next.contains("this is /after"), "{next}");
        let targets = wire.targets();
        assert!(!targets.contains(&"/smuggled".to_string()), "{targets:?}");
        assert!(!targets.contains(&"/dup".to_string()), "{targets:?}");
        assert!(!targets.contains(&"/fold".to_string()), "{targets:?}");
        let tecl = wire
            .seen()
            .into_iter()
            .find(|s| s.target == "/tecl")
            .unwrap();
        assert_eq!(tecl.body, b"SMUGGLED");
        let clte = wire
            .seen()
            .into_iter()
            .find(|s| s.target == "/clte")
            .unwrap();
        assert!(clte.body.is_empty());
        // The origin never saw bytes it could not read as requests — except the half-sent
        // chunked body of /badchunk, which the proxy aborted (and which went nowhere else).
        let desyncs: Vec<String> = wire
            .desyncs()
            .into_iter()
            .filter(|d| !d.contains("EOF"))
            .collect();
        assert_eq!(desyncs, Vec::<String>::new());
    }
}

#[tokio::test]
async fn connect_opens_a_tunnel_of_its_own() {
    let (wire, proxy) = setup(Answer::AfterBody).await;
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(b"CONNECT upstream.test:443 HTTP/1.1\r\nHost: upstream.test:443\r\n\r\n")
        .await
        .unwrap();
    let mut chunk = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&chunk[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s.write_all(b"ping through the tunnel").await.unwrap();
    let mut echoed = Vec::new();
    while echoed.len() < 23 {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "tunnel closed early");
        echoed.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(echoed, b"ping through the tunnel");
    let seen = wire.seen();
    assert_eq!(seen[0].method, "CONNECT");
    assert_eq!(seen[0].target, "upstream.test:443");
    // Ordinary requests still work, on connections of their own.
    let next = raw(proxy, &get("/after")).await;
    assert!(next.contains("this is /after"), "{next}");
    assert_eq!(wire.desyncs(), Vec::<String>::new());
}
