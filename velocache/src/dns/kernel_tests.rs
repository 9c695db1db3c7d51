//! Kernel answers as an interface runs them — the real `velocache-xdp` object, through the
//! dispatcher, in slot `Dns` — fed crafted frames with `BPF_PROG_TEST_RUN` (no interface, no
//! network). Entries enter the way the daemon puts them there ([`KernelAnswers::offer`] with a
//! cache entry and the query that hit it); each answer the kernel writes is checked against what
//! the daemon's own hit path renders for the same query, byte for byte besides the TTLs, and
//! its IPv4 and UDP checksums are verified. Needs root, like the daemon.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Instant,
};

use bytes::Bytes;
use hickory_proto::op::ResponseCode;
use velocache_common::{
    dns::{DnsCounter, KEY_EDNS},
    xdp::{XDP_DISPATCHER, XdpSlot},
};

use super::*;
use crate::{
    datapath::{XdpOwner, XdpSettings},
    dns::{
        cache::{CachedAnswer, TtlPolicy},
        handler::Transport,
        testutil::{a, query, response, soa},
        wire::{TYPE_A, TYPE_AAAA, scan_answer},
    },
    net::{ClientAddr, OrigDstAddr},
    rules::Rules,
    testutil::require_root,
};

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const CLIENT4: [u8; 4] = [10, 77, 0, 2];
const RESOLVER4: [u8; 4] = [10, 77, 9, 53];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const POLICY: TtlPolicy = TtlPolicy {
    min_ttl: 0,
    max_ttl: 86_400,
    max_negative_ttl: 3_600,
};

struct Kernel {
    xdp: XdpOwner,
    kernel: KernelAnswers,
    rules: Rules,
}

fn lo() -> u32 {
    nix::net::if_::if_nametoindex("lo").unwrap()
}

/// The slot claimed from a fresh owner and enabled on `lo`, where test runs enter.
fn kernel() -> Kernel {
    require_root("loading BPF programs");
    let xdp = XdpOwner::new(XdpSettings::default());
    let maps = xdp.claim(XdpSlot::Dns, &[]).unwrap();
    xdp.enable_for_test(lo(), &[XdpSlot::Dns]);
    let rules = Rules::empty();
    let settings = KernelSettings {
        min_hits: 1,
        prefetch_percent: None,
    };
    let kernel = KernelAnswers::new(maps, &[], settings, rules.clone(), None).unwrap();
    Kernel { xdp, kernel, rules }
}

impl Kernel {
    /// A cache entry for `q` answered by `records` (or NXDOMAIN with an SOA when empty).
    fn entry(&self, q: &[u8], records: Vec<hickory_proto::rr::Record>) -> Arc<CachedAnswer> {
        let upstream = if records.is_empty() {
            response(
                q,
                ResponseCode::NXDomain,
                vec![],
                vec![soa("test.lab.", 300, 120)],
            )
        } else {
            response(q, ResponseCode::NoError, records, vec![])
        };
        let layout = scan_answer(&upstream).unwrap();
        Arc::new(CachedAnswer::from_upstream(
            upstream,
            &layout,
            &POLICY,
            None,
            "test".into(),
            Arc::downgrade(&self.rules.current()),
        ))
    }

    /// Offer `entry` as the daemon's hit path does for `q` sent to `resolver`.
    fn offer(&self, q: &[u8], resolver: IpAddr, entry: &Arc<CachedAnswer>) {
        let req = request(q, resolver);
        let view = QueryView::parse(q).unwrap();
        self.kernel.offer(&req, &view, entry, b"cache-key");
    }

    fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.xdp.test_run(XDP_DISPATCHER, frame)
    }
}

fn request(q: &[u8], resolver: IpAddr) -> Request {
    Request {
        bytes: Bytes::copy_from_slice(q),
        client: ClientAddr(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(CLIENT4)), 40000)),
        orig_dst: OrigDstAddr(SocketAddr::new(resolver, 53)),
        transport: Transport::Udp,
    }
}

/// Ethernet + IPv4 + UDP (client:40000 → resolver:53) around `dns`.
fn frame4(dns: &[u8], resolver: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&GW_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let tot = (20 + 8 + dns.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&tot.to_be_bytes());
    ip.extend_from_slice(&CLIENT4);
    ip.extend_from_slice(&resolver);
    let c = !fold16(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&53u16.to_be_bytes());
    f.extend_from_slice(&((8 + dns.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(dns);
    f
}

/// Ethernet + IPv6 + UDP around `dns`.
fn frame6(dns: &[u8], client: Ipv6Addr, resolver: Ipv6Addr) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&GW_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&((8 + dns.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[17, 64]);
    f.extend_from_slice(&client.octets());
    f.extend_from_slice(&resolver.octets());
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&53u16.to_be_bytes());
    f.extend_from_slice(&((8 + dns.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(dns);
    f
}

/// The one's-complement sum of `b` as big-endian words, folded.
fn fold16(b: &[u8]) -> u16 {
    let mut s: u64 = b
        .chunks(2)
        .map(|c| u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Check the answer frame's headers (turned around, lengths, checksums) and return its DNS
/// payload.
fn payload_of(out: &[u8], v6: bool) -> Vec<u8> {
    checked_payload(out, v6, Some((RESOLVER4, CLIENT4)))
}

/// [`payload_of`] for any addresses (`v4`: the IPv4 source and destination expected).
fn checked_payload(out: &[u8], v6: bool, v4: Option<([u8; 4], [u8; 4])>) -> Vec<u8> {
    assert_eq!(&out[..6], &CLIENT_MAC, "destination MAC is the client's");
    assert_eq!(&out[6..12], &GW_MAC);
    let ethertype: u16 = if v6 { 0x86dd } else { 0x0800 };
    assert_eq!(&out[12..14], &ethertype.to_be_bytes(), "EtherType kept");
    let l4 = if v6 { 54 } else { 34 };
    let udp_len = usize::from(u16::from_be_bytes([out[l4 + 4], out[l4 + 5]]));
    assert_eq!(out.len(), l4 + udp_len, "frame sized to the answer");
    if v4.is_some() {
        assert_eq!(
            &out[l4..l4 + 4],
            &[0, 53, 0x9c, 0x40],
            "ports turned around"
        );
    }
    let mut pseudo = Vec::new();
    if v6 {
        assert_eq!(usize::from(u16::from_be_bytes([out[18], out[19]])), udp_len);
        pseudo.extend_from_slice(&out[22..54]);
        pseudo.extend_from_slice(&(udp_len as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 17]);
    } else {
        let ip = &out[14..34];
        assert_eq!(fold16(ip), 0xffff, "IPv4 header checksum");
        assert_eq!(
            usize::from(u16::from_be_bytes([ip[2], ip[3]])),
            20 + udp_len
        );
        if let Some((from, to)) = v4 {
            assert_eq!(
                &ip[12..16],
                &from,
                "the answer comes from the resolver asked"
            );
            assert_eq!(&ip[16..20], &to);
        }
        pseudo.extend_from_slice(&ip[12..20]);
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
    }
    pseudo.extend_from_slice(&out[l4..]);
    assert_ne!(&out[l4 + 6..l4 + 8], &[0, 0], "a UDP checksum is set");
    assert_eq!(fold16(&pseudo), 0xffff, "UDP checksum");
    out[l4 + 8..].to_vec()
}

/// The daemon's own answer to `q` from `entry`, with TTL fields zeroed in both for comparison.
fn same_besides_ttls(kernel: &[u8], q: &[u8], entry: &CachedAnswer) {
    let view = QueryView::parse(q).unwrap();
    let age = entry.age(Instant::now());
    let mut daemon = entry.render(q, &view, TtlMode::Age(age), 512);
    let mut kernel = kernel.to_vec();
    let offsets = scan_answer(&daemon).unwrap().ttl_offsets;
    assert_eq!(scan_answer(&kernel).unwrap().ttl_offsets, offsets);
    for off in offsets {
        let off = usize::from(off);
        let (k, d) = (get32(&kernel, off), get32(&daemon, off));
        assert!(k.abs_diff(d) <= 1, "TTL {k} vs {d}");
        kernel[off..off + 4].fill(0);
        daemon[off..off + 4].fill(0);
    }
    assert_eq!(kernel, daemon, "kernel answer differs from the daemon's");
}

fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn mixed_case(q: &mut [u8]) {
    // 0x20 clients randomise the case of the question; the answer must echo it.
    for b in q[13..16].iter_mut() {
        *b = b.to_ascii_uppercase();
    }
}

#[test]
fn plain_v4_query_is_answered_in_the_kernel_as_the_daemon_would() {
    let k = kernel();
    let q = query(0x4242, "www.test.lab", TYPE_A, None);
    let entry = k.entry(
        &q,
        vec![
            a("www.test.lab.", 300, [10, 0, 0, 1]),
            a("www.test.lab.", 120, [10, 0, 0, 2]),
        ],
    );
    k.offer(&q, IpAddr::V4(Ipv4Addr::from(RESOLVER4)), &entry);
    assert_eq!(k.kernel.entries(), 1);

    let mut asked = query(0x9e37, "www.test.lab", TYPE_A, None);
    mixed_case(&mut asked);
    let (action, out) = k.run(&frame4(&asked, RESOLVER4));
    assert_eq!(action, XDP_TX);
    let answer = payload_of(&out, false);
    assert_eq!(&answer[..2], &[0x9e, 0x37], "the client's ID");
    assert_eq!(&answer[12..25], &asked[12..25], "the client's spelling");
    same_besides_ttls(&answer, &asked, &entry);
    assert_eq!(k.kernel.counter(DnsCounter::Answered), 1);
    let s = k.kernel.summaries();
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].qname.as_str(), s[0].count), ("www.test.lab.", 1));
}

#[test]
fn edns_queries_get_the_answer_of_their_own_shape() {
    let k = kernel();
    let with_opt = query(1, "edns.test.lab", TYPE_A, Some(false));
    let entry = k.entry(&with_opt, vec![a("edns.test.lab.", 300, [10, 0, 0, 3])]);
    k.offer(&with_opt, IpAddr::V4(Ipv4Addr::from(RESOLVER4)), &entry);

    // Same shape (OPT, a cookie option, DO clear), another ID: answered, with an OPT.
    let asked = query(7, "edns.test.lab", TYPE_A, Some(false));
    let (action, out) = k.run(&frame4(&asked, RESOLVER4));
    assert_eq!(action, XDP_TX);
    let answer = payload_of(&out, false);
    same_besides_ttls(&answer, &asked, &entry);
    assert_eq!(
        u16::from_be_bytes([answer[10], answer[11]]),
        1,
        "the OPT record"
    );

    // No OPT, or DO set: other keys, not in the kernel: the frame goes on unmodified.
    for other in [
        query(8, "edns.test.lab", TYPE_A, None),
        query(9, "edns.test.lab", TYPE_A, Some(true)),
    ] {
        let f = frame4(&other, RESOLVER4);
        assert_eq!(k.run(&f), (XDP_PASS, f.clone()));
    }
    let key = key_of(
        &asked,
        &QueryView::parse(&asked).unwrap(),
        IpAddr::V4(Ipv4Addr::from(RESOLVER4)),
    );
    assert_eq!(key.flags, KEY_EDNS);
}

#[test]
fn v6_queries_are_answered_with_a_right_checksum() {
    let k = kernel();
    let resolver: Ipv6Addr = "fd00:77::53".parse().unwrap();
    let client: Ipv6Addr = "fd00:77::2".parse().unwrap();
    let q = query(3, "six.test.lab", TYPE_AAAA, None);
    let entry = k.entry(&q, vec![]);
    k.offer(&q, IpAddr::V6(resolver), &entry);
    let (action, out) = k.run(&frame6(&q, client, resolver));
    assert_eq!(action, XDP_TX);
    assert_eq!(&out[22..38], &resolver.octets(), "from the resolver asked");
    assert_eq!(&out[38..54], &client.octets());
    assert_eq!(out[21], 64, "hop limit");
    let answer = payload_of(&out, true);
    assert_eq!(answer[3] & 0x0f, 3, "NXDOMAIN as stored");
    same_besides_ttls(&answer, &q, &entry);
    // The same question to another resolver is that resolver's to answer.
    let other: Ipv6Addr = "fd00:77::54".parse().unwrap();
    let f = frame6(&q, client, other);
    assert_eq!(k.run(&f), (XDP_PASS, f.clone()));
}

#[test]
fn unusual_or_broken_queries_pass_untouched() {
    let k = kernel();
    let q = query(5, "www.test.lab", TYPE_A, None);
    let entry = k.entry(&q, vec![a("www.test.lab.", 300, [10, 0, 0, 1])]);
    k.offer(&q, IpAddr::V4(Ipv4Addr::from(RESOLVER4)), &entry);
    let good = frame4(&q, RESOLVER4);
    assert_eq!(k.run(&good).0, XDP_TX);

    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    // Truncated frames: cut inside the question, and a UDP length past the frame's end.
    cases.push(("cut in the name", good[..good.len() - 8].to_vec()));
    let mut long = good.clone();
    long[38..40].copy_from_slice(&((8 + q.len() + 20) as u16).to_be_bytes());
    cases.push(("UDP length past the end", long));
    cases.push(("header only", frame4(&q[..12], RESOLVER4)));
    // A compression pointer in the question.
    let mut ptr = q[..12].to_vec();
    ptr.extend_from_slice(&[3, b'w', b'w', b'w', 0xc0, 12, 0, 1, 0, 1]);
    cases.push(("compression pointer", frame4(&ptr, RESOLVER4)));
    // A response, not a query.
    let mut resp = q.clone();
    resp[2] |= 0x80;
    cases.push(("QR set", frame4(&resp, RESOLVER4)));
    // Two questions.
    let mut two = q.clone();
    two[5] = 2;
    cases.push(("QDCOUNT 2", frame4(&two, RESOLVER4)));
    // EDNS Client Subnet: answers depend on the client.
    let mut ecs = q.clone();
    ecs[11] = 1;
    ecs.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 8, 0, 8, 0, 4, 0, 1, 24, 0]);
    cases.push(("client subnet", frame4(&ecs, RESOLVER4)));
    // EDNS version 1.
    let mut v1 = query(5, "www.test.lab", TYPE_A, Some(false));
    let at = v1.len() - 14 - 5;
    v1[at] = 1;
    cases.push(("EDNS version 1", frame4(&v1, RESOLVER4)));
    // Another port.
    let mut port = good.clone();
    port[36..38].copy_from_slice(&5353u16.to_be_bytes());
    cases.push(("port 5353", port));
    for (what, f) in cases {
        assert_eq!(k.run(&f), (XDP_PASS, f.clone()), "{what}");
    }
    assert_eq!(k.kernel.counter(DnsCounter::Answered), 1);
}

#[test]
fn expired_and_forgotten_entries_are_left_to_the_daemon() {
    let k = kernel();
    let q = query(6, "old.test.lab", TYPE_A, None);
    let entry = k.entry(&q, vec![a("old.test.lab.", 300, [10, 0, 0, 1])]);
    let resolver = IpAddr::V4(Ipv4Addr::from(RESOLVER4));
    k.offer(&q, resolver, &entry);
    let f = frame4(&q, RESOLVER4);
    assert_eq!(k.run(&f).0, XDP_TX);

    // Past its freshness on the kernel's clock.
    let key = key_of(&q, &QueryView::parse(&q).unwrap(), resolver);
    {
        let mut state = k.kernel.state.lock();
        let mut value = state.map.get(&key, 0).unwrap();
        value.fresh_until_ns = monotonic_ns() - 1;
        state.map.insert(key, value, 0).unwrap();
    }
    assert_eq!(k.run(&f), (XDP_PASS, f.clone()));
    assert_eq!(k.kernel.counter(DnsCounter::Expired), 1);

    // A new answer for the cache key, then a rules change: gone from the map.
    k.kernel.forget(b"cache-key");
    assert_eq!(k.kernel.entries(), 0);
    k.offer(&q, resolver, &entry);
    assert_eq!(k.kernel.entries(), 1);
    k.kernel.clear();
    assert_eq!(k.run(&f), (XDP_PASS, f.clone()));
}

#[test]
fn entries_a_rule_acts_on_never_reach_the_kernel() {
    let k = kernel();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.toml");
    std::fs::write(
        &file,
        "[[rule]]\nname = \"short\"\nmatch_host = \"*.ruled.lab\"\naction = \"cache\"\nttl_override = \"5s\"\n",
    )
    .unwrap();
    k.rules.switch_file(Some(&file)).unwrap();
    let q = query(1, "x.ruled.lab", TYPE_A, None);
    let entry = k.entry(&q, vec![a("x.ruled.lab.", 300, [10, 0, 0, 1])]);
    k.offer(&q, IpAddr::V4(Ipv4Addr::from(RESOLVER4)), &entry);
    assert_eq!(k.kernel.entries(), 0);
    let f = frame4(&q, RESOLVER4);
    assert_eq!(k.run(&f), (XDP_PASS, f.clone()));
    // The refusal is remembered (no verdict per hit), and forgotten with the rules.
    assert_eq!(k.kernel.state.lock().installed.len(), 1);
    k.kernel.clear();
    assert!(k.kernel.state.lock().installed.is_empty());
}

#[test]
fn mutated_queries_are_answered_right_or_passed_untouched() {
    use rand::{Rng as _, SeedableRng as _};
    let k = kernel();
    let resolver = IpAddr::V4(Ipv4Addr::from(RESOLVER4));
    let shapes = [
        query(1, "www.test.lab", TYPE_A, None),
        query(2, "www.test.lab", TYPE_A, Some(false)),
        query(3, "www.test.lab", TYPE_A, Some(true)),
    ];
    for q in &shapes {
        let entry = k.entry(q, vec![a("www.test.lab.", 300, [10, 0, 0, 1])]);
        k.offer(q, resolver, &entry);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut answered = 0;
    for i in 0..3_000 {
        let mut f = frame4(&shapes[i % shapes.len()], RESOLVER4);
        // Flip, set or cut a few bytes anywhere past the Ethernet header.
        for _ in 0..rng.random_range(1..4) {
            match rng.random_range(0..3) {
                0 => {
                    let at = rng.random_range(14..f.len());
                    f[at] ^= 1 << rng.random_range(0..8);
                }
                1 if f.len() > 42 => {
                    let at = rng.random_range(42..f.len());
                    f[at] = rng.random();
                }
                1 => {}
                _ if f.len() > 15 => {
                    let len = rng.random_range(15..=f.len());
                    f.truncate(len);
                }
                _ => {}
            }
        }
        let (action, out) = k.run(&f);
        match action {
            XDP_PASS => assert_eq!(out, f, "a passed frame is untouched"),
            XDP_TX => {
                // Only frames that still read as the plain query (a flip in a bit the key
                // ignores: the ID, RD, the IP header's ID or TTL, the client's address or
                // port) are answered, and always well-formed and turned around.
                let answer = checked_payload(&out, false, None);
                assert_eq!(&out[26..30], &f[30..34], "from the address asked");
                assert_eq!(&out[30..34], &f[26..30], "to the sender");
                assert_eq!(&out[34..36], &f[36..38]);
                assert_eq!(&out[36..38], &f[34..36]);
                let asked = &f[42..];
                assert_eq!(&answer[..2], &asked[..2]);
                assert!(scan_answer(&answer).is_ok());
                answered += 1;
            }
            other => panic!("action {other} for {f:02x?}"),
        }
    }
    assert!(answered > 0, "no mutation left the query answerable");
}

#[test]
fn names_a_plugin_sees_and_answers_a_plugin_shaped_never_reach_the_kernel() {
    use crate::plugins::{
        Hook,
        testutil::{Body, install, plugins_in},
    };
    let k = kernel();
    let dir = tempfile::tempdir().unwrap();
    install(
        dir.path(),
        "seer",
        &[Hook::Dns],
        Body::Pass,
        "see_hits = true\nhosts = [\"*.seen.lab\"]\n",
    );
    let plugins = plugins_in(dir.path());
    plugins.reload().unwrap();
    k.kernel.set_plugins(plugins);
    let resolver = IpAddr::V4(Ipv4Addr::from(RESOLVER4));

    let seen = query(1, "x.seen.lab", TYPE_A, None);
    let entry = k.entry(&seen, vec![a("x.seen.lab.", 300, [10, 0, 0, 1])]);
    k.offer(&seen, resolver, &entry);
    assert_eq!(k.kernel.entries(), 0, "its hits must reach the plugin");

    let q = query(2, "www.test.lab", TYPE_A, None);
    let upstream = response(
        &q,
        ResponseCode::NoError,
        vec![a("www.test.lab.", 300, [10, 0, 0, 2])],
        vec![],
    );
    let layout = scan_answer(&upstream).unwrap();
    let mut shaped = CachedAnswer::from_upstream(
        upstream,
        &layout,
        &POLICY,
        None,
        "test".into(),
        Arc::downgrade(&k.rules.current()),
    );
    shaped.plugin = true;
    k.offer(&q, resolver, &Arc::new(shaped));
    assert_eq!(
        k.kernel.entries(),
        0,
        "a rewritten answer stays in the daemon"
    );

    let other = query(3, "other.test.lab", TYPE_A, None);
    let entry = k.entry(&other, vec![a("other.test.lab.", 300, [10, 0, 0, 3])]);
    k.offer(&other, resolver, &entry);
    assert_eq!(k.kernel.entries(), 1, "other names still do");
}
