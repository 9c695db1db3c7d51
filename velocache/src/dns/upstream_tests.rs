use std::{collections::HashSet, net::Ipv4Addr};

use hickory_proto::op::{Message, ResponseCode};

use super::*;
use crate::dns::{
    testutil::{TestServer, a, query, response, with_tc},
    wire::TYPE_A,
};

#[test]
fn upstream_entries_parse() {
    assert_eq!(
        UpstreamSpec::parse("10.77.2.2").unwrap(),
        UpstreamSpec::Plain("10.77.2.2:53".parse().unwrap())
    );
    assert_eq!(
        UpstreamSpec::parse("[fd77:2::2]:5353").unwrap(),
        UpstreamSpec::Plain("[fd77:2::2]:5353".parse().unwrap())
    );
    assert_eq!(
        UpstreamSpec::parse("tls://1.1.1.1#cloudflare-dns.com").unwrap(),
        UpstreamSpec::Tls {
            addr: "1.1.1.1:853".parse().unwrap(),
            server_name: "cloudflare-dns.com".into()
        }
    );
    assert_eq!(
        UpstreamSpec::parse("tls://9.9.9.9:8853").unwrap().label(),
        "tls://9.9.9.9:8853#9.9.9.9"
    );
    for bad in [
        "",
        "dns.google",
        "https://1.1.1.1",
        "1.1.1.1:0",
        "1.1.1.1#name",
        "tls://1.1.1.1#bad name",
    ] {
        assert!(UpstreamSpec::parse(bad).is_err(), "{bad}");
    }
}

fn answer_for(q: &[u8]) -> Vec<u8> {
    response(
        q,
        ResponseCode::NoError,
        vec![a("www.test.lab.", 300, [10, 9, 9, 9])],
        vec![],
    )
}

const T: Duration = Duration::from_secs(2);

#[tokio::test]
async fn spoofed_replies_are_dropped_and_the_real_one_taken() {
    // Before the real answer: a perfect forgery (right ID, right question) sent from another
    // port, an answer with the wrong ID, and one for another question.
    let other = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let server = TestServer::start(move |q, from| {
        let forged = response(
            q,
            ResponseCode::NoError,
            vec![a("www.test.lab.", 300, [6, 6, 6, 6])],
            vec![],
        );
        other.send_to(&forged, from).unwrap();
        let mut wrong_id = forged.clone();
        wrong_id[0] ^= 0xff;
        let other_q = query(
            u16::from_be_bytes([q[0], q[1]]),
            "evil.test.lab",
            TYPE_A,
            None,
        );
        let wrong_question = response(
            &other_q,
            ResponseCode::NoError,
            vec![a("evil.test.lab.", 300, [6, 6, 6, 6])],
            vec![],
        );
        vec![wrong_id, wrong_question, answer_for(q)]
    })
    .await;
    let dropped = Counter::default();
    let q = query(0, "www.test.lab", TYPE_A, None);
    let reply = exchange_plain(server.addr, &q, T, &dropped, true)
        .await
        .unwrap();
    let m = Message::from_vec(&reply.bytes).unwrap();
    assert_eq!(m.answers.len(), 1);
    assert_eq!(
        m.answers[0].data.to_string(),
        "10.9.9.9",
        "the forgery from another port was taken"
    );
    assert_eq!(dropped.get(), 2, "wrong ID and wrong question counted");
}

#[tokio::test]
async fn ids_and_source_ports_change_per_query() {
    let server = TestServer::start(|q, _| vec![answer_for(q)]).await;
    let mut ports = HashSet::new();
    let q = query(0, "www.test.lab", TYPE_A, None);
    let dropped = Counter::default();
    let mut ids = HashSet::new();
    for _ in 0..10 {
        let r = exchange_plain(server.addr, &q, T, &dropped, true)
            .await
            .unwrap();
        ids.insert(u16::from_be_bytes([r.bytes[0], r.bytes[1]]));
        ports.insert(server.last_from.lock().unwrap().port());
    }
    assert!(ids.len() >= 8, "IDs are random: {ids:?}");
    assert!(ports.len() >= 8, "source ports are random: {ports:?}");
    assert_eq!(server.count(), 10);
}

#[tokio::test]
async fn a_truncated_udp_answer_is_asked_again_over_tcp() {
    let server = TestServer::start(|q, _| {
        let full = response(
            q,
            ResponseCode::NoError,
            (0..60)
                .map(|i| a("www.test.lab.", 300, [10, 0, 0, i]))
                .collect(),
            vec![],
        );
        // UDP gets the TC=1 header-only version first; TCP takes the last datagram only.
        let tc = with_tc(response(q, ResponseCode::NoError, vec![], vec![]));
        vec![tc, full]
    })
    .await;
    let q = query(0, "www.test.lab", TYPE_A, None);
    let dropped = Counter::default();
    // Without fallback the TC answer comes back as it is.
    let r = exchange_plain(server.addr, &q, T, &dropped, false)
        .await
        .unwrap();
    assert_ne!(get16(&r.bytes, 2) & FLAG_TC, 0);
    assert_eq!(r.transport, "udp");
    let r = exchange_plain(server.addr, &q, T, &dropped, true)
        .await
        .unwrap();
    assert_eq!(r.transport, "tcp");
    assert_eq!(Message::from_vec(&r.bytes).unwrap().answers.len(), 60);
}

fn dead_port() -> SocketAddr {
    // Bound then closed: nothing listens, the kernel answers with port unreachable.
    let s = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    s.local_addr().unwrap()
}

#[tokio::test]
async fn the_pool_fails_over_and_marks_dead_upstreams_down() {
    let good = TestServer::start(|q, _| vec![answer_for(q)]).await;
    let dead = dead_port();
    let pool = UpstreamPool::new(
        vec![UpstreamSpec::Plain(dead), UpstreamSpec::Plain(good.addr)],
        Duration::from_millis(500),
        None,
        Counter::default(),
    );
    let q = query(0, "www.test.lab", TYPE_A, None);
    for _ in 0..3 {
        let r = pool.query(&q, true).await.unwrap();
        assert_eq!(&*r.upstream, good.addr.to_string());
    }
    assert!(pool.is_down(&pool.upstreams()[0]));
    assert!(!pool.is_down(&pool.upstreams()[1]));
    assert!(!pool.all_down());
    assert_eq!(good.count(), 3);
}

#[tokio::test]
async fn servfail_moves_on_and_refused_stays_refused() {
    let failing =
        TestServer::start(|q, _| vec![response(q, ResponseCode::ServFail, vec![], vec![])]).await;
    let good = TestServer::start(|q, _| vec![answer_for(q)]).await;
    let refusing =
        TestServer::start(|q, _| vec![response(q, ResponseCode::Refused, vec![], vec![])]).await;
    let q = query(0, "www.test.lab", TYPE_A, None);
    let pool = UpstreamPool::new(
        vec![
            UpstreamSpec::Plain(failing.addr),
            UpstreamSpec::Plain(good.addr),
        ],
        T,
        None,
        Counter::default(),
    );
    let r = pool.query(&q, true).await.unwrap();
    assert_eq!(&*r.upstream, good.addr.to_string());
    let pool = UpstreamPool::new(
        vec![UpstreamSpec::Plain(refusing.addr)],
        T,
        None,
        Counter::default(),
    );
    let r = pool.query(&q, true).await.unwrap();
    assert_eq!(get16(&r.bytes, 2) & 0xf, u16::from(rcode::REFUSED));
}

#[tokio::test]
async fn all_upstreams_dead_is_an_error_and_all_down() {
    let pool = UpstreamPool::new(
        vec![
            UpstreamSpec::Plain(dead_port()),
            UpstreamSpec::Plain(dead_port()),
        ],
        Duration::from_millis(300),
        None,
        Counter::default(),
    );
    let q = query(0, "www.test.lab", TYPE_A, None);
    for _ in 0..3 {
        assert!(pool.query(&q, true).await.is_err());
    }
    assert!(pool.all_down());
    // Down upstreams are still tried when nothing else is left.
    assert!(pool.query(&q, true).await.is_err());
}
