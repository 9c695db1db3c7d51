//! DNS: client queries against hickory-proto, upstream answers rendered for clients.

use hickory_proto::op::Message;
use std::sync::{Arc, Weak};
use velocache::dns::{
    cache::{CachedAnswer, TtlMode, TtlPolicy},
    wire::{self, QueryView},
};

/// DNS queries from clients: the fast path (`QueryView::parse`) and the slow path
/// (`classify`) never panic, and whatever the fast path accepts hickory-proto accepts too,
/// with the same question.
pub fn dns_query(data: &[u8]) {
    let slow = wire::classify(data);
    let _ = wire::bare_error(data, wire::rcode::FORMERR);
    let Ok(q) = QueryView::parse(data) else {
        return;
    };
    let m = match Message::from_vec(data) {
        Ok(m) => m,
        Err(e) => panic!("fast path accepted what hickory rejects ({e}); slow path said {slow:?}"),
    };
    assert_eq!(m.queries.len(), 1);
    let hq = &m.queries[0];
    assert_eq!(u16::from(hq.query_type()), q.qtype);
    assert_eq!(u16::from(hq.query_class()), q.qclass);
    assert!(
        hq.name()
            .to_ascii()
            .eq_ignore_ascii_case(&wire::name_text(data, wire::HEADER_LEN)),
        "names differ"
    );
    assert_eq!(m.edns.is_some(), q.edns.is_some());
    if let (Some(e), Some(h)) = (q.edns, m.edns.as_ref()) {
        assert_eq!(e.dnssec_ok, h.flags().dnssec_ok);
    }
    // Replies built for it parse.
    let reply = wire::reply(data, &q, wire::rcode::SERVFAIL, |_| 0);
    Message::from_vec(&reply).expect("our SERVFAIL parses");
    let tc = wire::truncated(data, &q, 0);
    Message::from_vec(&tc).expect("our TC reply parses");
}

/// Upstream answers: scanning never panics, and for whatever scans, building a cache entry and
/// rendering it for a client (ID, flags, question spelling, TTLs, OPT removal or addition,
/// truncation) never panics, patches the ID, and respects the client's size limit.
pub fn dns_answer_patch(data: &[u8]) {
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
            assert!(
                out.len() <= max.max(query.len() + 11),
                "{} > {max}",
                out.len()
            );
            assert_eq!(&out[..2], &[0x12, 0x34]);
            assert_ne!(wire::get16(&out, 2) & wire::FLAG_QR, 0);
        }
    }
}
