use std::sync::atomic::AtomicUsize;

use hickory_proto::op::{Message, ResponseCode};
use prometheus_client::registry::Registry;

use super::*;
use crate::{
    dns::{
        testutil::{TestServer, a, query, response},
        upstream::{UpstreamPool, UpstreamSpec},
        wire::{TYPE_A, TYPE_AAAA},
    },
    net::{ClientAddr, OrigDstAddr},
    plugins::{
        Hook,
        testutil::{Body, install, plugins_in},
    },
};

fn settings() -> Settings {
    Settings {
        policy: TtlPolicy {
            min_ttl: 0,
            max_ttl: 86_400,
            max_negative_ttl: 3_600,
        },
        stale_answer_ttl: 30,
        prefetch: None,
        deny_answer: DenyAnswer::Nxdomain,
        upstream_timeout: Duration::from_millis(500),
        local_name: None,
    }
}

fn forwarder(upstream: SocketAddr, settings: Settings, rules: Rules, stale: Duration) -> Forwarder {
    let mut registry = Registry::default();
    let stats = DnsStats::register(&mut registry);
    let pool = UpstreamPool::new(
        vec![UpstreamSpec::Plain(upstream)],
        settings.upstream_timeout,
        None,
        stats.dropped_replies.clone(),
    );
    Forwarder::new(
        AnswerCache::new(1_000, 1 << 20, stale),
        Some(pool),
        rules,
        settings,
        stats,
        100,
    )
}

fn request(msg: Vec<u8>) -> Request {
    Request {
        bytes: msg.into(),
        client: ClientAddr("10.0.0.2:5353".parse().unwrap()),
        orig_dst: OrigDstAddr("10.0.0.1:53".parse().unwrap()),
        transport: Transport::Udp,
    }
}

async fn answer(f: &Forwarder, msg: Vec<u8>) -> (Message, bool) {
    match f.handle(request(msg)) {
        Response::Ready(b) => (Message::from_vec(&b).unwrap(), true),
        Response::Pending(p) => (Message::from_vec(&p.await.unwrap()).unwrap(), false),
        Response::Drop => panic!("dropped"),
    }
}

fn www(ttl: u32) -> impl Fn(&[u8], SocketAddr) -> Vec<Vec<u8>> + Send + Sync + 'static {
    move |q, _| {
        vec![response(
            q,
            ResponseCode::NoError,
            vec![a("www.test.lab.", ttl, [10, 9, 9, 9])],
            vec![],
        )]
    }
}

#[tokio::test]
async fn a_hit_is_answered_at_once_without_asking_upstream() {
    let server = TestServer::start(www(300)).await;
    let f = forwarder(
        server.addr,
        settings(),
        Rules::empty(),
        Duration::from_secs(60),
    );
    let (m, ready) = answer(&f, query(1, "www.test.lab", TYPE_A, None)).await;
    assert!(!ready);
    assert_eq!(m.metadata.id, 1);
    let (m, ready) = answer(&f, query(2, "WWW.test.lab", TYPE_A, Some(false))).await;
    assert!(ready, "a hit is answered inline");
    assert_eq!(m.metadata.id, 2);
    assert_eq!(m.answers[0].data.to_string(), "10.9.9.9");
    assert_eq!(server.count(), 1);
    assert_eq!(f.inner.stats.hits.get(), 1);
}

#[tokio::test]
async fn concurrent_identical_misses_ask_upstream_once() {
    let server = TestServer::start_delayed(Duration::from_millis(200), www(300)).await;
    let f = forwarder(
        server.addr,
        settings(),
        Rules::empty(),
        Duration::from_secs(60),
    );
    let pending: Vec<_> = (0..20u16)
        .map(
            |id| match f.handle(request(query(id, "www.test.lab", TYPE_A, None))) {
                Response::Pending(p) => p,
                _ => panic!("a miss must be pending"),
            },
        )
        .collect();
    let answers = futures::future::join_all(pending).await;
    for (id, a) in answers.into_iter().enumerate() {
        let m = Message::from_vec(&a.unwrap()).unwrap();
        assert_eq!(m.metadata.id as usize, id, "each client gets its own ID");
        assert_eq!(m.answers.len(), 1);
    }
    assert_eq!(server.count(), 1);
    assert_eq!(f.inner.stats.collapsed.get(), 19);
    // A different question is not collapsed with it.
    answer(&f, query(99, "www.test.lab", TYPE_AAAA, None)).await;
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn expired_answers_are_served_stale_while_upstream_fails_then_servfail() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let server = TestServer::start(move |q, _| {
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            vec![response(
                q,
                ResponseCode::NoError,
                vec![a("www.test.lab.", 1, [10, 9, 9, 9])],
                vec![],
            )]
        } else {
            vec![response(q, ResponseCode::ServFail, vec![], vec![])]
        }
    })
    .await;
    let f = forwarder(
        server.addr,
        settings(),
        Rules::empty(),
        Duration::from_secs(2),
    );
    answer(&f, query(1, "www.test.lab", TYPE_A, None)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (m, _) = answer(&f, query(2, "www.test.lab", TYPE_A, None)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers[0].ttl, 30, "stale answers carry stale_answer_ttl");
    assert_eq!(f.inner.stats.stale.get(), 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (m, _) = answer(&f, query(3, "www.test.lab", TYPE_A, None)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn popular_entries_are_prefetched_before_they_expire() {
    let server = TestServer::start(www(2)).await;
    let mut s = settings();
    s.prefetch = Some(Prefetch {
        min_hits: 1,
        percent: 50,
    });
    let f = forwarder(server.addr, s, Rules::empty(), Duration::from_secs(60));
    answer(&f, query(1, "www.test.lab", TYPE_A, None)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, ready) = answer(&f, query(2, "www.test.lab", TYPE_A, None)).await;
    assert!(ready, "the hit itself does not wait for the prefetch");
    for _ in 0..100 {
        if server.count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.count(), 2);
    assert_eq!(f.inner.stats.prefetches.get(), 1);
    // The refreshed entry is fresh again: full TTL, no upstream query.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (m, ready) = answer(&f, query(3, "www.test.lab", TYPE_A, None)).await;
    assert!(ready);
    assert_eq!(m.answers[0].ttl, 2);
}

#[tokio::test]
async fn a_rules_reload_applies_to_names_already_cached() {
    let server = TestServer::start(www(300)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.toml");
    std::fs::write(&file, "").unwrap();
    let rules = Rules::load(&file).unwrap();
    let f = forwarder(
        server.addr,
        settings(),
        rules.clone(),
        Duration::from_secs(60),
    );
    answer(&f, query(1, "www.test.lab", TYPE_A, None)).await;
    let (m, ready) = answer(&f, query(2, "www.test.lab", TYPE_A, None)).await;
    assert!(ready);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);

    std::fs::write(
        &file,
        "[[rule]]\nname = \"block\"\nmatch_host = \"*.test.lab\"\naction = \"deny\"\n",
    )
    .unwrap();
    rules.reload().unwrap();
    let (m, ready) = answer(&f, query(3, "www.test.lab", TYPE_A, None)).await;
    assert!(ready);
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NXDomain,
        "the cached entry no longer answers"
    );
    assert_eq!(f.inner.stats.denied.get(), 1);

    std::fs::write(
        &file,
        "[[rule]]\nname = \"live\"\nmatch_host = \"www.test.lab\"\naction = \"passthrough\"\n",
    )
    .unwrap();
    rules.reload().unwrap();
    let (m, ready) = answer(&f, query(4, "www.test.lab", TYPE_A, None)).await;
    assert!(!ready, "passthrough asks upstream every time");
    assert_eq!(m.answers.len(), 1);
    assert_eq!(server.count(), 2);
    assert_eq!(f.inner.stats.uncached.get(), 1);
}

#[tokio::test]
async fn malformed_queries_get_formerr_and_fragments_are_dropped() {
    let server = TestServer::start(www(300)).await;
    let f = forwarder(
        server.addr,
        settings(),
        Rules::empty(),
        Duration::from_secs(60),
    );
    let garbage = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x3f, b'x'];
    match f.handle(request(garbage)) {
        Response::Ready(b) => {
            assert_eq!(&b[..2], &[0xab, 0xcd]);
            assert_eq!(b[3] & 0xf, 1);
        }
        _ => panic!("FORMERR expected"),
    }
    assert!(matches!(f.handle(request(vec![1, 2, 3])), Response::Drop));
    assert_eq!(server.count(), 0);
}

#[test]
fn local_names_are_encoded_as_in_a_question() {
    let addr = std::net::Ipv4Addr::new(198, 18, 0, 80);
    for name in ["velocache.ca", "velocache.ca."] {
        let local = super::LocalName::new(name, addr).unwrap();
        assert_eq!(local.wire, b"\x09velocache\x02ca\x00");
    }
    assert!(super::LocalName::new("a..b", addr).is_none());
}

/// A forwarder asking `server`, with plugin `name` (a test component doing `body`) installed.
fn with_plugin(
    server: SocketAddr,
    name: &str,
    body: Body,
    extra: &str,
) -> (Forwarder, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), name, &[Hook::Dns], body, extra);
    let plugins = plugins_in(dir.path());
    plugins.reload().unwrap();
    let f = forwarder(server, settings(), Rules::empty(), Duration::from_secs(60));
    f.set_plugins(plugins);
    (f, dir)
}

#[tokio::test]
async fn plugins_deny_answer_and_rewrite_before_the_cache() {
    let server = TestServer::start(www(300)).await;
    let (f, _deny) = with_plugin(
        server.addr,
        "deny",
        Body::DenyRefused,
        "hosts = [\"*.ads.lab\"]\n",
    );
    let (m, ready) = answer(&f, query(1, "x.ads.lab", TYPE_A, None)).await;
    assert!(ready, "a plugin's answer is immediate");
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    let (m, _) = answer(&f, query(2, "www.test.lab", TYPE_A, None)).await;
    assert_eq!(
        m.answers.len(),
        1,
        "a name the plugin does not match goes on"
    );
    assert_eq!(server.count(), 1);

    let (f, _answer) = with_plugin(server.addr, "answer", Body::AnswerA, "");
    for id in [3, 4] {
        let (m, ready) = answer(&f, query(id, "local.lab", TYPE_A, None)).await;
        assert!(ready);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers[0].data.to_string(), "10.0.0.7");
        assert_eq!(m.answers[0].name.to_ascii(), "local.lab.");
    }
    assert_eq!(server.count(), 1, "a plugin's answer asks no upstream");

    let (f, _rewrite) = with_plugin(
        server.addr,
        "rewrite",
        Body::RewriteWww,
        "hosts = [\"alias.lab\"]\n",
    );
    let (m, ready) = answer(&f, query(5, "alias.lab", TYPE_A, None)).await;
    assert!(!ready, "a rewrite asks upstream");
    assert_eq!(m.metadata.id, 5);
    assert_eq!(m.queries[0].name.to_ascii(), "alias.lab.");
    assert_eq!(m.answers[0].name.to_ascii(), "alias.lab.");
    assert_eq!(m.answers[0].data.to_string(), "10.9.9.9");
    let (m, ready) = answer(&f, query(6, "alias.lab", TYPE_A, None)).await;
    assert!(ready, "cached under the client's question");
    assert_eq!(m.answers[0].name.to_ascii(), "alias.lab.");
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn a_hit_reaches_only_plugins_that_see_hits() {
    let server = TestServer::start(www(300)).await;
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_in(dir.path());
    plugins.reload().unwrap();
    let f = forwarder(
        server.addr,
        settings(),
        Rules::empty(),
        Duration::from_secs(60),
    );
    f.set_plugins(plugins.clone());
    answer(&f, query(1, "www.test.lab", TYPE_A, None)).await;
    install(dir.path(), "blind", &[Hook::Dns], Body::DenyRefused, "");
    plugins.reload().unwrap();
    let (m, ready) = answer(&f, query(2, "www.test.lab", TYPE_A, None)).await;
    assert!(ready);
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NoError,
        "a plugin without see_hits is not asked about a hit"
    );
    install(
        dir.path(),
        "seer",
        &[Hook::Dns],
        Body::DenyRefused,
        "see_hits = true\nhosts = [\"www.test.lab\"]\n",
    );
    plugins.reload().unwrap();
    let (m, _) = answer(&f, query(3, "www.test.lab", TYPE_A, None)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert_eq!(server.count(), 1);
}
