//! SIP over TCP: the connection is spliced to the original destination, and each direction is
//! cut into messages (`sip::stream::Deframer`) so the observer sees whole messages.
//!
//! A message is written on as soon as its last byte arrived (what any SIP proxy does). Bytes
//! that are not a message the observer can take — a head with a bad `Content-Length`, what
//! follows it, garbage, a message over 64 KiB — are copied as they are and reported; framing
//! resumes at the next start line, so observation never stops for the rest of the connection
//! and never blocks or alters a stream. What is left when a side closes (a message cut short)
//! is forwarded and reported too. A message the gateway answers itself (an INVITE a plugin
//! rejected) is written back on the connection it came from instead, and not forwarded; each
//! side's writer is shared by the two directions for that, a whole message at a time.
use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    sync::Mutex,
};
use tracing::warn;
use velocache_common::Service;

use super::{
    dialog::Side,
    observer::{Hop, Observer, Relay},
    stream::{Deframer, Piece},
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
    let (cw, uw) = (Mutex::new(cw), Mutex::new(uw));
    let up = pump(cr, &uw, &cw, observer.clone(), hop(Side::Client));
    let down = pump(ur, &cw, &uw, observer, hop(Side::Far));
    let ((to_far, answered_client), (to_client, answered_far)) = tokio::join!(up, down);
    let counts = flow.counts();
    counts.add_up(to_far + answered_far);
    counts.add_down(to_client + answered_client);
}

/// Copy one direction, framing messages for the observer: to `w`, or back on `back` for a
/// message the gateway answered. Returns the bytes written each way.
async fn pump<R, W, B>(
    mut r: R,
    w: &Mutex<W>,
    back: &Mutex<B>,
    observer: Arc<Observer>,
    hop: Hop,
) -> (u64, u64)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    B: AsyncWrite + Unpin,
{
    let mut deframer = Deframer::new();
    let (mut written, mut answered) = (0u64, 0u64);
    loop {
        match r.read_buf(deframer.buffer()).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        while let Some(piece) = deframer.next_piece() {
            let out;
            let bytes = match &piece {
                Piece::Message(msg) => {
                    out = observer.on_message(msg, hop);
                    match &out {
                        Relay::Forward => &msg[..],
                        Relay::Rewritten(b) => &b[..],
                        Relay::Answer(b) => {
                            // The sender's own connection; a failure there is its to notice.
                            if back.lock().await.write_all(b).await.is_ok() {
                                answered += b.len() as u64;
                            }
                            continue;
                        }
                        Relay::Absorb => continue,
                    }
                }
                Piece::Forward(bytes, why) => {
                    observer.on_unobserved(bytes, why, hop);
                    bytes
                }
            };
            if w.lock().await.write_all(bytes).await.is_err() {
                return (written, answered);
            }
            written += bytes.len() as u64;
        }
    }
    // Whatever is left (a message cut short at close) still belongs to the peer, and is
    // reported as what it is.
    if let Some(rest) = deframer.finish() {
        let _ = observer.on_message(&rest, hop);
        if w.lock().await.write_all(&rest).await.is_ok() {
            written += rest.len() as u64;
        }
    }
    let _ = w.lock().await.shutdown().await;
    (written, answered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        rtp::NoMediaPlane,
        sip::{
            Metrics, Settings, SipHook,
            hook::{HookMessage, HookOutcome, HookReject},
            message::tests::rfc4475,
        },
    };

    const OPTIONS: &str = "OPTIONS sip:a@10.77.2.2 SIP/2.0\r\nCall-ID: after@x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

    fn observer(metrics: Metrics) -> Observer {
        Observer::new(
            Settings {
                anchor: false,
                rtp_idle: Duration::from_secs(5),
                setup_timeout: Duration::from_secs(5),
                max_calls: 10,
            },
            Arc::new(NoMediaPlane),
            None,
            metrics,
        )
    }

    fn hop() -> Hop {
        Hop {
            from: Side::Client,
            client: "10.77.1.2:40000".parse().unwrap(),
            far: "10.77.2.2:5060".parse().unwrap(),
            transport: "tcp",
            relay: None,
        }
    }

    /// Rejects every INVITE with 403.
    struct RejectInvites;

    impl SipHook for RejectInvites {
        fn on_message(&self, msg: HookMessage) -> HookOutcome {
            HookOutcome {
                tags: Vec::new(),
                reject: (msg.method.as_deref() == Some("INVITE")).then(|| HookReject {
                    status: 403,
                    reason: "Not here".into(),
                    plugin: "test".into(),
                }),
            }
        }
    }

    #[tokio::test]
    async fn a_rejected_invite_is_answered_on_the_callers_connection_and_never_forwarded() {
        let request = |method: &str| {
            format!(
                "{method} sip:900@10.77.2.2 SIP/2.0\r\nVia: SIP/2.0/TCP 10.77.1.2:40000;branch=z9hG4bK-7\r\n\
                 From: <sip:a@10.77.1.2>;tag=1\r\nTo: <sip:900@10.77.2.2>\r\nCall-ID: tcp@x\r\n\
                 CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
            )
        };
        let mut stream = request("INVITE").into_bytes();
        stream.extend_from_slice(request("ACK").as_bytes());
        stream.extend_from_slice(OPTIONS.as_bytes());
        let observer = Arc::new(observer(Metrics::default()).with_hook(Arc::new(RejectInvites)));
        let out = Mutex::new(Vec::new());
        let back = Mutex::new(Vec::new());
        let (written, answered) = pump(&stream[..], &out, &back, observer, hop()).await;
        assert_eq!(
            out.into_inner(),
            OPTIONS.as_bytes(),
            "only the OPTIONS goes on"
        );
        assert_eq!(written, OPTIONS.len() as u64);
        let back = String::from_utf8(back.into_inner()).unwrap();
        assert!(back.starts_with("SIP/2.0 403 Not here\r\n"), "{back}");
        assert!(back.contains("Via: SIP/2.0/TCP 10.77.1.2:40000;branch=z9hG4bK-7\r\n"));
        assert_eq!(answered, back.len() as u64);
    }

    #[tokio::test]
    async fn observation_goes_on_after_unframable_bytes_and_a_cut_message_is_reported_at_close() {
        let metrics = Metrics::default();
        let observer = Arc::new(observer(metrics.clone()));
        // Conflicting lengths (its body cannot be found), a message, then one whose
        // Content-Length runs past the end of the connection.
        let mut stream = rfc4475("mcl01");
        stream.extend_from_slice(OPTIONS.as_bytes());
        stream.extend_from_slice(&rfc4475("clerr"));
        let hop = hop();
        let out = Mutex::new(Vec::new());
        let back = Mutex::new(tokio::io::sink());
        let (written, answered) = pump(&stream[..], &out, &back, observer, hop).await;
        assert_eq!(out.into_inner(), stream, "every byte forwarded, in order");
        assert_eq!(written, stream.len() as u64);
        assert_eq!(answered, 0);
        assert_eq!(metrics.messages.get(), 1, "the OPTIONS after the bad head");
        assert_eq!(
            metrics.malformed.get(),
            2,
            "mcl01's head (its body with it) and clerr at close"
        );
    }
}
