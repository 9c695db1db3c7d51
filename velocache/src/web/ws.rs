//! The live feed as a WebSocket: one JSON text frame per [`Record`](crate::live::Record).
//!
//! The upgrade is answered by [`upgrade`]; the connection's task then forwards what its
//! [`Subscription`] yields, ten times a second, everything that arrived meanwhile in one write. A browser that reads slowly only slows its own task: the feed drops
//! the oldest records for it and the task sends `{"dropped": n}` (the connection's total) before
//! the next record, so the page can say how many it missed. A connection also gets at most
//! [`MAX_PER_SEC`] records a second — no person reads more, and serialising a gateway's whole
//! request rate for a browser would cost the daemon the CPU the requests need; the rest are
//! counted as dropped the same way. Frames from the browser are read only to notice a close.
use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, handshake::derive_accept_key, protocol::Role},
};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::live::{Dropped, Live, Next};

/// Records one connection is sent per second at most.
pub const MAX_PER_SEC: u32 = 2000;
/// How often a connection's task sends what arrived meanwhile.
const TICK: std::time::Duration = std::time::Duration::from_millis(100);
/// Records sent per tick at most ([`MAX_PER_SEC`] a second).
const PER_TICK: u32 = MAX_PER_SEC / 10;

/// Answer a WebSocket upgrade and start the connection's task.
pub(super) fn upgrade(
    req: Request<hyper::body::Incoming>,
    live: Live,
    cancel: CancellationToken,
) -> Response<Full<Bytes>> {
    let h = req.headers();
    let is_upgrade = h
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = h.get(header::SEC_WEBSOCKET_KEY).cloned();
    let version_ok = h
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let (Some(key), true, true) = (key, is_upgrade, version_ok) else {
        let mut r = Response::new(Full::new(Bytes::from_static(
            b"{\"error\":\"this endpoint is a WebSocket (version 13)\",\"kind\":\"bad_request\"}",
        )));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let accept = derive_accept_key(key.as_bytes());
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                run(ws, live, cancel).await;
            }
            Err(e) => debug!(error = %e, "live WebSocket upgrade failed"),
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let hs = r.headers_mut();
    hs.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    hs.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        hs.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

async fn run<S>(ws: WebSocketStream<S>, live: Live, cancel: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut tx, mut rx) = ws.split();
    let mut sub = live.subscribe();
    // The task wakes on a tick, not per record: at a gateway's request rate, a wake-up per
    // record would cost the daemon a task switch per request even for records it then skips.
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut told = 0u64;
    'conn: loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            incoming = rx.next() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => continue,
            },
            _ = tick.tick() => {}
        }
        // Everything that arrived since the last tick: the first PER_TICK records are sent
        // (one flush for all), the rest are passed over and counted as dropped.
        let mut sent = 0u32;
        let mut wrote = false;
        while let Some(next) = sub.try_next() {
            match next {
                Next::Record(r) if sent < PER_TICK => {
                    sent += 1;
                    let Ok(text) = serde_json::to_string(&*r) else {
                        continue;
                    };
                    if tx.feed(Message::Text(text.into())).await.is_err() {
                        break 'conn;
                    }
                    wrote = true;
                }
                Next::Record(_) => sub.skip(),
                Next::Dropped(_) => {}
                Next::Closed => break 'conn,
            }
        }
        let total = sub.dropped();
        if total != told {
            told = total;
            if let Ok(notice) = serde_json::to_string(&Dropped { dropped: total }) {
                if tx.feed(Message::Text(notice.into())).await.is_err() {
                    break;
                }
                wrote = true;
            }
        }
        if wrote && tx.flush().await.is_err() {
            break;
        }
    }
    let _ = tx.close().await;
    debug!(dropped = sub.dropped(), "live WebSocket closed");
}
