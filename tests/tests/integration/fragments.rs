//! Fragments follow their first fragment: UDP datagrams larger than the MTU, to intercepted
//! ports (SIP 5060, DNS 53), arrive whole and byte-identical at the far end and are logged by
//! the daemon — IPv4 and IPv6, in order, and when their fragments arrive last-first.
//!
//! Senders and the receiver are `tests/scripts/datagrams.py`: SIP INVITEs of exact sizes (a
//! large SDP body, or long header values as in RFC 4475's `longreq`) sent by the client's
//! kernel, which fragments them in order; UDP datagrams cut into fragments by hand and sent in
//! a chosen order through a raw socket; DNS queries padded past the MTU that ask for a 4.5 KB
//! answer.
use std::{path::PathBuf, time::Duration};

use velocache_tests::{Background, Daemon, Lab, addr, dns::unbound_zone, require_tools};

const WAIT: Duration = Duration::from_secs(20);
/// Message sizes from the issue: an INVITE with ICE candidates, a video offer, the UDP limit.
const SIZES: [&str; 3] = ["1600", "8000", "60000"];

fn script() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scripts/datagrams.py")
        .display()
        .to_string()
}

/// A receiver on `addr:port` in `origin` for `count` datagrams; ready when this returns.
fn receiver(lab: &Lab, addr: &str, port: &str, count: usize) -> Background {
    let s = script();
    let count = count.to_string();
    let r = lab
        .origin
        .spawn(&["python3", &s, "recv", addr, port, &count, "30"]);
    for _ in 0..400 {
        if r.stdout().contains("ready") {
            return r;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("the receiver did not start: {}", r.stderr());
}

/// Wait for the receiver to exit; its `got LEN SHA SOURCE` lines.
fn received(mut r: Background) -> Vec<(String, String)> {
    assert!(
        r.wait_timeout(Duration::from_secs(40)).is_some(),
        "the receiver did not finish"
    );
    r.stdout()
        .lines()
        .filter_map(|l| l.strip_prefix("got "))
        .map(|l| {
            let mut f = l.split_whitespace();
            let len_sha = format!("{} {}", f.next().unwrap_or(""), f.next().unwrap_or(""));
            (len_sha, f.next().unwrap_or("").to_string())
        })
        .collect()
}

/// `sent LEN SHA …` → ("LEN SHA", rest).
fn sent(line: &str) -> (String, String) {
    let mut f = line
        .trim()
        .strip_prefix("sent ")
        .unwrap()
        .split_whitespace();
    let len_sha = format!("{} {}", f.next().unwrap(), f.next().unwrap());
    (len_sha, f.collect::<Vec<_>>().join(" "))
}

fn sip_invites_arrive_whole_and_logged(client: &str, dst: &str) {
    require_tools(&["python3"]);
    let lab = Lab::new();
    let daemon = Daemon::start(&lab, "");
    let rx = receiver(&lab, dst, "5060", 4);
    let s = script();
    let mut want = Vec::new();
    for size in SIZES {
        want.push(sent(
            &lab.client
                .run_ok(&["python3", &s, "sip", client, dst, size]),
        ));
    }
    want.push(sent(
        &lab.client
            .run_ok(&["python3", &s, "sip", client, dst, "3500", "long"]),
    ));
    let got = received(rx);
    let got: Vec<&String> = got.iter().map(|(d, _)| d).collect();
    for (digest, call_id) in &want {
        assert!(
            got.contains(&digest),
            "INVITE {call_id} ({digest}) did not arrive whole; got {got:?}"
        );
        daemon.wait_for_log(WAIT, |l| l["message"] == "sip" && l["call_id"] == *call_id);
    }
    daemon.wait_for_log(WAIT, |l| {
        l["message"] == "kernel counters"
            && l["for_service"] == "sip"
            && l["steered_fragment"].as_u64() > Some(0)
            && l["lookup_assigned"].as_u64() >= Some(4)
    });
}

#[test]
fn large_sip_invites_over_udp_arrive_whole_and_are_logged() {
    sip_invites_arrive_whole_and_logged(addr::CLIENT, addr::ORIGIN);
}

#[test]
fn large_sip_invites_over_udp_and_ipv6_arrive_whole_and_are_logged() {
    sip_invites_arrive_whole_and_logged(addr::CLIENT6, addr::ORIGIN6);
}

#[test]
fn dns_queries_and_answers_larger_than_the_mtu_pass_whole_and_are_logged() {
    require_tools(&["python3", "unbound"]);
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let _zone = unbound_zone(&lab.origin, dir.path(), &[addr::ORIGIN, addr::ORIGIN6], "");
    let daemon = Daemon::start(&lab, "");
    // The zone's `big.test.lab` TXT set: 40 strings of 96 `x` and a two-digit number (the
    // zone file's quotes are part of the data).
    let mut txt: Vec<String> = (0..40)
        .map(|i| format!("\"{}{i:02}\"", "x".repeat(96)))
        .collect();
    txt.sort();
    let want = format!("an=40 txt={}", txt.join(","));
    let s = script();
    for server in [addr::ORIGIN, addr::ORIGIN6] {
        for pad in SIZES {
            let out = lab
                .client
                .run_ok(&["python3", &s, "dns", server, "big.test.lab", pad]);
            assert!(out.contains("rcode=0 tc=0"), "{out}");
            assert!(out.trim_end().ends_with(&want), "{out}");
        }
    }
    // (The client's IPv6 source is whichever of its addresses the kernel picks.)
    for client in [addr::CLIENT, "[fd77:1::"] {
        daemon.wait_for_log(WAIT, |l| {
            l["message"] == "query"
                && l["transport"] == "udp"
                && l["qname"] == "big.test.lab."
                && l["client"].as_str().is_some_and(|c| c.starts_with(client))
        });
    }
    daemon.wait_for_log(WAIT, |l| {
        l["message"] == "kernel counters"
            && l["for_service"] == "dns"
            && l["steered_fragment"].as_u64() > Some(0)
            && l["lookup_assigned"].as_u64() >= Some(6)
    });
}

#[test]
fn fragments_arriving_last_first_or_reversed_still_arrive_whole() {
    require_tools(&["python3"]);
    let lab = Lab::new();
    let daemon = Daemon::start(&lab, "");
    let s = script();
    for (client, dst, order) in [
        (addr::CLIENT, addr::ORIGIN, "last-first"),
        (addr::CLIENT6, addr::ORIGIN6, "reverse"),
    ] {
        let rx = receiver(&lab, dst, "5060", 1);
        let (digest, _) = sent(&lab.client.run_ok(&[
            "python3", &s, "raw", client, dst, "40100", "5060", "8000", order,
        ]));
        let got = received(rx);
        // Whole, and straight from the client: the first fragment came last and followed the
        // others past the daemon.
        assert_eq!(got, vec![(digest, client.to_string())], "{order}");
    }
    daemon.wait_for_log(WAIT, |l| {
        l["message"] == "kernel counters"
            && l["for_service"] == "sip"
            && l["passed_fragments_ahead"].as_u64() >= Some(2)
    });
}
