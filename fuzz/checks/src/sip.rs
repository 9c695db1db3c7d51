//! SIP: messages, the observer, SDP, and SIP over TCP framing.
use std::sync::Arc;

use velocache::{
    rtp::NoMediaPlane,
    sip::{
        Hop, Metrics, Observer, Settings, SipHook,
        dialog::Side,
        hook::{self, HookMessage, HookOutcome, HookReject},
        message, nat,
        sdp::{self as sdp_text, Replacement},
        stream::{Deframer, Frame, Piece, frame},
    },
};

/// SIP parsing turns any bytes into a message or an error: the parser (rsip with unfolding,
/// compact-form normalisation and the scan fallback), TCP framing, the body replacement and
/// the Via/Contact rewriting anchoring uses.
pub fn sip_message(data: &[u8]) {
    let _ = message::parse(data);
    // The gateway's own answer to a request (an INVITE a plugin rejected) is a response our
    // parser reads back.
    if message::parse(data).is_ok()
        && let Some(resp) = hook::response(data, 403, "Blocked")
    {
        let back = message::parse(&resp).expect("the gateway's response parses");
        assert_eq!(back.status(), Some(403));
    }
    let _ = frame(data);
    if let Some(out) = message::with_body(data, b"v=0\r\n") {
        let _ = message::parse(&out);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = message::normalize_compact(&message::unfold(text));
    }
    // Anchoring's Via/Contact rewriting, out and back.
    let relay = "192.0.2.1:40000";
    let (out, orig) = nat::outgoing(data, relay, data.first().is_some_and(|b| *b != b'S'));
    let _ = nat::incoming(out.as_deref().unwrap_or(data), relay, &orig, true);
    let _ = nat::incoming(data, relay, &orig, false);
}

/// A plugin hook that tags every message and rejects INVITEs whose Request-URI has a `9`.
struct Screener;

impl SipHook for Screener {
    fn on_message(&self, msg: HookMessage) -> HookOutcome {
        HookOutcome {
            tags: vec![("seen".into(), msg.headers.len().to_string())],
            reject: msg
                .request_uri
                .as_deref()
                .is_some_and(|u| u.contains('9'))
                .then(|| HookReject {
                    status: 403,
                    reason: "fuzz".into(),
                    plugin: "fuzz".into(),
                }),
        }
    }
}

/// The whole observation pipeline (parse, log, plugin hook, call state machine, media
/// planning) fed a sequence of messages from both sides.
pub fn sip_observer(data: &[u8]) {
    let observer = Observer::new(
        Settings {
            anchor: false,
            rtp_idle: std::time::Duration::from_secs(1),
            setup_timeout: std::time::Duration::from_secs(1),
            max_calls: 16,
        },
        Arc::new(NoMediaPlane),
        None,
        Metrics::default(),
    )
    .with_hook(Arc::new(Screener));
    // Messages are separated by 0xff bytes; the byte after a separator picks the side, and
    // odd ones travel over TCP (another call key for the same Call-ID).
    for (i, chunk) in data.split(|b| *b == 0xff).enumerate() {
        let first = chunk.first().copied().unwrap_or(0);
        let from = if first & 1 == 1 || i % 2 == 1 {
            Side::Far
        } else {
            Side::Client
        };
        let hop = Hop {
            from,
            client: "10.0.0.2:5060".parse().expect("literal address"),
            far: "192.0.2.2:5060".parse().expect("literal address"),
            transport: if first & 2 == 2 { "tcp" } else { "udp" },
            relay: Some("192.0.2.1:40000".parse().expect("literal address")),
        };
        let _ = observer.on_message(chunk, hop);
    }
    observer.tick();
}

/// SDP learning and anchoring rewrites survive any body: parse, rewrite, parse again; a
/// rewrite of what parsed still parses, with the same number of streams.
pub fn sdp(data: &[u8]) {
    let streams = sdp_text::parse(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let with: Vec<Replacement> = match &streams {
        Ok(s) => s
            .iter()
            .map(|m| Replacement {
                index: m.index,
                addr: "192.0.2.1".parse().expect("literal address"),
                port: 30_000,
                rtcp_port: 30_001,
            })
            .collect(),
        Err(_) => vec![Replacement {
            index: 0,
            addr: "2001:db8::1".parse().expect("literal address"),
            port: 1,
            rtcp_port: 1,
        }],
    };
    let out = sdp_text::rewrite(text, &with);
    let again = sdp_text::parse(out.as_bytes());
    if let (Ok(before), Ok(after)) = (&streams, &again) {
        assert_eq!(before.len(), after.len(), "rewriting changed the streams");
    }
}

/// SIP over TCP: the first byte picks a read size, the rest is one direction of a connection.
/// Every byte comes out exactly once and in order, no piece is empty, and every message piece
/// frames as exactly itself.
pub fn sip_tcp_framing(data: &[u8]) {
    let Some((&size, stream)) = data.split_first() else {
        return;
    };
    let chunk = 1 + usize::from(size) * 3;
    let mut deframer = Deframer::new();
    let mut out = Vec::with_capacity(stream.len());
    for c in stream.chunks(chunk) {
        deframer.push(c);
        while let Some(piece) = deframer.next_piece() {
            let bytes = match &piece {
                Piece::Message(m) => {
                    assert_eq!(frame(m), Frame::Message(m.len()), "a message re-frames");
                    let _ = message::parse(m);
                    m
                }
                Piece::Forward(b, _) => b,
            };
            assert!(!bytes.is_empty(), "empty piece");
            out.extend_from_slice(bytes);
        }
    }
    if let Some(rest) = deframer.finish() {
        let _ = message::parse(&rest);
        out.extend_from_slice(&rest);
    }
    assert!(out == stream, "bytes lost, repeated or reordered");
}
