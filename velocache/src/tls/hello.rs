//! Reading a client's first flight far enough to know where it wants to go.
//!
//! Bytes are read from the intercepted connection into a buffer and fed to a rustls
//! `Acceptor`, which parses the ClientHello without answering it. The buffer is kept whole: a
//! passthrough replays it byte for byte to the origin, and an interception replays it into a
//! TLS server. Anything that is not a ClientHello — garbage, a server-speaks-first protocol, a
//! client that sends nothing — yields [`Hello::Unparsed`] with whatever bytes arrived, and the
//! caller splices those untouched.
use std::time::Duration;

use rustls::server::Acceptor;
use tokio::{io::AsyncReadExt, net::TcpStream};

/// Largest first flight we buffer. A ClientHello fits in one 16 KiB record; post-quantum key
/// shares make it ~2 KiB. Beyond this we stop parsing and splice.
pub const MAX_HELLO_BYTES: usize = 64 * 1024;

/// What the first flight told us.
#[derive(Debug)]
pub enum Hello {
    /// A complete ClientHello.
    Parsed {
        /// Server Name Indication, if sent.
        sni: Option<String>,
        /// ALPN protocols offered, in order.
        alpn: Vec<Vec<u8>>,
        /// Every byte read so far (the whole ClientHello record(s), maybe more).
        raw: Vec<u8>,
    },
    /// Not a ClientHello (or none within the time limit): the bytes read, and why.
    Unparsed {
        /// Bytes read so far (possibly none).
        raw: Vec<u8>,
        /// Why parsing stopped.
        reason: String,
    },
}

/// Read from `stream` until a ClientHello parses, the data cannot be one, the buffer limit is
/// reached, the peer closes, or `limit` passes.
pub async fn read_client_hello(stream: &mut TcpStream, limit: Duration) -> Hello {
    let mut raw = Vec::with_capacity(2048);
    let mut acceptor = Acceptor::default();
    let deadline = tokio::time::Instant::now() + limit;
    let mut chunk = [0u8; 4096];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => {
                return Hello::Unparsed {
                    raw,
                    reason: "no complete ClientHello before the time limit".into(),
                };
            }
            Ok(Err(e)) => {
                return Hello::Unparsed {
                    raw,
                    reason: format!("read failed: {e}"),
                };
            }
            Ok(Ok(0)) => {
                return Hello::Unparsed {
                    raw,
                    reason: "client closed before a complete ClientHello".into(),
                };
            }
            Ok(Ok(n)) => n,
        };
        raw.extend_from_slice(&chunk[..n]);
        match parse(&mut acceptor, &chunk[..n]) {
            Step::More if raw.len() < MAX_HELLO_BYTES => {}
            Step::More => {
                return Hello::Unparsed {
                    raw,
                    reason: format!("no ClientHello within {MAX_HELLO_BYTES} bytes"),
                };
            }
            Step::Done { sni, alpn } => return Hello::Parsed { sni, alpn, raw },
            Step::NotTls(reason) => return Hello::Unparsed { raw, reason },
        }
    }
}

enum Step {
    More,
    Done {
        sni: Option<String>,
        alpn: Vec<Vec<u8>>,
    },
    NotTls(String),
}

fn parse(acceptor: &mut Acceptor, mut bytes: &[u8]) -> Step {
    while !bytes.is_empty() {
        if let Err(e) = acceptor.read_tls(&mut bytes) {
            return Step::NotTls(format!("not TLS: {e}"));
        }
    }
    match acceptor.accept() {
        Ok(None) => Step::More,
        Ok(Some(accepted)) => {
            let hello = accepted.client_hello();
            Step::Done {
                sni: hello.server_name().map(str::to_ascii_lowercase),
                alpn: hello
                    .alpn()
                    .map(|it| it.map(<[u8]>::to_vec).collect())
                    .unwrap_or_default(),
            }
        }
        Err((e, _alert)) => Step::NotTls(format!("not a valid ClientHello: {e}")),
    }
}

/// Parse a complete first flight held in memory (fuzzing and tests).
pub fn parse_first_flight(bytes: &[u8]) -> Result<(Option<String>, Vec<Vec<u8>>), String> {
    let mut acceptor = Acceptor::default();
    // rustls takes records in pieces; feed in bounded chunks as a socket would.
    for chunk in bytes.chunks(4096) {
        match parse(&mut acceptor, chunk) {
            Step::More => continue,
            Step::Done { sni, alpn } => return Ok((sni, alpn)),
            Step::NotTls(r) => return Err(r),
        }
    }
    Err("incomplete ClientHello".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real ClientHello, produced by rustls's client for `example.lab` with ALPN h2, http/1.1.
    fn client_hello(sni: &str) -> Vec<u8> {
        let mut roots = rustls::RootCertStore::empty();
        let _ = &mut roots;
        let mut cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn sni_and_alpn_come_out_of_a_real_client_hello() {
        let bytes = client_hello("Example.LAB");
        let (sni, alpn) = parse_first_flight(&bytes).unwrap();
        assert_eq!(sni.as_deref(), Some("example.lab"));
        assert_eq!(alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    }

    #[test]
    fn fragments_garbage_and_truncation_are_reported_not_panicked_on() {
        let bytes = client_hello("a.lab");
        // Every truncation is "incomplete", never a panic or a false success.
        for cut in 0..bytes.len() {
            assert!(parse_first_flight(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(parse_first_flight(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_err());
        assert!(parse_first_flight(&[0x16, 3, 1, 0xff, 0xff, 1, 2, 3]).is_err());
    }
}
