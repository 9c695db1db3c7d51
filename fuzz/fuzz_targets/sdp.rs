//! SDP learning and anchoring rewrites must survive any body: parse, rewrite, parse again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use velocache::sip::sdp::{self, Replacement};

fuzz_target!(|data: &[u8]| {
    let streams = sdp::parse(data);
    if let Ok(text) = std::str::from_utf8(data) {
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
        let out = sdp::rewrite(text, &with);
        let _ = sdp::parse(out.as_bytes());
    }
});
