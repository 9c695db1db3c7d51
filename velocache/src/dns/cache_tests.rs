use std::net::Ipv4Addr;

use hickory_proto::op::{Message, ResponseCode};

use super::*;
use crate::dns::{
    testutil::{a, query, response, soa},
    wire::{TYPE_A, scan_answer},
};

const POLICY: TtlPolicy = TtlPolicy {
    min_ttl: 0,
    max_ttl: 86_400,
    max_negative_ttl: 3_600,
};

fn entry_for(answer: Vec<u8>, policy: &TtlPolicy, ttl_override: Option<u32>) -> CachedAnswer {
    let layout = scan_answer(&answer).unwrap();
    CachedAnswer::from_upstream(
        answer,
        &layout,
        policy,
        ttl_override,
        "test".into(),
        Weak::new(),
    )
}

fn ttls(msg: &[u8]) -> Vec<u32> {
    let m = Message::from_vec(msg).unwrap();
    m.answers
        .iter()
        .chain(m.authorities.iter())
        .map(|r| r.ttl)
        .collect()
}

fn upstream_answer(name: &str, do_bit: bool, ttls: &[u32]) -> Vec<u8> {
    let q = query(0x1111, name, TYPE_A, Some(do_bit));
    let records = ttls
        .iter()
        .enumerate()
        .map(|(i, t)| a(name, *t, [10, 0, 0, i as u8 + 1]))
        .collect();
    response(&q, ResponseCode::NoError, records, vec![])
}

#[test]
fn a_hit_gets_the_clients_id_and_ttls_lowered_by_age() {
    let mut e = entry_for(
        upstream_answer("www.test.lab.", false, &[300, 100]),
        &POLICY,
        None,
    );
    assert_eq!(e.cacheability, Cacheability::Positive);
    assert_eq!(e.ttl, 100);
    e.stored_at -= Duration::from_secs(7);
    let client = query(0xbeef, "www.test.lab", TYPE_A, Some(false));
    let q = QueryView::parse(&client).unwrap();
    let out = e.render(&client, &q, TtlMode::Age(e.age(Instant::now())), 1232);
    assert_eq!(&out[..2], &[0xbe, 0xef]);
    assert_eq!(ttls(&out), vec![293, 93]);
    let m = Message::from_vec(&out).unwrap();
    assert_eq!(m.answers.len(), 2);
    assert!(m.edns.is_some(), "an EDNS client gets the OPT");
}

#[test]
fn ttls_are_clamped_or_overridden_when_stored() {
    let policy = TtlPolicy {
        min_ttl: 60,
        max_ttl: 600,
        max_negative_ttl: 300,
    };
    let e = entry_for(
        upstream_answer("c.test.lab.", false, &[5, 3600]),
        &policy,
        None,
    );
    assert_eq!(e.ttl, 60);
    let client = query(1, "c.test.lab", TYPE_A, None);
    let q = QueryView::parse(&client).unwrap();
    assert_eq!(
        ttls(&e.render(&client, &q, TtlMode::Age(0), 512)),
        vec![60, 600]
    );
    let e = entry_for(
        upstream_answer("c.test.lab.", false, &[5, 3600]),
        &policy,
        Some(42),
    );
    assert_eq!(e.ttl, 42);
    assert_eq!(
        ttls(&e.render(&client, &q, TtlMode::Age(0), 512)),
        vec![42, 42]
    );
}

#[test]
fn stale_answers_carry_the_fixed_ttl() {
    let e = entry_for(upstream_answer("s.test.lab.", false, &[300]), &POLICY, None);
    let client = query(1, "s.test.lab", TYPE_A, None);
    let q = QueryView::parse(&client).unwrap();
    assert_eq!(
        ttls(&e.render(&client, &q, TtlMode::Fixed(30), 512)),
        vec![30]
    );
}

#[test]
fn opt_is_dropped_for_clients_without_edns_and_added_for_clients_with_it() {
    let e = entry_for(upstream_answer("o.test.lab.", false, &[300]), &POLICY, None);
    let plain = query(2, "o.test.lab", TYPE_A, None);
    let q = QueryView::parse(&plain).unwrap();
    let out = e.render(&plain, &q, TtlMode::Age(0), 512);
    let m = Message::from_vec(&out).unwrap();
    assert!(m.edns.is_none());
    assert_eq!(get16(&out, 10), 0);

    let without_opt = {
        let q = query(0x1111, "o.test.lab", TYPE_A, None);
        response(
            &q,
            ResponseCode::NoError,
            vec![a("o.test.lab.", 300, [1, 2, 3, 4])],
            vec![],
        )
    };
    let e = entry_for(without_opt, &POLICY, None);
    let with_edns = query(3, "o.test.lab", TYPE_A, Some(true));
    let q = QueryView::parse(&with_edns).unwrap();
    let m = Message::from_vec(&e.render(&with_edns, &q, TtlMode::Age(0), 1232)).unwrap();
    assert!(m.edns.unwrap().flags().dnssec_ok);
}

#[test]
fn the_clients_spelling_of_the_name_is_echoed() {
    let e = entry_for(
        upstream_answer("mixed.test.lab.", false, &[300]),
        &POLICY,
        None,
    );
    let client = query(4, "MiXeD.TeSt.LaB", TYPE_A, None);
    let q = QueryView::parse(&client).unwrap();
    let out = e.render(&client, &q, TtlMode::Age(0), 512);
    assert_eq!(&out[12..12 + q.qname_len], q.qname(&client));
}

#[test]
fn answers_too_big_for_the_client_are_truncated() {
    let ttl: Vec<u32> = vec![300; 40];
    let e = entry_for(upstream_answer("big.test.lab.", false, &ttl), &POLICY, None);
    let client = query(5, "big.test.lab", TYPE_A, None);
    let q = QueryView::parse(&client).unwrap();
    let out = e.render(&client, &q, TtlMode::Age(0), 512);
    assert!(out.len() <= 512);
    assert_ne!(get16(&out, 2) & FLAG_TC, 0);
    assert_eq!(get16(&out, 6), 0);
    let full = e.render(&client, &q, TtlMode::Age(0), 65_535);
    assert_eq!(Message::from_vec(&full).unwrap().answers.len(), 40);
}

#[test]
fn ad_goes_only_to_clients_that_asked_for_it() {
    let mut answer = upstream_answer("ad.test.lab.", false, &[300]);
    answer[3] |= 0x20;
    let e = entry_for(answer, &POLICY, None);
    let plain = query(6, "ad.test.lab", TYPE_A, None);
    let q = QueryView::parse(&plain).unwrap();
    assert_eq!(
        get16(&e.render(&plain, &q, TtlMode::Age(0), 512), 2) & FLAG_AD,
        0
    );
    let mut asks = plain.clone();
    asks[3] |= 0x20;
    let q = QueryView::parse(&asks).unwrap();
    assert_ne!(
        get16(&e.render(&asks, &q, TtlMode::Age(0), 512), 2) & FLAG_AD,
        0
    );
}

#[test]
fn nxdomain_is_cached_for_the_soa_minimum_and_not_without_soa() {
    let q = query(7, "nope.test.lab", TYPE_A, None);
    let with_soa = response(
        &q,
        ResponseCode::NXDomain,
        vec![],
        vec![soa("test.lab.", 300, 5)],
    );
    let e = entry_for(with_soa, &POLICY, None);
    assert_eq!(e.cacheability, Cacheability::Negative);
    assert_eq!(e.ttl, 5);
    let v = QueryView::parse(&q).unwrap();
    assert_eq!(ttls(&e.render(&q, &v, TtlMode::Age(0), 512)), vec![5]);
    let nodata = response(
        &q,
        ResponseCode::NoError,
        vec![],
        vec![soa("test.lab.", 300, 20)],
    );
    let e = entry_for(nodata, &POLICY, None);
    assert_eq!((e.cacheability, e.ttl), (Cacheability::Negative, 20));
    let bare = response(&q, ResponseCode::NXDomain, vec![], vec![]);
    assert_eq!(
        entry_for(bare, &POLICY, None).cacheability,
        Cacheability::No
    );
    let servfail = response(&q, ResponseCode::ServFail, vec![], vec![]);
    assert_eq!(
        entry_for(servfail, &POLICY, None).cacheability,
        Cacheability::No
    );
}

#[test]
fn keys_ignore_case_and_separate_do_cd_and_resolver() {
    let key = |msg: &[u8], r: Option<std::net::IpAddr>| {
        let q = QueryView::parse(msg).unwrap();
        KeyBuf::new(msg, &q, r).as_slice().to_vec()
    };
    let lower = query(1, "www.test.lab", TYPE_A, Some(false));
    let upper = query(2, "WWW.TEST.LAB", TYPE_A, None);
    assert_eq!(key(&lower, None), key(&upper, None));
    let do_bit = query(3, "www.test.lab", TYPE_A, Some(true));
    assert_ne!(key(&lower, None), key(&do_bit, None));
    let mut cd = lower.clone();
    cd[3] |= 0x10;
    assert_ne!(key(&lower, None), key(&cd, None));
    let r1 = Some(Ipv4Addr::new(10, 0, 0, 1).into());
    let r2 = Some(Ipv4Addr::new(10, 0, 0, 2).into());
    assert_ne!(key(&lower, r1), key(&lower, r2));
    assert_ne!(key(&lower, None), key(&lower, r1));
}

#[test]
fn lookups_tell_fresh_from_stale_from_gone() {
    let cache = AnswerCache::new(100, 1 << 20, Duration::from_secs(60));
    let mut e = entry_for(upstream_answer("l.test.lab.", false, &[10]), &POLICY, None);
    e.stored_at -= Duration::from_secs(3);
    cache.insert(b"k", Arc::new(e));
    assert!(matches!(
        cache.get(b"k", Instant::now()),
        Lookup::Fresh(_, 3)
    ));
    assert!(matches!(
        cache.get(b"k", Instant::now() + Duration::from_secs(8)),
        Lookup::Stale(_)
    ));
    // Past TTL + stale window it is gone for good.
    assert!(matches!(
        cache.get(b"k", Instant::now() + Duration::from_secs(80)),
        Lookup::Miss
    ));
    assert!(matches!(cache.get(b"k", Instant::now()), Lookup::Miss));
    assert!(matches!(cache.get(b"other", Instant::now()), Lookup::Miss));
    let uncacheable = {
        let q = query(7, "x.test.lab", TYPE_A, None);
        entry_for(
            response(&q, ResponseCode::ServFail, vec![], vec![]),
            &POLICY,
            None,
        )
    };
    cache.insert(b"sf", Arc::new(uncacheable));
    assert!(matches!(cache.get(b"sf", Instant::now()), Lookup::Miss));
}

#[test]
fn the_cache_is_bounded_by_entries_and_by_bytes() {
    let by_entries = AnswerCache::new(50, 64 << 20, Duration::from_secs(60));
    let by_bytes = AnswerCache::new(1_000_000, 64 * 1024, Duration::from_secs(60));
    let answer = upstream_answer("b.test.lab.", false, &[300; 8]);
    for i in 0..2_000u32 {
        let e = Arc::new(entry_for(answer.clone(), &POLICY, None));
        by_entries.insert(&i.to_be_bytes(), e.clone());
        by_bytes.insert(&i.to_be_bytes(), e);
    }
    assert!(by_entries.entries() <= 50, "{}", by_entries.entries());
    assert!(by_entries.entries() > 0);
    assert!(by_bytes.bytes() <= 64 * 1024, "{}", by_bytes.bytes());
    assert!(by_bytes.entries() > 0);
}
