//! Decoding the records of the `TLS_EVENTS` ring buffer (pure, no kernel needed).
//!
//! A record is a `TlsEventHead` (an end event) or a whole `TlsEvent` (a hello event), laid out
//! as `velocache_common::tls` declares them; fields are read at their `offset_of!` positions in
//! native byte order, so no unsafe cast is needed and a short record is an error, not a panic.
use std::{
    mem::offset_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use velocache_common::tls::{
    ALPN_MAX, EVENT_END, EVENT_HELLO, FAMILY_V4, ObservedFlow, SNI_MAX, TlsEvent, TlsEventHead,
    TlsFlowKey,
};

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// What one segment of a ClientHello said.
    Hello(Hello),
    /// The flow ended (FIN both ways, a RST, a reused tuple).
    End {
        /// The flow.
        key: TlsFlowKey,
        /// Its entry when the event was sent.
        flow: ObservedFlow,
        /// `END_*`.
        status: u32,
    },
}

/// A hello event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The flow.
    pub key: TlsFlowKey,
    /// Its entry when the event was sent.
    pub flow: ObservedFlow,
    /// `HELLO_*`.
    pub status: u32,
    /// The earliest rule the kernel's SNI policy matched (`NO_RULE`: none).
    pub policy_rule: u32,
    /// Its `SNI_*` action.
    pub policy_action: u32,
    /// The server name, if this segment carried it.
    pub sni: Option<String>,
    /// The ALPN protocols offered, if this segment carried them.
    pub alpn: Vec<String>,
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the record's kind needs.
    #[error("a TLS event of {len} bytes is too short for its kind {kind}")]
    Short {
        /// Bytes received.
        len: usize,
        /// Kind read (0 when not even that was there).
        kind: u32,
    },
    /// An unknown kind (an object and a daemon from different builds).
    #[error("unknown TLS event kind {0}")]
    Kind(u32),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}

fn bytes16(b: &[u8], at: usize) -> [u8; 16] {
    b.get(at..at + 16)
        .and_then(|s| s.try_into().ok())
        .unwrap_or([0; 16])
}

fn key_at(b: &[u8], at: usize) -> TlsFlowKey {
    let port = |o: usize| {
        b.get(at + o..at + o + 2)
            .and_then(|s| s.try_into().ok())
            .map_or(0, u16::from_ne_bytes)
    };
    TlsFlowKey {
        client: bytes16(b, at + offset_of!(TlsFlowKey, client)),
        server: bytes16(b, at + offset_of!(TlsFlowKey, server)),
        client_port_be: port(offset_of!(TlsFlowKey, client_port_be)),
        server_port_be: port(offset_of!(TlsFlowKey, server_port_be)),
        family: u32_at(b, at + offset_of!(TlsFlowKey, family)),
    }
}

fn flow_at(b: &[u8], at: usize) -> ObservedFlow {
    macro_rules! f {
        (u64 $f:ident) => {
            u64_at(b, at + offset_of!(ObservedFlow, $f))
        };
        (u32 $f:ident) => {
            u32_at(b, at + offset_of!(ObservedFlow, $f))
        };
    }
    ObservedFlow {
        bytes_up: f!(u64 bytes_up),
        bytes_down: f!(u64 bytes_down),
        packets_up: f!(u64 packets_up),
        packets_down: f!(u64 packets_down),
        started_ns: f!(u64 started_ns),
        last_ns: f!(u64 last_ns),
        syn_seq: f!(u32 syn_seq),
        up_flags: f!(u32 up_flags),
        down_flags: f!(u32 down_flags),
        hello_state: f!(u32 hello_state),
        hello_pos: f!(u32 hello_pos),
        hello_ext_end: f!(u32 hello_ext_end),
    }
}

/// Decode one record.
pub fn decode(b: &[u8]) -> Result<Event, DecodeError> {
    let head_len = size_of::<TlsEventHead>();
    if b.len() < head_len {
        return Err(DecodeError::Short {
            len: b.len(),
            kind: u32_at(b, 0),
        });
    }
    let kind = u32_at(b, offset_of!(TlsEventHead, kind));
    let status = u32_at(b, offset_of!(TlsEventHead, status));
    let key = key_at(b, offset_of!(TlsEventHead, key));
    let flow = flow_at(b, offset_of!(TlsEventHead, flow));
    match kind {
        EVENT_END => Ok(Event::End { key, flow, status }),
        EVENT_HELLO => {
            if b.len() < size_of::<TlsEvent>() {
                return Err(DecodeError::Short { len: b.len(), kind });
            }
            let sni_len = (u32_at(b, offset_of!(TlsEvent, sni_len)) as usize).min(SNI_MAX);
            let alpn_len = (u32_at(b, offset_of!(TlsEvent, alpn_len)) as usize).min(ALPN_MAX);
            // Right-aligned: the name ends at the array's end.
            let sni_at = offset_of!(TlsEvent, sni) + (SNI_MAX + 1 - sni_len);
            let alpn_at = offset_of!(TlsEvent, alpn);
            let sni = (sni_len > 0).then(|| {
                String::from_utf8_lossy(b.get(sni_at..sni_at + sni_len).unwrap_or_default())
                    .into_owned()
            });
            Ok(Event::Hello(Hello {
                key,
                flow,
                status,
                policy_rule: u32_at(b, offset_of!(TlsEvent, policy_rule)),
                policy_action: u32_at(b, offset_of!(TlsEvent, policy_action)),
                sni,
                alpn: alpn_names(b.get(alpn_at..alpn_at + alpn_len).unwrap_or_default()),
            }))
        }
        other => Err(DecodeError::Kind(other)),
    }
}

/// The names of a wire-format ALPN list (each one length-prefixed); a name cut off at the end
/// of a shortened list is dropped.
pub fn alpn_names(mut wire: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = wire.split_first() {
        let len = usize::from(len);
        let Some(name) = rest.get(..len) else { break };
        out.push(String::from_utf8_lossy(name).into_owned());
        wire = &rest[len..];
    }
    out
}

/// The client's and the server's socket addresses of a flow.
pub fn endpoints(key: &TlsFlowKey) -> (SocketAddr, SocketAddr) {
    let addr = |a: &[u8; 16]| -> IpAddr {
        if key.family == FAMILY_V4 {
            IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(*a))
        }
    };
    (
        SocketAddr::new(addr(&key.client), u16::from_be(key.client_port_be)),
        SocketAddr::new(addr(&key.server), u16::from_be(key.server_port_be)),
    )
}

#[cfg(test)]
mod tests {
    use velocache_common::tls::{END_FIN, HELLO_PARSED, NO_RULE, SNI_PASS};

    use super::*;

    fn key() -> TlsFlowKey {
        let mut k = TlsFlowKey {
            family: FAMILY_V4,
            client_port_be: 40000u16.to_be(),
            server_port_be: 443u16.to_be(),
            ..TlsFlowKey::default()
        };
        k.client[..4].copy_from_slice(&[10, 77, 1, 2]);
        k.server[..4].copy_from_slice(&[10, 77, 2, 2]);
        k
    }

    /// A record as the kernel writes it: the struct's bytes, field by field.
    fn put(b: &mut [u8], at: usize, v: &[u8]) {
        b[at..at + v.len()].copy_from_slice(v);
    }

    fn head(b: &mut [u8], kind: u32, status: u32, k: &TlsFlowKey, f: &ObservedFlow) {
        put(b, offset_of!(TlsEventHead, kind), &kind.to_ne_bytes());
        put(b, offset_of!(TlsEventHead, status), &status.to_ne_bytes());
        let ka = offset_of!(TlsEventHead, key);
        put(b, ka + offset_of!(TlsFlowKey, client), &k.client);
        put(b, ka + offset_of!(TlsFlowKey, server), &k.server);
        put(
            b,
            ka + offset_of!(TlsFlowKey, client_port_be),
            &k.client_port_be.to_ne_bytes(),
        );
        put(
            b,
            ka + offset_of!(TlsFlowKey, server_port_be),
            &k.server_port_be.to_ne_bytes(),
        );
        put(
            b,
            ka + offset_of!(TlsFlowKey, family),
            &k.family.to_ne_bytes(),
        );
        let fa = offset_of!(TlsEventHead, flow);
        put(
            b,
            fa + offset_of!(ObservedFlow, bytes_up),
            &f.bytes_up.to_ne_bytes(),
        );
        put(
            b,
            fa + offset_of!(ObservedFlow, bytes_down),
            &f.bytes_down.to_ne_bytes(),
        );
        put(
            b,
            fa + offset_of!(ObservedFlow, started_ns),
            &f.started_ns.to_ne_bytes(),
        );
        put(
            b,
            fa + offset_of!(ObservedFlow, up_flags),
            &f.up_flags.to_ne_bytes(),
        );
    }

    #[test]
    fn end_and_hello_records_decode() {
        let flow = ObservedFlow {
            bytes_up: 517,
            bytes_down: 4096,
            started_ns: 77,
            up_flags: 1,
            ..ObservedFlow::default()
        };
        let mut end = vec![0u8; size_of::<TlsEventHead>()];
        head(&mut end, EVENT_END, END_FIN, &key(), &flow);
        assert_eq!(
            decode(&end).unwrap(),
            Event::End {
                key: key(),
                flow,
                status: END_FIN
            }
        );
        let (client, server) = endpoints(&key());
        assert_eq!(client.to_string(), "10.77.1.2:40000");
        assert_eq!(server.to_string(), "10.77.2.2:443");

        let mut hello = vec![0u8; size_of::<TlsEvent>()];
        head(&mut hello, EVENT_HELLO, HELLO_PARSED, &key(), &flow);
        put(
            &mut hello,
            offset_of!(TlsEvent, policy_rule),
            &NO_RULE.to_ne_bytes(),
        );
        put(
            &mut hello,
            offset_of!(TlsEvent, sni_len),
            &10u32.to_ne_bytes(),
        );
        put(
            &mut hello,
            offset_of!(TlsEvent, sni) + 256 - 10,
            b"origin.lab",
        );
        let alpn = b"\x02h2\x08http/1.1";
        put(
            &mut hello,
            offset_of!(TlsEvent, alpn_len),
            &(alpn.len() as u32).to_ne_bytes(),
        );
        put(&mut hello, offset_of!(TlsEvent, alpn), alpn);
        let Event::Hello(h) = decode(&hello).unwrap() else {
            panic!("not a hello")
        };
        assert_eq!(h.sni.as_deref(), Some("origin.lab"));
        assert_eq!(h.alpn, ["h2", "http/1.1"]);
        assert_eq!(
            (h.status, h.policy_rule, h.policy_action),
            (HELLO_PARSED, NO_RULE, SNI_PASS)
        );
        assert_eq!(h.flow, flow);
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        assert!(matches!(decode(&[1, 0, 0]), Err(DecodeError::Short { .. })));
        let mut hello_head = vec![0u8; size_of::<TlsEventHead>()];
        head(
            &mut hello_head,
            EVENT_HELLO,
            0,
            &key(),
            &ObservedFlow::default(),
        );
        assert!(matches!(
            decode(&hello_head),
            Err(DecodeError::Short { kind: 1, .. })
        ));
        let mut odd = vec![0u8; size_of::<TlsEventHead>()];
        head(&mut odd, 9, 0, &key(), &ObservedFlow::default());
        assert_eq!(decode(&odd), Err(DecodeError::Kind(9)));
    }

    #[test]
    fn alpn_lists_cut_short_keep_whole_names() {
        assert_eq!(alpn_names(b"\x02h2\x08http/1"), ["h2"]);
        assert!(alpn_names(b"").is_empty());
        assert_eq!(alpn_names(b"\x00\x02h2"), ["", "h2"]);
    }
}
