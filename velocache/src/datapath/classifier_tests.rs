//! The classifier run on crafted frames through `BPF_PROG_TEST_RUN`, without a live network
//! (STYLE.md §4). Each test runs in a thread moved into a fresh network namespace, so socket
//! lookups and the FIB see only what the test put there. Needs root and BPF, like the daemon
//! (`crate::testutil`).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use velocache_common::{CLASSIFIER_PROGRAM, IPPROTO_TCP, IPPROTO_UDP, Service, Verdict};

use super::{Counters, load_object};
use crate::{
    config::{Config, DatapathConfig},
    testutil::require_root,
};

/// Offsets in `struct __sk_buff` (uapi/linux/bpf.h).
const SKB_MARK_OFFSET: usize = 8;
const SKB_INGRESS_IFINDEX_OFFSET: usize = 36;
const SKB_IFINDEX_OFFSET: usize = 40;

/// Run `f` on a thread that lives in a new network namespace set up like a small gateway: `lo`
/// up, forwarding on, a veth uplink with default routes. (The FIB helper answers "not
/// forwarded" for local *and* unroutable destinations, and "forwarding disabled" before
/// anything else, so the namespace must be able to forward for the verdicts to mean anything.)
pub(super) fn in_fresh_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    require_root("a network namespace and loading BPF programs");
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare(CLONE_NEWNET)");
        // Commands forked from this thread run in its namespace.
        let sh = |cmd: &str| {
            let ok = std::process::Command::new("sh")
                .args(["-c", cmd])
                .status()
                .expect("sh")
                .success();
            assert!(ok, "`{cmd}` failed");
        };
        sh("ip link set lo up && sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1");
        sh("ip link add up0 type veth peer name up1 && ip link set up1 up && ip link set up0 up && ip addr add 10.200.0.1/24 dev up0 && ip -6 addr add fd20::1/64 dev up0 nodad");
        sh("ip route add default via 10.200.0.2 && ip -6 route add default via fd20::2");
        f()
    })
    .join()
    .expect("test thread panicked")
}

struct Harness {
    ebpf: aya::Ebpf,
    counters: Counters,
}

impl Harness {
    fn new(dp: DatapathConfig) -> Self {
        let config = Config::default();
        let (ebpf, counters) = load_object(&dp, &config.intercepts()).expect("loading the object");
        Harness { ebpf, counters }
    }

    /// Run one frame as if received on `lo` (ifindex 1 in a fresh namespace); return
    /// (program return value, skb mark afterwards).
    fn run(&mut self, frame: &[u8]) -> (u32, u32) {
        self.try_run(frame).expect("BPF_PROG_TEST_RUN")
    }

    fn try_run(&mut self, frame: &[u8]) -> std::io::Result<(u32, u32)> {
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(CLASSIFIER_PROGRAM)
            .unwrap()
            .try_into()
            .unwrap();
        let mut ctx_in = [0u8; SKB_IFINDEX_OFFSET + 4];
        ctx_in[SKB_INGRESS_IFINDEX_OFFSET..][..4].copy_from_slice(&1u32.to_ne_bytes());
        ctx_in[SKB_IFINDEX_OFFSET..][..4].copy_from_slice(&1u32.to_ne_bytes());
        let mut ctx_out = [0u8; 256];
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&ctx_in),
                ctx_out: Some(&mut ctx_out),
                ..Default::default()
            })
            .map_err(|e| match e {
                aya::programs::ProgramError::SyscallError(s) => s.io_error,
                other => std::io::Error::other(other.to_string()),
            })?;
        let mark = u32::from_ne_bytes(
            ctx_out[SKB_MARK_OFFSET..SKB_MARK_OFFSET + 4]
                .try_into()
                .unwrap(),
        );
        Ok((result.return_value, mark))
    }

    fn count(&self, service: Service, verdict: Verdict) -> u64 {
        self.counters.snapshot().unwrap().get(service, verdict)
    }

    fn total(&self) -> u64 {
        self.counters
            .snapshot()
            .unwrap()
            .entries
            .iter()
            .map(|e| e.2)
            .sum()
    }
}

/// Ethernet + IP + TCP/UDP header, no payload beyond `payload`.
fn frame(src: IpAddr, dst: IpAddr, proto: u8, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let l4_len = if proto == IPPROTO_TCP { 20 } else { 8 } + payload.len();
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let total = (20 + l4_len) as u16;
            f.extend_from_slice(&[0x45, 0]);
            f.extend_from_slice(&total.to_be_bytes());
            f.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&0x86DDu16.to_be_bytes());
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(l4_len as u16).to_be_bytes());
            f.extend_from_slice(&[proto, 64]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        _ => panic!("mixed address families"),
    }
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    if proto == IPPROTO_TCP {
        // seq, ack, data offset 5, flags SYN, window, checksum, urgent.
        f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
    }
    f.extend_from_slice(payload);
    f
}

fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

fn client() -> IpAddr {
    v4([10, 0, 0, 2])
}

fn resolver() -> IpAddr {
    v4([10, 9, 9, 9])
}

#[test]
fn the_classifier_passes_the_verifier_with_kernel_logging_on_at_every_level() {
    // The kernel's log level is a frozen global: the verifier prunes the log calls it turns
    // off, so a load with logging off (the test default) never checks the stack those calls
    // need — each is a BPF subprogram whose frame adds to the classifier's, within 512 bytes in
    // all. The daemon logs at `info` and may be told `trace`: load as it would.
    log::set_max_level(log::LevelFilter::Trace);
    in_fresh_netns(|| {
        let h = Harness::new(DatapathConfig::default());
        assert_eq!(h.total(), 0);
    });
}

#[test]
fn ports_that_are_not_services_are_ignored_and_not_counted() {
    in_fresh_netns(|| {
        let mut h = Harness::new(DatapathConfig::default());
        let (ret, mark) = h.run(&frame(client(), resolver(), IPPROTO_UDP, 40000, 9999, b"x"));
        assert_eq!((ret, mark), (0, 0));
        assert_eq!(h.total(), 0);
    });
}

#[test]
fn without_a_daemon_socket_the_packet_passes_untouched() {
    in_fresh_netns(|| {
        let mut h = Harness::new(DatapathConfig::default());
        let (ret, mark) = h.run(&frame(client(), resolver(), IPPROTO_UDP, 40000, 53, b"q"));
        assert_eq!((ret, mark), (0, 0), "fail-open: TC_ACT_OK and no mark");
        assert_eq!(h.count(Service::Dns, Verdict::PassedNoListener), 1);
        let (_, mark) = h.run(&frame(client(), resolver(), IPPROTO_TCP, 40000, 80, b""));
        assert_eq!(mark, 0);
        assert_eq!(h.count(Service::Http, Verdict::PassedNoListener), 1);
    });
}

#[test]
fn bypassed_clients_and_destinations_are_counted_not_steered() {
    in_fresh_netns(|| {
        let dp = DatapathConfig {
            bypass_clients: vec!["10.0.0.0/24".parse().unwrap(), "fd00::/64".parse().unwrap()],
            bypass_destinations: vec!["192.0.2.7/32".parse().unwrap()],
            ..DatapathConfig::default()
        };
        let mut h = Harness::new(dp);
        let (_, mark) = h.run(&frame(client(), resolver(), IPPROTO_UDP, 40000, 53, b"q"));
        assert_eq!(mark, 0);
        assert_eq!(h.count(Service::Dns, Verdict::BypassedClient), 1);

        let other = v4([10, 0, 1, 2]);
        h.run(&frame(
            other,
            v4([192, 0, 2, 7]),
            IPPROTO_TCP,
            40000,
            443,
            b"",
        ));
        assert_eq!(h.count(Service::Https, Verdict::BypassedDestination), 1);

        let c6 = IpAddr::V6("fd00::2".parse::<Ipv6Addr>().unwrap());
        let d6 = IpAddr::V6("fd99::53".parse::<Ipv6Addr>().unwrap());
        h.run(&frame(c6, d6, IPPROTO_UDP, 40000, 5060, b"INVITE"));
        assert_eq!(h.count(Service::Sip, Verdict::BypassedClient), 1);
    });
}

#[test]
fn packets_for_the_gateways_own_addresses_are_left_alone() {
    in_fresh_netns(|| {
        let mut h = Harness::new(DatapathConfig::default());
        let (_, mark) = h.run(&frame(
            client(),
            v4([127, 0, 0, 1]),
            IPPROTO_TCP,
            40000,
            80,
            b"",
        ));
        assert_eq!(mark, 0);
        assert_eq!(h.count(Service::Http, Verdict::GatewayLocal), 1);
    });
}

#[test]
fn a_listening_daemon_socket_is_found_for_a_new_flow() {
    in_fresh_netns(|| {
        let mut h = Harness::new(DatapathConfig::default());
        // The DNS listener's port, on the wildcard address, as the daemon binds it.
        let _listener = std::net::UdpSocket::bind("0.0.0.0:15053").unwrap();
        let (ret, mark) = h.run(&frame(client(), resolver(), IPPROTO_UDP, 40000, 53, b"q"));
        assert_eq!(ret, 0);
        let steered = h.count(Service::Dns, Verdict::SteeredListener);
        let refused = h.count(Service::Dns, Verdict::AssignFailed);
        assert_eq!(
            h.count(Service::Dns, Verdict::PassedNoListener),
            0,
            "listener not found"
        );
        // BPF_PROG_TEST_RUN may run outside TC ingress, where bpf_sk_assign refuses; either
        // way the mark follows the assignment, never precedes it.
        assert_eq!(steered + refused, 1);
        assert_eq!(
            mark != 0,
            steered == 1,
            "mark set iff the packet was assigned"
        );
    });
}

#[test]
fn truncated_fragmented_and_odd_frames_pass_without_harm() {
    in_fresh_netns(|| {
        let mut h = Harness::new(DatapathConfig::default());
        let full = frame(client(), resolver(), IPPROTO_TCP, 40000, 80, b"");
        // Every truncation of a service packet: the program must bounds-check each read.
        let mut ran = 0;
        for len in 14..full.len() {
            match h.try_run(&full[..len]) {
                Ok(r) => {
                    assert_eq!(r, (0, 0), "truncated to {len}");
                    ran += 1;
                }
                // The kernel itself refuses some lengths (e.g. shorter than an IP header).
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => panic!("truncated to {len}: {e}"),
            }
        }
        assert!(ran > 10, "too few truncations reached the program ({ran})");
        // A non-first IPv4 fragment carries no L4 header: ignored.
        let mut frag = frame(client(), resolver(), IPPROTO_UDP, 40000, 53, b"q");
        frag[20] = 0x00;
        frag[21] = 0x10;
        assert_eq!(h.run(&frag), (0, 0));
        // Bad IHL, non-IP ethertype.
        let mut bad_ihl = frame(client(), resolver(), IPPROTO_UDP, 40000, 53, b"q");
        bad_ihl[14] = 0x43;
        assert_eq!(h.run(&bad_ihl), (0, 0));
        let mut arp = frame(client(), resolver(), IPPROTO_UDP, 40000, 53, b"q");
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert_eq!(h.run(&arp), (0, 0));
        assert_eq!(h.count(Service::Dns, Verdict::PassedNoListener), 0);
    });
}

/// An IPv4 fragment of a UDP datagram to `dport`: the first one (`offset` 0, more to come)
/// carries the UDP header, a later one only payload.
fn fragment_v4(id: u16, offset_units: u16, more: bool, dport: u16) -> Vec<u8> {
    let mut f = frame(client(), resolver(), IPPROTO_UDP, 40000, dport, &[7u8; 64]);
    f[18..20].copy_from_slice(&id.to_be_bytes());
    let flags = offset_units | if more { 0x2000 } else { 0 };
    f[20..22].copy_from_slice(&flags.to_be_bytes());
    if offset_units != 0 {
        // No UDP header in a later fragment: overwrite it with payload bytes.
        f[34..42].copy_from_slice(&[7u8; 8]);
    }
    f
}

/// An IPv6 fragment (fragment header right after the fixed header) of a UDP datagram.
fn fragment_v6(id: u32, offset_units: u16, more: bool, dport: u16) -> Vec<u8> {
    let c6 = IpAddr::V6("fd00::2".parse::<Ipv6Addr>().unwrap());
    let d6 = IpAddr::V6("fd99::53".parse::<Ipv6Addr>().unwrap());
    let whole = frame(c6, d6, IPPROTO_UDP, 40000, dport, &[7u8; 64]);
    let (head, l4) = whole.split_at(14 + 40);
    let mut f = head.to_vec();
    f[14 + 6] = 44; // next header: fragment
    let payload_len = u16::from_be_bytes([f[18], f[19]]) + 8;
    f[18..20].copy_from_slice(&payload_len.to_be_bytes());
    f.push(IPPROTO_UDP);
    f.push(0);
    f.extend_from_slice(&((offset_units << 3) | u16::from(more)).to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    if offset_units == 0 {
        f.extend_from_slice(l4);
    } else {
        f.extend_from_slice(&[7u8; 72]);
    }
    f
}

#[test]
fn a_first_fragment_is_classified_by_its_ports_in_ipv4_and_ipv6() {
    in_fresh_netns(|| {
        let mut h = Harness::new(DatapathConfig::default());
        assert_eq!(h.run(&fragment_v4(0x1234, 0, true, 53)), (0, 0));
        assert_eq!(h.run(&fragment_v6(0x5678_9abc, 0, true, 53)), (0, 0));
        assert_eq!(h.count(Service::Dns, Verdict::PassedNoListener), 2);
        // An IPv6 "atomic" fragment (offset 0, no more) is a whole datagram.
        assert_eq!(h.run(&fragment_v6(7, 0, false, 5060)), (0, 0));
        assert_eq!(h.count(Service::Sip, Verdict::PassedNoListener), 1);
    });
}

#[test]
fn later_fragments_ahead_of_their_first_take_the_whole_datagram_past() {
    in_fresh_netns(|| {
        let mut h = Harness::new(DatapathConfig::default());
        // The last fragment arrives first: no ports, no decision yet — forwarded, not counted.
        assert_eq!(h.run(&fragment_v4(0x1234, 185, false, 53)), (0, 0));
        assert_eq!(h.run(&fragment_v6(0x42, 175, false, 53)), (0, 0));
        assert_eq!(h.total(), 0);
        // Its first fragment follows it past, even with a daemon socket to take it.
        let _listener = std::net::UdpSocket::bind("0.0.0.0:15053").unwrap();
        assert_eq!(h.run(&fragment_v4(0x1234, 0, true, 53)), (0, 0));
        assert_eq!(h.run(&fragment_v6(0x42, 0, true, 53)), (0, 0));
        assert_eq!(h.count(Service::Dns, Verdict::PassedFragmentsAhead), 2);
        assert_eq!(h.count(Service::Dns, Verdict::SteeredListener), 0);
        assert_eq!(h.count(Service::Dns, Verdict::AssignFailed), 0);
        // Another datagram (another ID) of the same flow is classified on its own.
        h.run(&fragment_v4(0x1235, 0, true, 53));
        assert_eq!(
            h.count(Service::Dns, Verdict::SteeredListener)
                + h.count(Service::Dns, Verdict::AssignFailed),
            1
        );
    });
}

/// `bpf_ktime_get_ns()`'s clock.
fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

#[test]
fn a_later_fragment_follows_its_steered_first_fragment_to_the_same_socket() {
    use aya::maps::HashMap;
    use velocache_common::steer::{FAMILY_V4, FRAG_STEERED, FragKey, FragValue};
    in_fresh_netns(|| {
        let mut h = Harness::new(DatapathConfig::default());
        let _listener = std::net::UdpSocket::bind("0.0.0.0:15053").unwrap();
        // What the classifier leaves when it steers a first fragment (BPF_PROG_TEST_RUN does not
        // run at TC ingress, so its own assignment would be refused here).
        let mut key = FragKey {
            id: u32::from(0x2222u16.to_be()),
            family: FAMILY_V4,
            proto: IPPROTO_UDP,
            ..FragKey::default()
        };
        key.src[..4].copy_from_slice(&[10, 0, 0, 2]);
        key.dst[..4].copy_from_slice(&[10, 9, 9, 9]);
        let value = |stamp_ns| FragValue {
            decision: FRAG_STEERED,
            service: Service::Dns as u32,
            sport_be: 40000u16.to_be(),
            dport_be: 53u16.to_be(),
            listen_port: 15053,
            stamp_ns,
        };
        {
            let mut frags: HashMap<_, FragKey, FragValue> =
                HashMap::try_from(h.ebpf.map_mut("FRAGMENTS").unwrap()).unwrap();
            frags.insert(key, value(monotonic_ns()), 0).unwrap();
        }
        // The later fragment finds the listener through the first fragment's ports: the socket
        // is found (and the assignment refused outside TC ingress).
        assert_eq!(h.run(&fragment_v4(0x2222, 185, false, 53)), (0, 0));
        assert_eq!(h.count(Service::Dns, Verdict::AssignFailed), 1);
        assert_eq!(h.count(Service::Dns, Verdict::PassedNoListener), 0);

        // An entry older than the reassembly timeout is another datagram's (IDs wrap): ignored.
        key.id = u32::from(0x3333u16.to_be());
        {
            let mut frags: HashMap<_, FragKey, FragValue> =
                HashMap::try_from(h.ebpf.map_mut("FRAGMENTS").unwrap()).unwrap();
            frags
                .insert(key, value(monotonic_ns() - 31_000_000_000), 0)
                .unwrap();
        }
        assert_eq!(h.run(&fragment_v4(0x3333, 185, false, 53)), (0, 0));
        assert_eq!(h.count(Service::Dns, Verdict::AssignFailed), 1);
    });
}

#[test]
fn truncated_fragment_headers_pass_without_harm() {
    in_fresh_netns(|| {
        let mut h = Harness::new(DatapathConfig::default());
        let full = fragment_v6(9, 0, true, 53);
        for len in 54..full.len() {
            match h.try_run(&full[..len]) {
                Ok(r) => assert_eq!(r.1, 0, "truncated to {len}"),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => panic!("truncated to {len}: {e}"),
            }
        }
    });
}
