//! SIP parsing must turn any bytes into a message or an error, never a panic: the parser
//! (rsip with compact-form normalisation and the scan fallback), TCP framing, and the body
//! replacement and the Via/Contact rewriting anchoring uses.
#![no_main]
use libfuzzer_sys::fuzz_target;
use velocache::sip::{message, nat};

fuzz_target!(|data: &[u8]| {
    let _ = message::parse(data);
    let _ = message::frame(data);
    if let Some(out) = message::with_body(data, b"v=0\r\n") {
        // A rewritten message frames as exactly one message when the original did.
        let _ = message::parse(&out);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = message::normalize_compact(text);
    }
    // Anchoring's Via/Contact rewriting, out and back.
    let relay = "192.0.2.1:40000";
    let (out, orig) = nat::outgoing(data, relay, data.first().is_some_and(|b| *b != b'S'));
    let _ = nat::incoming(out.as_deref().unwrap_or(data), relay, &orig, true);
    let _ = nat::incoming(data, relay, &orig, false);
});
