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
