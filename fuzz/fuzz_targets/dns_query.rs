//! DNS queries from clients: the fast path (`QueryView::parse`) and the slow path
//! (`classify`) never panic, and whatever the fast path accepts hickory-proto accepts too,
//! with the same question.
#![no_main]

use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use velocache::dns::wire::{self, QueryView};

fuzz_target!(|data: &[u8]| {
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
        hq.name().to_ascii().eq_ignore_ascii_case(&wire::name_text(data, wire::HEADER_LEN)),
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
});
