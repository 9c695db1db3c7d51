//! The dashboard's listener end to end in one process: a real control plane, the real listener
//! on a loopback port, raw HTTP/1.1 and a real WebSocket client.
use std::net::SocketAddr;

use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::{
    admin::AdminHub,
    live::{Live, Record, kind},
    rules::Rules,
};

const ADMIN: &str = "admin-token-0123456789abcdef";
const READONLY: &str = "readonly-token-0123456789abcdef";

struct Running {
    addr: SocketAddr,
    live: Live,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("admin.token");
    let readonly = dir.path().join("readonly.token");
    std::fs::write(&admin, ADMIN).unwrap();
    std::fs::write(&readonly, format!("{READONLY}\n")).unwrap();
    let hub = AdminHub::new();
    let live = Live::unregistered(100);
    hub.enable_live(live.clone());
    let served = crate::control::tests::serve(
        dir.path(),
        &format!(
            "[admin]\nweb_listen = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n\
             readonly_token_file = \"{}\"\n",
            admin.display(),
            readonly.display(),
        ),
        Rules::empty(),
        hub,
        |_| {},
    )
    .await;
    let (plane, config, cancel) = (served.plane, served.config, served.cancel);
    let web = WebServer::bind(&config).await.unwrap().unwrap();
    let addr = web.local_addr().unwrap();
    tokio::spawn(web.serve(plane, cancel.clone()));
    Running {
        addr,
        live,
        cancel,
        _dir: dir,
    }
}

struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// Log in: (cookie header value, csrf token).
async fn login(addr: SocketAddr, token: &str) -> (String, String) {
    let a = send(
        addr,
        "POST",
        "/web/login",
        &[],
        &format!("{{\"token\":\"{token}\"}}"),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let cookie = a.header("set-cookie").unwrap();
    let pair = cookie.split(';').next().unwrap().to_string();
    (pair, a.json()["csrf"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn logins_set_a_strict_http_only_cookie_and_wrong_tokens_are_refused() {
    let r = start().await;
    let bad = send(r.addr, "POST", "/web/login", &[], "{\"token\":\"nope\"}").await;
    assert_eq!(bad.status, 401);
    assert!(bad.header("set-cookie").is_none());
    let a = send(
        r.addr,
        "POST",
        "/web/login",
        &[],
        &format!("{{\"token\":\"{ADMIN}\"}}"),
    )
    .await;
    assert_eq!(a.status, 200);
    let cookie = a.header("set-cookie").unwrap();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert_eq!(a.json()["role"], "admin");
    let (cookie, _) = login(r.addr, READONLY).await;
    let s = send(r.addr, "GET", "/web/session", &[("Cookie", &cookie)], "").await;
    assert_eq!(s.json()["role"], "readonly");
    r.cancel.cancel();
}

#[tokio::test]
async fn the_api_needs_a_session_and_changes_need_the_csrf_token() {
    let r = start().await;
    assert_eq!(send(r.addr, "GET", "/v1/status", &[], "").await.status, 401);
    let (cookie, csrf) = login(r.addr, ADMIN).await;
    let status = send(r.addr, "GET", "/v1/status", &[("Cookie", &cookie)], "").await;
    assert_eq!(status.status, 200, "{}", status.body);
    let no_csrf = send(
        r.addr,
        "POST",
        "/v1/rules/reload",
        &[("Cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(no_csrf.status, 403);
    assert_eq!(no_csrf.json()["kind"], "forbidden");
    let with = send(
        r.addr,
        "POST",
        "/v1/rules/reload",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        "",
    )
    .await;
    assert_eq!(with.status, 200, "{}", with.body);
    let cross = send(
        r.addr,
        "POST",
        "/v1/rules/reload",
        &[
            ("Cookie", &cookie),
            ("X-CSRF-Token", &csrf),
            ("Origin", "http://evil.example"),
        ],
        "",
    )
    .await;
    assert_eq!(cross.status, 403);
    let out = send(
        r.addr,
        "POST",
        "/web/logout",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        "",
    )
    .await;
    assert_eq!(out.status, 200);
    assert_eq!(
        send(r.addr, "GET", "/v1/status", &[("Cookie", &cookie)], "")
            .await
            .status,
        401
    );
    r.cancel.cancel();
}

#[tokio::test]
async fn a_read_only_login_reads_but_the_api_refuses_its_changes() {
    let r = start().await;
    let (cookie, csrf) = login(r.addr, READONLY).await;
    let h = [("Cookie", cookie.as_str()), ("X-CSRF-Token", csrf.as_str())];
    assert_eq!(send(r.addr, "GET", "/v1/rules", &h, "").await.status, 200);
    let reload = send(r.addr, "POST", "/v1/rules/reload", &h, "").await;
    assert_eq!(reload.status, 403);
    assert_eq!(reload.json()["kind"], "forbidden");
    assert_eq!(send(r.addr, "POST", "/v1/reload", &h, "").await.status, 403);
    let purge = send(r.addr, "POST", "/v1/cache/purge", &h, "{\"pattern\":\"*\"}").await;
    assert_eq!(purge.status, 403);
    // Reading the cache is allowed (no cache in this daemon: not available, not forbidden).
    let list = send(r.addr, "POST", "/v1/cache/list", &h, "{\"limit\":10}").await;
    assert_eq!(list.status, 503, "{}", list.body);
    r.cancel.cancel();
}

#[tokio::test]
async fn the_page_is_served_with_a_policy_that_allows_nothing_from_elsewhere() {
    let r = start().await;
    let page = send(r.addr, "GET", "/", &[], "").await;
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(send(r.addr, "GET", "/nope.js", &[], "").await.status, 404);
    r.cancel.cancel();
}

#[test]
fn the_page_loads_nothing_from_another_site() {
    for (path, _, body) in assets::ASSETS {
        let text = String::from_utf8_lossy(body);
        for bad in ["http://", "https://", "//cdn", "@import url("] {
            assert!(
                !text.contains(bad)
                    || text.contains("http://www.w3.org/2000/svg") && bad == "http://",
                "{path} mentions {bad}"
            );
        }
    }
}

#[tokio::test]
async fn the_websocket_streams_records_as_they_are_published() {
    let r = start().await;
    let (cookie, _) = login(r.addr, ADMIN).await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/v1/live/ws", r.addr),
    )
    .unwrap();
    req.headers_mut()
        .insert("cookie", http::HeaderValue::from_str(&cookie).unwrap());
    let stream = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    assert_eq!(resp.status(), 101);
    // The subscription starts with the upgrade: wait until the server side has it.
    for _ in 0..100 {
        if r.live.history(0).subscribers > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    r.live.publish(Record {
        service: kind::HTTP.into(),
        host: "a.lab".into(),
        what: "GET /x".into(),
        ..Record::default()
    });
    let msg = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
    assert_eq!(v["host"], "a.lab");
    assert_eq!(v["seq"], 1);
    r.cancel.cancel();
}

#[tokio::test]
async fn the_websocket_needs_a_session() {
    let r = start().await;
    let a = send(
        r.addr,
        "GET",
        "/v1/live/ws",
        &[
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        "",
    )
    .await;
    assert_eq!(a.status, 401);
    r.cancel.cancel();
}
