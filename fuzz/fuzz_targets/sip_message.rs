//! SIP parsing must turn any bytes into a message or an error, never a panic: the parser
//! (rsip with compact-form normalisation and the scan fallback), TCP framing, and the body
//! replacement anchoring uses.
#![no_main]
use libfuzzer_sys::fuzz_target;
use velocache::sip::message;

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
});
