//! The whole observation pipeline (parse, log, call state machine, media planning) fed a
//! sequence of messages from both sides: no input may panic it.
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use velocache::{
    rtp::NoMediaPlane,
    sip::{Hop, Metrics, Observer, Settings, dialog::Side},
};

fuzz_target!(|data: &[u8]| {
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
    );
    // Messages are separated by 0xff bytes; the byte after a separator picks the side.
    for (i, chunk) in data.split(|b| *b == 0xff).enumerate() {
        let from = if chunk.first().is_some_and(|b| b & 1 == 1) || i % 2 == 1 {
            Side::Far
        } else {
            Side::Client
        };
        let hop = Hop {
            from,
            client: "10.0.0.2:5060".parse().expect("literal address"),
            far: "192.0.2.2:5060".parse().expect("literal address"),
            transport: "udp",
            relay: Some("192.0.2.1:40000".parse().expect("literal address")),
        };
        let _ = observer.on_message(chunk, hop);
    }
    observer.tick();
});
