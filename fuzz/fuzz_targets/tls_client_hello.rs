//! The first flight of an intercepted TCP 443 connection is whatever a client sends: it must
//! parse to an SNI and ALPN list, or to a reason it is not a ClientHello — never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use velocache::tls::parse_first_flight;

fuzz_target!(|data: &[u8]| {
    let whole = parse_first_flight(data);
    if let Ok((sni, alpn)) = &whole {
        if let Some(name) = sni {
            assert!(!name.is_empty());
        }
        assert!(alpn.iter().all(|p| !p.is_empty()));
    }
});
