//! Upstream answers: scanning never panics, and for whatever scans, building a cache entry and
//! rendering it for a client (ID, flags, question spelling, TTLs, OPT removal or addition,
//! truncation) never panics, patches the ID, and respects the client's size limit.
#![no_main]

use std::sync::{Arc, Weak};

use libfuzzer_sys::fuzz_target;
use velocache::dns::{
    cache::{CachedAnswer, TtlMode, TtlPolicy},
    wire::{self, QueryView},
};

fuzz_target!(|data: &[u8]| {
    let Ok(layout) = wire::scan_answer(data) else {
        return;
    };
    let policy = TtlPolicy {
        min_ttl: 5,
        max_ttl: 3600,
        max_negative_ttl: 300,
    };
    let override_ttl = data.last().map(|b| u32::from(*b)).filter(|t| t % 3 == 0);
    let entry = CachedAnswer::from_upstream(
        data.to_vec(),
        &layout,
        &policy,
        override_ttl,
        Arc::from("fuzz"),
        Weak::new(),
    );
    // A client query with the answer's question (when it is uncompressed), with and without
    // EDNS.
    let Some(question) = data.get(wire::HEADER_LEN..wire::HEADER_LEN + layout.qname_len + 4) else {
        return;
    };
    for edns in [false, true] {
        let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)];
        query.extend_from_slice(question);
        if edns {
            query.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0x80, 0, 0, 0]);
        }
        let Ok(q) = QueryView::parse(&query) else {
            return;
        };
        for (mode, max) in [
            (TtlMode::Age(0), 512),
            (TtlMode::Age(7), 1232),
            (TtlMode::Fixed(30), 65_535),
        ] {
            let out = entry.render(&query, &q, mode, max);
            assert!(out.len() <= max.max(query.len() + 11), "{} > {max}", out.len());
            assert_eq!(&out[..2], &[0x12, 0x34]);
            assert_ne!(wire::get16(&out, 2) & wire::FLAG_QR, 0);
        }
    }
});
