//! TLS observation run on crafted frames through `BPF_PROG_TEST_RUN` (STYLE.md §4): the
//! classifier's hook, the ClientHello reader it tail-calls, the egress counter, the SNI policy.
//! Each test runs in a fresh network namespace (`classifier_tests::in_fresh_netns`) with a
//! listener on the HTTPS listen port standing for the daemon. Hellos come from rustls (what a
//! real client sends) or are built here byte by byte where the test needs to know where each
//! extension falls.
use std::{net::IpAddr, sync::Arc};

use aya::{
    Ebpf,
    maps::{
        Array, HashMap, MapData, RingBuf,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{SchedClassifier, TestRun, TestRunOptions},
};
use velocache_common::{
    CLASSIFIER_PROGRAM, Service, Verdict,
    tls::{
        EGRESS_PROGRAM, END_FIN, HELLO_MALFORMED, HELLO_NOT_TLS, HELLO_PARSED, HELLO_PENDING,
        HELLO_PROGRAM, HELLO_SPLIT, HELLO_SPLIT_PARTIAL, HELLO_UNSUPPORTED, NO_RULE, ObserveConfig,
        ObservedFlow, SNI_DENY, SNI_PASS, SniPolicy, SteerEntry, TlsFlowKey, sni_key,
    },
};

use super::{Counters, classifier_tests::in_fresh_netns, load_object};
use crate::{
    config::{Config, DatapathConfig},
    observe::{
        events::{Event, Hello, decode},
        monotonic_ns,
    },
};

/// Offsets in `struct __sk_buff` (uapi/linux/bpf.h).
const SKB_MARK_OFFSET: usize = 8;
const SKB_INGRESS_IFINDEX_OFFSET: usize = 36;
const SKB_IFINDEX_OFFSET: usize = 40;
const MARK: u32 = 0x5643;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const PSH: u8 = 0x08;

const CLIENT: [u8; 4] = [10, 0, 0, 2];
const SERVER: [u8; 4] = [192, 0, 2, 10];
const ISN: u32 = 1_000_000;

struct Lab {
    ebpf: Ebpf,
    counters: Counters,
    /// The client port of the flow the helpers send on ([`Lab::next_flow`] moves to another).
    sport: u16,
    /// Standing for the daemon's TLS listener (observation acts only while it exists).
    _listener: Option<(std::net::TcpListener, std::net::TcpListener)>,
}

impl Lab {
    fn new() -> Self {
        Self::with_daemon(true)
    }

    fn with_daemon(listening: bool) -> Self {
        let config = Config::default();
        let (mut ebpf, counters) =
            load_object(&DatapathConfig::default(), &config.intercepts()).expect("loading");
        let mut switch: Array<&mut MapData, ObserveConfig> =
            Array::try_from(ebpf.map_mut("TLS_OBSERVE").unwrap()).unwrap();
        switch
            .set(
                0,
                ObserveConfig {
                    enabled: 1,
                    _reserved: 0,
                },
                0,
            )
            .unwrap();
        let listener = listening.then(|| {
            let port = config.https.listen_port;
            let v6 =
                socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
            v6.set_only_v6(true).unwrap();
            v6.bind(&std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)).into())
                .unwrap();
            v6.listen(8).unwrap();
            let v4 = std::net::TcpListener::bind(("0.0.0.0", port)).expect("binding the TLS port");
            (v4, std::net::TcpListener::from(v6))
        });
        Lab {
            ebpf,
            counters,
            sport: 40000,
            _listener: listener,
        }
    }

    /// Run `frame` through `program`; (return value, mark afterwards).
    fn run(&mut self, program: &str, frame: &[u8]) -> (u32, u32) {
        let prog: &mut SchedClassifier =
            self.ebpf.program_mut(program).unwrap().try_into().unwrap();
        let mut ctx_in = [0u8; SKB_IFINDEX_OFFSET + 4];
        ctx_in[SKB_INGRESS_IFINDEX_OFFSET..][..4].copy_from_slice(&1u32.to_ne_bytes());
        ctx_in[SKB_IFINDEX_OFFSET..][..4].copy_from_slice(&1u32.to_ne_bytes());
        let mut ctx_out = [0u8; 256];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&ctx_in),
                ctx_out: Some(&mut ctx_out),
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        let mark = u32::from_ne_bytes(ctx_out[SKB_MARK_OFFSET..][..4].try_into().unwrap());
        (r.return_value, mark)
    }

    /// A client → server packet through the classifier; returns the mark.
    fn up(&mut self, seq: u32, flags: u8, payload: &[u8]) -> u32 {
        let frame = tcp_frame(CLIENT, SERVER, self.sport, 443, seq, flags, payload);
        let (ret, mark) = self.run(CLASSIFIER_PROGRAM, &frame);
        assert_eq!(ret, 0, "TC_ACT_OK always");
        mark
    }

    /// A server → client packet through the egress counter.
    fn down(&mut self, flags: u8, payload: &[u8]) {
        let frame = tcp_frame(SERVER, CLIENT, 443, self.sport, 9, flags, payload);
        let (ret, mark) = self.run(EGRESS_PROGRAM, &frame);
        assert_eq!(
            (ret, mark),
            (0, 0),
            "the egress counter never changes a packet"
        );
    }

    fn count(&self, v: Verdict) -> u64 {
        self.counters.snapshot().unwrap().get(Service::Https, v)
    }

    fn events(&mut self) -> Vec<Event> {
        let mut ring = RingBuf::try_from(self.ebpf.map_mut("TLS_EVENTS").unwrap()).unwrap();
        let mut out = Vec::new();
        while let Some(item) = ring.next() {
            out.push(decode(&item).expect("a record the daemon understands"));
        }
        out
    }

    fn hellos(&mut self) -> Vec<Hello> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Hello(h) => Some(h),
                Event::End { .. } => None,
            })
            .collect()
    }

    fn flow(&mut self) -> Option<ObservedFlow> {
        let key = self.key();
        let flows: HashMap<&mut MapData, TlsFlowKey, ObservedFlow> =
            HashMap::try_from(self.ebpf.map_mut("TLS_FLOWS").unwrap()).unwrap();
        flows.get(&key, 0).ok()
    }

    /// The current flow's key.
    fn key(&self) -> TlsFlowKey {
        let mut k = TlsFlowKey {
            client_port_be: self.sport.to_be(),
            server_port_be: 443u16.to_be(),
            family: velocache_common::tls::FAMILY_V4,
            ..TlsFlowKey::default()
        };
        k.client[..4].copy_from_slice(&CLIENT);
        k.server[..4].copy_from_slice(&SERVER);
        k
    }

    /// Send the next packets on a new flow (another client port), with no events pending.
    fn next_flow(&mut self) {
        self.sport += 1;
        self.events();
    }

    fn policy(&mut self, entries: &[(&str, u32, u32)]) {
        let mut policy: HashMap<&mut MapData, _, SniPolicy> =
            HashMap::try_from(self.ebpf.map_mut("TLS_SNI_POLICY").unwrap()).unwrap();
        for &(text, rule, action) in entries {
            policy
                .insert(sni_key(text.as_bytes()), SniPolicy { rule, action }, 0)
                .unwrap();
        }
    }

    /// SYN then the hello's segments; returns the mark of the last.
    fn connect_and_send(&mut self, segments: &[&[u8]]) -> u32 {
        assert_eq!(self.up(ISN, SYN, b""), 0, "a SYN is never marked");
        let mut seq = ISN + 1;
        let mut mark = 0;
        for s in segments {
            mark = self.up(seq, ACK | PSH, s);
            seq += s.len() as u32;
        }
        mark
    }
}

/// Ethernet + IPv4 + TCP (no options) + payload.
fn tcp_frame(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    seq: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    let total = (20 + 20 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// A ClientHello record with `extensions` (type, body), in this order.
fn hello(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0x5a; 32]);
    body.push(32);
    body.extend_from_slice(&[0x11; 32]);
    body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02, 1, 0]);
    let mut exts = Vec::new();
    for (ty, data) in extensions {
        exts.extend_from_slice(&ty.to_be_bytes());
        exts.extend_from_slice(&(data.len() as u16).to_be_bytes());
        exts.extend_from_slice(data);
    }
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

fn sni(name: &str) -> (u16, Vec<u8>) {
    let mut d = ((name.len() + 3) as u16).to_be_bytes().to_vec();
    d.push(0);
    d.extend_from_slice(&(name.len() as u16).to_be_bytes());
    d.extend_from_slice(name.as_bytes());
    (0, d)
}

fn alpn(names: &[&str]) -> (u16, Vec<u8>) {
    let mut list = Vec::new();
    for n in names {
        list.push(n.len() as u8);
        list.extend_from_slice(n.as_bytes());
    }
    let mut d = (list.len() as u16).to_be_bytes().to_vec();
    d.extend_from_slice(&list);
    (16, d)
}

fn padding(n: usize) -> (u16, Vec<u8>) {
    (21, vec![0; n])
}

/// What rustls sends for `name` (no SNI for an IP address) offering `protocols`.
fn rustls_hello(name: &str, protocols: &[&str]) -> Vec<u8> {
    use rustls::{ClientConfig, ClientConnection, RootCertStore, pki_types::ServerName};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    cfg.alpn_protocols = protocols.iter().map(|p| p.as_bytes().to_vec()).collect();
    let mut conn = ClientConnection::new(
        Arc::new(cfg),
        ServerName::try_from(name.to_string()).unwrap(),
    )
    .unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

#[test]
fn a_hello_in_one_segment_is_read_and_reported_without_steering() {
    in_fresh_netns(|| {
        let mut lab = Lab::new();
        let record = rustls_hello("Origin.Example.lab", &["h2", "http/1.1"]);
        assert_eq!(lab.connect_and_send(&[&record]), 0, "forwarded, not marked");
        assert_eq!(lab.count(Verdict::ObservedNew), 1);
        assert_eq!(lab.count(Verdict::Observed), 1);
        assert_eq!(
            lab.count(Verdict::SteeredListener) + lab.count(Verdict::AssignFailed),
            0
        );
        let h = lab.hellos();
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h[0].status, HELLO_PARSED);
        assert_eq!(h[0].sni.as_deref(), Some("Origin.Example.lab"), "as sent");
        assert_eq!(h[0].alpn, ["h2", "http/1.1"]);
        assert_eq!((h[0].policy_rule, h[0].policy_action), (NO_RULE, SNI_PASS));
        let f = lab.flow().expect("the flow is tracked");
        assert_eq!((f.packets_up, f.bytes_up), (2, record.len() as u64));
        // The reader does not look twice: the next data segment is only counted.
        lab.up(ISN + 1 + record.len() as u32, ACK | PSH, b"more");
        assert!(lab.hellos().is_empty());
        assert_eq!(lab.count(Verdict::Observed), 2);
    });
}

#[test]
fn a_hello_without_sni_and_one_from_an_ip_address_are_read_whole() {
    in_fresh_netns(|| {
        let mut lab = Lab::new();
        lab.connect_and_send(&[&hello(&[alpn(&["h2"]), padding(8)])]);
        let h = lab.hellos();
        assert_eq!((h[0].status, h[0].sni.as_deref()), (HELLO_PARSED, None));
        assert_eq!(h[0].alpn, ["h2"]);
        lab.next_flow();
        lab.connect_and_send(&[&rustls_hello("192.0.2.10", &[])]);
        let h = lab.hellos();
        assert_eq!((h[0].status, h[0].sni.as_deref()), (HELLO_PARSED, None));
    });
}

#[test]
fn a_hello_split_across_segments_is_read_on_in_the_next_one() {
    in_fresh_netns(|| {
        let mut lab = Lab::new();
        // ALPN, a big padding extension, then the server name: the cut falls inside the padding,
        // so the next extension header (the name's) is in the second segment.
        let record = hello(&[alpn(&["h2"]), padding(1400), sni("split.example.lab")]);
        let cut = record.len() - 100;
        lab.connect_and_send(&[&record[..cut], &record[cut..]]);
        let h = lab.hellos();
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!((h[0].status, h[0].sni.as_deref()), (HELLO_PENDING, None));
        assert_eq!(h[0].alpn, ["h2"]);
        assert_eq!(
            (h[1].status, h[1].sni.as_deref()),
            (HELLO_SPLIT, Some("split.example.lab"))
        );
    });
}

#[test]
fn a_name_straddling_two_segments_is_reported_as_such_not_guessed() {
    in_fresh_netns(|| {
        let mut lab = Lab::new();
        let record = hello(&[padding(600), sni("straddle.example.lab"), alpn(&["h2"])]);
        // Cut in the middle of the name itself.
        let at = record.windows(8).position(|w| w == b"straddle").unwrap() + 4;
        lab.connect_and_send(&[&record[..at], &record[at..]]);
        let h = lab.hellos();
        assert_eq!(h.len(), 1, "reading stops: {h:?}");
        assert_eq!(
            (h[0].status, h[0].sni.as_deref()),
            (HELLO_SPLIT_PARTIAL, None)
        );
    });
}

#[test]
fn garbage_truncated_and_odd_hellos_are_reported_never_misread() {
    in_fresh_netns(|| {
        let mut lab = Lab::new();
        lab.connect_and_send(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]);
        assert_eq!(lab.hellos()[0].status, HELLO_NOT_TLS);

        // A handshake message longer than its record (it continues in a second record).
        let mut multi = hello(&[sni("a.lab")]);
        multi[3..5].copy_from_slice(&20u16.to_be_bytes());
        lab.next_flow();
        lab.connect_and_send(&[&multi]);
        assert_eq!(lab.hellos()[0].status, HELLO_UNSUPPORTED);

        // The last extension claims more than the extensions hold.
        let mut bad = hello(&[sni("a.lab"), alpn(&["h2"])]);
        let n = bad.len();
        bad[n - 7..n - 5].copy_from_slice(&50u16.to_be_bytes());
        lab.next_flow();
        lab.connect_and_send(&[&bad]);
        assert_eq!(lab.hellos()[0].status, HELLO_MALFORMED);

        // Every truncation of a real hello: whatever is reported, a name is never a wrong one.
        let record = rustls_hello("trunc.example.lab", &["h2"]);
        for len in 1..record.len() {
            lab.next_flow();
            lab.connect_and_send(&[&record[..len]]);
            for h in lab.hellos() {
                assert!(
                    h.sni.is_none() || h.sni.as_deref() == Some("trunc.example.lab"),
                    "cut at {len}: {h:?}"
                );
                assert_ne!(h.status, HELLO_PARSED, "cut at {len}: reported whole");
            }
        }
    });
}

#[test]
fn a_denied_name_is_reset_by_the_gateways_stack_and_stays_reset() {
    in_fresh_netns(|| {
        let mut lab = Lab::new();
        // As `observe::policy` writes them: an earlier passthrough rule shadows a later deny.
        lab.policy(&[
            ("ok.ads.lab", 0, SNI_PASS),
            (".ads.lab", 1, SNI_DENY),
            ("tracker.lab", 1, SNI_DENY),
        ]);
        let mark = lab.connect_and_send(&[&rustls_hello("x.y.ads.lab", &["h2"])]);
        assert_eq!(mark, MARK, "marked for local delivery, no socket: a reset");
        assert_eq!(lab.count(Verdict::DeniedSni), 1);
        let h = lab.hellos();
        assert_eq!((h[0].policy_rule, h[0].policy_action), (1, SNI_DENY));
        assert_eq!(lab.up(ISN + 600, ACK, b"again"), MARK, "later packets too");
        assert_eq!(lab.count(Verdict::DeniedSni), 2);

        for (name, denied) in [
            ("tracker.lab", true),
            ("ok.ads.lab", false),
            ("ads.lab", false),
        ] {
            lab.next_flow();
            let mark = lab.connect_and_send(&[&rustls_hello(name, &[])]);
            assert_eq!(mark == MARK, denied, "{name}");
        }
    });
}

#[test]
fn without_the_daemon_nothing_is_observed_or_denied() {
    in_fresh_netns(|| {
        let mut lab = Lab::with_daemon(false);
        lab.policy(&[("denied.lab", 0, SNI_DENY)]);
        let mark = lab.connect_and_send(&[&rustls_hello("denied.lab", &[])]);
        assert_eq!(mark, 0, "fail-open");
        assert!(lab.flow().is_none());
        assert_eq!(lab.count(Verdict::ObservedNew), 0);
        assert_eq!(lab.count(Verdict::PassedNoListener), 1, "the SYN");
        assert_eq!(
            lab.count(Verdict::PassedUntracked),
            1,
            "the hello: never to a listener"
        );
    });
}

#[test]
fn learned_and_listed_destinations_are_steered_until_they_expire() {
    in_fresh_netns(|| {
        let mut lab = Lab::new();
        {
            let mut v4: HashMap<&mut MapData, [u8; 4], SteerEntry> =
                HashMap::try_from(lab.ebpf.map_mut("TLS_STEER_V4").unwrap()).unwrap();
            v4.insert(
                SERVER,
                SteerEntry {
                    expires_ns: monotonic_ns() + 60_000_000_000,
                },
                0,
            )
            .unwrap();
        }
        lab.up(ISN, SYN, b"");
        assert!(lab.flow().is_none(), "steered, not observed");
        assert_eq!(
            lab.count(Verdict::SteeredListener) + lab.count(Verdict::AssignFailed),
            1
        );
        {
            let mut v4: HashMap<&mut MapData, [u8; 4], SteerEntry> =
                HashMap::try_from(lab.ebpf.map_mut("TLS_STEER_V4").unwrap()).unwrap();
            v4.insert(
                SERVER,
                SteerEntry {
                    expires_ns: monotonic_ns() - 1,
                },
                0,
            )
            .unwrap();
        }
        lab.up(ISN + 7, SYN, b"");
        assert!(lab.flow().is_some(), "expired: observed");

        lab.next_flow();
        {
            let mut p: LpmTrie<&mut MapData, [u8; 4], u32> =
                LpmTrie::try_from(lab.ebpf.map_mut("TLS_STEER_PREFIX_V4").unwrap()).unwrap();
            p.insert(&Key::new(24, [192, 0, 2, 0]), 1, 0).unwrap();
        }
        lab.up(ISN, SYN, b"");
        assert!(lab.flow().is_none(), "in a steer prefix");
    });
}

#[test]
fn the_egress_counter_counts_the_servers_side_and_both_fins_end_the_flow() {
    in_fresh_netns(|| {
        let mut lab = Lab::new();
        let record = rustls_hello("count.lab", &[]);
        lab.connect_and_send(&[&record]);
        lab.down(ACK | PSH, &[0u8; 1000]);
        lab.down(ACK | PSH, &[0u8; 500]);
        let f = lab.flow().unwrap();
        assert_eq!((f.packets_down, f.bytes_down), (2, 1500));
        lab.events();
        lab.up(ISN + 1 + record.len() as u32, ACK | FIN, b"");
        assert!(lab.events().is_empty(), "one FIN is not the end");
        lab.down(ACK | FIN, b"");
        let ends: Vec<_> = lab
            .events()
            .into_iter()
            .filter_map(|e| match e {
                Event::End {
                    key: k,
                    flow,
                    status,
                } => Some((k, flow, status)),
                Event::Hello(_) => None,
            })
            .collect();
        assert_eq!(ends.len(), 1);
        assert_eq!((ends[0].0, ends[0].2), (lab.key(), END_FIN));
        assert_eq!(ends[0].1.bytes_up, record.len() as u64);
        assert_eq!(ends[0].1.bytes_down, 1500);
    });
}

#[test]
fn a_mid_flow_packet_of_an_unknown_flow_is_never_given_to_a_listener() {
    in_fresh_netns(|| {
        let mut lab = Lab::new();
        assert_eq!(
            lab.up(ISN + 1, ACK | PSH, b"data of a flow older than the daemon"),
            0
        );
        assert_eq!(lab.count(Verdict::PassedUntracked), 1);
        assert_eq!(
            lab.count(Verdict::SteeredListener) + lab.count(Verdict::AssignFailed),
            0
        );
    });
}

#[test]
fn the_reader_and_the_classifier_verify_well_within_the_budget() {
    in_fresh_netns(|| {
        let lab = Lab::new();
        for name in [HELLO_PROGRAM, CLASSIFIER_PROGRAM, EGRESS_PROGRAM] {
            let prog: &SchedClassifier = lab.ebpf.program(name).unwrap().try_into().unwrap();
            let n = prog
                .info()
                .unwrap()
                .verified_instruction_count()
                .unwrap_or(0);
            // The kernel's limit is 1M; a quarter leaves room for what comes next.
            assert!(n < 250_000, "{name}: {n} instructions verified");
            eprintln!("{name}: {n} instructions verified");
        }
    });
}

#[test]
fn ipv6_flows_are_keyed_and_read_too() {
    in_fresh_netns(|| {
        let mut lab = Lab::new();
        let record = rustls_hello("v6.example.lab", &["h2"]);
        let c: [u8; 16] = "fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let s: [u8; 16] = "fd99::10".parse::<std::net::Ipv6Addr>().unwrap().octets();
        for (seq, flags, payload) in [(ISN, SYN, &b""[..]), (ISN + 1, ACK | PSH, &record[..])] {
            let (ret, mark) = lab.run(CLASSIFIER_PROGRAM, &tcp6_frame(c, s, seq, flags, payload));
            assert_eq!((ret, mark), (0, 0));
        }
        let h = lab.hellos();
        assert_eq!(h[0].sni.as_deref(), Some("v6.example.lab"));
        let (client, server) = crate::observe::events::endpoints(&h[0].key);
        assert_eq!(client.ip(), IpAddr::V6(c.into()));
        assert_eq!(server.to_string(), "[fd99::10]:443");
    });
}

fn tcp6_frame(src: [u8; 16], dst: [u8; 16], seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![
        0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x86, 0xdd, 0x60, 0, 0, 0,
    ];
    f.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[6, 64]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&443u16.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}
