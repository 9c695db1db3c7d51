//! The records of the TLS observation ring buffer (`observe::events::decode`) and the ALPN
//! lists inside them never panic the daemon, whatever their bytes: a record is kernel memory
//! the daemon reads at fixed offsets, and an object from another build (or a bug) must give an
//! error, not a crash. What decodes keeps its bounds: a name of at most 255 bytes, ALPN names
//! that fit in the 64-byte list they came from.
#![no_main]
use libfuzzer_sys::fuzz_target;
use velocache::observe::events::{Event, alpn_names, decode};

fuzz_target!(|data: &[u8]| {
    for name in alpn_names(data) {
        assert!(name.len() < 256);
    }
    if let Ok(Event::Hello(h)) = decode(data) {
        assert!(h.sni.as_ref().is_none_or(|s| !s.is_empty() && s.len() <= 255 * 3));
        assert!(h.alpn.iter().map(|a| a.len() + 1).sum::<usize>() <= 64);
    }
});
