use hickory_proto::op::ResponseCode;

use super::*;
use crate::dns::testutil::{a, query, response, soa};

#[test]
fn a_dig_style_query_takes_the_fast_path() {
    let q = query(0x1234, "WwW.Example.org", TYPE_AAAA, Some(true));
    let v = QueryView::parse(&q).unwrap();
    assert_eq!(v.id, 0x1234);
    assert_eq!(v.qtype, TYPE_AAAA);
    assert_eq!(v.qclass, CLASS_IN);
    assert_eq!(v.qname(&q), b"\x03WwW\x07Example\x03org\x00");
    assert!(v.dnssec_ok());
    assert!(!v.checking_disabled());
    assert_eq!(v.max_udp_answer(), 1232);
    assert_eq!(name_text(&q, HEADER_LEN), "WwW.Example.org.");
}

#[test]
fn a_query_without_edns_is_limited_to_512_bytes() {
    let q = query(1, "a.test.lab", TYPE_A, None);
    let v = QueryView::parse(&q).unwrap();
    assert_eq!(v.edns, None);
    assert!(!v.dnssec_ok());
    assert_eq!(v.max_udp_answer(), 512);
}

#[test]
fn shapes_the_fast_path_refuses_are_judged_by_hickory() {
    // Too short, or a response: dropped.
    assert_eq!(classify(&[1, 2, 3]), Classified::Drop);
    let mut resp = query(1, "a.test.lab", TYPE_A, None);
    resp[2] |= 0x80;
    assert!(QueryView::parse(&resp).is_err());
    assert_eq!(classify(&resp), Classified::Drop);
    // NOTIFY: not ours.
    let mut notify = query(1, "a.test.lab", TYPE_SOA, None);
    notify[2] |= 4 << 3;
    assert_eq!(classify(&notify), Classified::Foreign);
    // Garbage after a header: FORMERR.
    let mut garbage = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    garbage.extend_from_slice(&[0x3f, b'x']);
    assert!(matches!(classify(&garbage), Classified::FormErr(_)));
    // Two questions: FORMERR.
    let mut two = query(1, "a.test.lab", TYPE_A, None);
    two[5] = 2;
    let question = two[12..].to_vec();
    two.extend_from_slice(&question);
    assert!(QueryView::parse(&two).is_err());
    assert!(matches!(classify(&two), Classified::FormErr(_)));
}

#[test]
fn client_subnet_queries_are_forwarded_uncached() {
    let mut q = query(7, "cdn.test.lab", TYPE_A, None);
    q[11] = 1;
    // OPT with an ECS option (family 1, source /24, scope 0, 10.0.0).
    q.extend_from_slice(&[
        0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 11, 0, 8, 0, 7, 0, 1, 24, 0, 10, 0, 0,
    ]);
    assert!(QueryView::parse(&q).is_err());
    match classify(&q) {
        Classified::Unusual { qname, qtype } => {
            assert_eq!(qname, "cdn.test.lab.");
            assert_eq!(qtype, TYPE_A);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn formerr_echoes_id_and_opcode() {
    let garbage = [0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x3f];
    let out = bare_error(&garbage, rcode::FORMERR).unwrap();
    assert_eq!(&out[..2], &[0xab, 0xcd]);
    assert_eq!(get16(&out, 2) & 0x000f, 1);
    assert_ne!(get16(&out, 2) & FLAG_QR, 0);
    assert_eq!(bare_error(&[1, 2], rcode::FORMERR), None);
}

#[test]
fn scanning_an_answer_finds_every_ttl_the_opt_and_the_minimum() {
    let q = query(9, "www.test.lab", TYPE_A, Some(false));
    let r = response(
        &q,
        ResponseCode::NoError,
        vec![
            a("www.test.lab.", 300, [10, 0, 0, 1]),
            a("www.test.lab.", 120, [10, 0, 0, 2]),
        ],
        vec![],
    );
    let l = scan_answer(&r).unwrap();
    assert_eq!(l.rcode, rcode::NOERROR);
    assert_eq!(l.answers, 2);
    assert_eq!(l.ttl_offsets.len(), 2);
    assert_eq!(l.min_ttl, Some(120));
    let (s, e) = l.opt.unwrap();
    assert_eq!(usize::from(e), r.len());
    assert_eq!(get16(&r, usize::from(s) + 1), TYPE_OPT);
    for off in &l.ttl_offsets {
        let t = u32::from_be_bytes(
            r[usize::from(*off)..usize::from(*off) + 4]
                .try_into()
                .unwrap(),
        );
        assert!(t == 300 || t == 120);
    }
}

#[test]
fn negative_ttl_is_the_smaller_of_soa_ttl_and_minimum() {
    let q = query(9, "nope.test.lab", TYPE_A, None);
    let r = response(
        &q,
        ResponseCode::NXDomain,
        vec![],
        vec![soa("test.lab.", 300, 5)],
    );
    let l = scan_answer(&r).unwrap();
    assert_eq!(l.rcode, rcode::NXDOMAIN);
    assert_eq!(l.negative_ttl, Some(5));
    let r = response(
        &q,
        ResponseCode::NXDomain,
        vec![],
        vec![soa("test.lab.", 3, 60)],
    );
    assert_eq!(scan_answer(&r).unwrap().negative_ttl, Some(3));
}

#[test]
fn broken_answers_are_refused() {
    let q = query(9, "www.test.lab", TYPE_A, None);
    let r = response(
        &q,
        ResponseCode::NoError,
        vec![a("www.test.lab.", 300, [10, 0, 0, 1])],
        vec![],
    );
    for cut in HEADER_LEN..r.len() {
        assert!(scan_answer(&r[..cut]).is_err(), "cut at {cut}");
    }
    // A compression pointer that points at itself.
    let mut looped = r.clone();
    let at = q.len();
    looped[at] = 0xc0;
    looped[at + 1] = at as u8;
    assert!(scan_answer(&looped).is_err());
}

#[test]
fn replies_must_match_id_and_question() {
    let q = query(0x4242, "www.test.lab", TYPE_A, None);
    let r = response(
        &q,
        ResponseCode::NoError,
        vec![a("www.test.lab.", 300, [10, 0, 0, 1])],
        vec![],
    );
    assert!(answers_query(&q, &r));
    let mut upper = r.clone();
    upper[13] = b'W';
    assert!(answers_query(&q, &upper), "case differs only");
    let mut wrong_id = r.clone();
    wrong_id[1] ^= 1;
    assert!(!answers_query(&q, &wrong_id));
    let other = response(
        &query(0x4242, "www.test.lax", TYPE_A, None),
        ResponseCode::NoError,
        vec![],
        vec![],
    );
    assert!(!answers_query(&q, &other));
    let aaaa = response(
        &query(0x4242, "www.test.lab", TYPE_AAAA, None),
        ResponseCode::NoError,
        vec![],
        vec![],
    );
    assert!(!answers_query(&q, &aaaa));
    assert!(!answers_query(&q, &q), "a query is not an answer");
}

#[test]
fn upstream_queries_carry_do_and_cd_and_parse() {
    let client = query(1, "sig.test.lab", TYPE_A, Some(true));
    let v = QueryView::parse(&client).unwrap();
    let up = upstream_query(v.question(&client), true, true);
    let m = Message::from_vec(&up).unwrap();
    assert!(m.metadata.checking_disabled);
    assert!(m.metadata.recursion_desired);
    assert!(m.edns.as_ref().unwrap().flags().dnssec_ok);
    assert_eq!(m.edns.as_ref().unwrap().max_payload(), EDNS_UDP_SIZE);
    assert!(
        m.edns.as_ref().unwrap().options().as_ref().is_empty(),
        "the client's cookie is not forwarded"
    );
    assert_eq!(m.queries[0].name().to_ascii(), "sig.test.lab.");
}
