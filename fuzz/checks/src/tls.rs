//! TLS: the first flight of an intercepted TCP 443 connection.

use velocache::tls::parse_first_flight;

/// A TLS record: handshake content type, legacy version 3.1, length.
fn record(body: &[u8]) -> Vec<u8> {
    let len = body.len().min(0xffff);
    let mut out = vec![0x16, 3, 1, (len >> 8) as u8, len as u8];
    out.extend_from_slice(&body[..len]);
    out
}

/// A ClientHello handshake message (type 1, 24-bit length) around `body`.
fn client_hello(body: &[u8]) -> Vec<u8> {
    let len = body.len().min(0xff_ffff);
    let mut out = vec![1, (len >> 16) as u8, (len >> 8) as u8, len as u8];
    out.extend_from_slice(&body[..len]);
    out
}

/// The first flight of an intercepted TCP 443 connection (`tls::parse_first_flight`, the parser
/// `read_client_hello` runs on every connection) never panics, and what it accepts is usable:
/// a non-empty, lower-case SNI and non-empty ALPN protocol names.
///
/// The first input byte picks a framing, so the fuzzer spends its time inside the ClientHello
/// rather than on record lengths: 0 — the bytes as sent on the wire; 1 — the rest wrapped as
/// the body of one ClientHello handshake message in one record, lengths filled in; 2 — the
/// same message split across two records (a fragmented handshake, as large post-quantum hellos
/// are).
pub fn tls_client_hello(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        let _ = parse_first_flight(data);
        return;
    };
    let wire = match mode % 3 {
        0 => data.to_vec(),
        1 => record(&client_hello(rest)),
        _ => {
            let msg = client_hello(rest);
            let cut = msg.len() / 2;
            let mut out = record(&msg[..cut]);
            out.extend_from_slice(&record(&msg[cut..]));
            out
        }
    };
    if let Ok((sni, alpn)) = parse_first_flight(&wire) {
        if let Some(sni) = sni {
            assert!(!sni.is_empty(), "empty SNI accepted");
            assert_eq!(sni, sni.to_ascii_lowercase(), "SNI not lower-cased");
        }
        assert!(
            alpn.iter().all(|p| !p.is_empty()),
            "empty ALPN protocol name accepted: {alpn:?}"
        );
    }
}

/// A record of the TLS observation ring buffer (`observe::events::decode`) and the ALPN lists
/// inside them never panic the daemon, whatever their bytes: a record is kernel memory the
/// daemon reads at fixed offsets, and an object from another build (or a bug) must give an
/// error, not a crash. What decodes keeps its bounds: a name of at most 255 bytes (3 bytes per
/// byte once made valid UTF-8), ALPN names of at most 255 characters that fit in the 64-byte
/// list they came from (counted in characters: an invalid byte becomes one U+FFFD).
///
/// The first input byte picks a shape, so the fuzzer spends its time inside records rather than
/// on their kind: 0 — the bytes as the ring buffer would hand them; 1 — a hello record of the
/// full size whose fields are the rest; 2 — an end record likewise.
pub fn tls_event(data: &[u8]) {
    use velocache::observe::events::{Event, alpn_names, decode};
    use velocache_common::tls::{EVENT_END, EVENT_HELLO, TlsEvent};
    let record = match data.split_first() {
        Some((&mode, rest)) if mode % 3 != 0 => {
            let kind = if mode % 3 == 1 {
                EVENT_HELLO
            } else {
                EVENT_END
            };
            let mut r = kind.to_ne_bytes().to_vec();
            r.extend_from_slice(rest);
            r.resize(std::mem::size_of::<TlsEvent>(), 0);
            r
        }
        _ => data.to_vec(),
    };
    for name in alpn_names(&record) {
        assert!(
            name.chars().count() < 256,
            "an ALPN name longer than a length byte allows"
        );
    }
    if let Ok(Event::Hello(h)) = decode(&record) {
        assert!(
            h.sni
                .as_ref()
                .is_none_or(|s| !s.is_empty() && s.len() <= 255 * 3),
            "SNI out of bounds: {:?}",
            h.sni
        );
        assert!(
            h.alpn.iter().map(|a| a.chars().count() + 1).sum::<usize>() <= 64,
            "ALPN names beyond their list: {:?}",
            h.alpn
        );
    }
}
