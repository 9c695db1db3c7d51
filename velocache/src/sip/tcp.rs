//! SIP over TCP: the connection is spliced to the original destination, and each direction is
//! cut into messages by `Content-Length` so the observer sees whole messages.
//!
//! A message is written on as soon as its last byte arrived (what any SIP proxy does). Bytes
//! that cannot be framed — no `Content-Length`, a message over 64 KiB, not SIP at all — switch
//! that direction to a plain byte copy for the rest of the connection: observation may miss
//! messages, it never blocks or alters a stream it does not understand.
use std::{sync::Arc, time::Duration};

use bytes::BytesMut;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};
use tracing::warn;
use velocache_common::Service;

use super::{
    dialog::Side,
    message::{Frame, frame},
    observer::{Hop, Observer},
};
use crate::{
    flow::{FlowGuard, FlowTracker},
    net::{InterceptedTcp, TcpHandler},
};

/// The TCP side of the SIP service.
pub struct SipTcp {
    observer: Arc<Observer>,
    connect_timeout: Duration,
    flows: FlowTracker,
}

impl SipTcp {
    /// A handler that connects to original destinations within `connect_timeout`.
    pub fn new(observer: Arc<Observer>, connect_timeout: Duration, flows: FlowTracker) -> Self {
        SipTcp {
            observer,
            connect_timeout,
            flows,
        }
    }
}

impl TcpHandler for SipTcp {
    fn on_connection(&self, conn: InterceptedTcp) {
        let flow = self
            .flows
            .open(Service::Sip, conn.client, conn.orig_dst, "tcp");
        let observer = self.observer.clone();
        let timeout = self.connect_timeout;
        tokio::spawn(async move {
            relay(observer, conn, timeout, &flow).await;
        });
    }
}

async fn relay(observer: Arc<Observer>, conn: InterceptedTcp, timeout: Duration, flow: &FlowGuard) {
    let InterceptedTcp {
        stream,
        client,
        orig_dst,
    } = conn;
    let upstream = match tokio::time::timeout(timeout, TcpStream::connect(orig_dst.0)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            warn!(service = "sip", %client, %orig_dst, transport = "tcp", error = %e,
                "connecting to the original destination failed");
            flow.fail(&e);
            return;
        }
        Err(_) => {
            warn!(service = "sip", %client, %orig_dst, transport = "tcp",
                "connecting to the original destination timed out");
            flow.record("error", "connecting to the original destination timed out");
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let relay = upstream.local_addr().ok();
    let (cr, cw) = stream.into_split();
    let (ur, uw) = upstream.into_split();
    let hop = |from| Hop {
        from,
        client: client.0,
        far: orig_dst.0,
        transport: "tcp",
        relay,
    };
    let up = pump(cr, uw, observer.clone(), hop(Side::Client));
    let down = pump(ur, cw, observer, hop(Side::Far));
    let (bytes_up, bytes_down) = tokio::join!(up, down);
    let counts = flow.counts();
    counts.add_up(bytes_up);
    counts.add_down(bytes_down);
}

/// Copy one direction, framing messages for the observer. Returns the bytes written.
async fn pump<R, W>(mut r: R, mut w: W, observer: Arc<Observer>, hop: Hop) -> u64
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut framing = true;
    let mut written = 0u64;
    loop {
        match r.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        while framing && !buf.is_empty() {
            match frame(&buf) {
                Frame::Message(n) => {
                    let msg = buf.split_to(n);
                    let out = observer.on_message(&msg, hop);
                    let bytes = out.as_deref().unwrap_or(&msg);
                    if w.write_all(bytes).await.is_err() {
                        return written;
                    }
                    written += bytes.len() as u64;
                }
                Frame::KeepAlive(n) => {
                    let ka = buf.split_to(n);
                    if w.write_all(&ka).await.is_err() {
                        return written;
                    }
                    written += n as u64;
                }
                Frame::Incomplete => break,
                Frame::Invalid => {
                    warn!(service = "sip", src = %hop.client, dst = %hop.far, side = hop.from.name(),
                        transport = "tcp", "stream cannot be framed as SIP; copied untouched from here on");
                    framing = false;
                }
            }
        }
        if !framing && !buf.is_empty() {
            let chunk = buf.split();
            if w.write_all(&chunk).await.is_err() {
                return written;
            }
            written += chunk.len() as u64;
        }
    }
    // Whatever is left (a truncated message at close) still belongs to the peer.
    if !buf.is_empty() && w.write_all(&buf).await.is_ok() {
        written += buf.len() as u64;
    }
    let _ = w.shutdown().await;
    written
}
