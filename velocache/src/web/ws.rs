//! The live feed as a WebSocket: one JSON text frame per [`Record`](crate::live::Record).
//!
//! The upgrade is answered by [`upgrade`]; ten times a second the connection's task asks its
//! [`Reader`](crate::live::Reader) for what was published meanwhile and sends it in one write.
//! A browser that reads slowly only slows its own task: what it could not take in time is
//! passed over, and the task sends `{"dropped": n}` (the connection's total) with the next
//! write, so the page can say how many it missed. A connection also gets at most [`MAX_PER_SEC`] records a
//! second: no person reads more, and on a gateway's own cores every record a browser parses
//! and draws is CPU the requests do not get (`cargo xtask bench web` measures it); the rest are
//! counted as dropped the same way, and the charts, fed from every record, still count them.
//! Frames from the browser are read only to notice a close.
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

use crate::{
    admin::api::ErrorKind,
    live::{Dropped, Live},
};

/// Records one connection is sent per second at most.
pub const MAX_PER_SEC: u32 = 200;
/// How often a connection's task sends what arrived meanwhile.
const TICK: std::time::Duration = std::time::Duration::from_millis(100);
/// Records sent per tick at most ([`MAX_PER_SEC`] a second).
const PER_TICK: usize = (MAX_PER_SEC / 10) as usize;

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
        return super::error(
            StatusCode::BAD_REQUEST,
            ErrorKind::BadRequest,
            "this endpoint is a WebSocket (version 13)",
        );
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
    let mut reader = live.reader();
    // The task wakes on a tick, not per record, and reads the history from where it left off:
    // at a gateway's request rate the daemon pays nothing per record for a watching browser.
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
        let batch = reader.next_batch(PER_TICK);
        let mut wrote = false;
        let total = reader.dropped();
        if total != told {
            told = total;
            if let Ok(notice) = serde_json::to_string(&Dropped { dropped: total }) {
                if tx.feed(Message::Text(notice.into())).await.is_err() {
                    break;
                }
                wrote = true;
            }
        }
        for r in batch {
            let Ok(text) = serde_json::to_string(&*r) else {
                continue;
            };
            if tx.feed(Message::Text(text.into())).await.is_err() {
                break 'conn;
            }
            wrote = true;
        }
        if wrote && tx.flush().await.is_err() {
            break;
        }
    }
    let _ = tx.close().await;
    debug!(dropped = reader.dropped(), "live WebSocket closed");
}
