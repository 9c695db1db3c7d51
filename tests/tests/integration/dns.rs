//! DNS: the transparent caching forwarder, with unbound in `origin` serving the test zones and
//! `dig` in `client` asking whatever resolver it likes.
use std::time::Duration;

use serde_json::Value;
use velocache_tests::{
    Daemon, Lab, addr,
    dns::{DigAnswer, dig, signed_zone, unbound_zone},
    require_tools,
    servers::TestPki,
};

const WAIT: Duration = Duration::from_secs(10);

fn upstream_config(extra: &str) -> String {
    format!(
        "[dns]\nupstreams = [\"{}:53\"]\nupstream_timeout_ms = 700\n{extra}",
        addr::ORIGIN
    )
}

/// The `query` log lines for `qname` (with its trailing dot), in order.
fn queries(daemon: &Daemon, qname: &str) -> Vec<Value> {
    daemon
        .logs()
        .into_iter()
        .filter(|l| l["message"] == "query" && l["qname"] == qname)
        .collect()
}

/// Wait until `n` query lines for `qname` are logged; return them.
fn wait_queries(daemon: &Daemon, qname: &str, n: usize) -> Vec<Value> {
    daemon.wait_for_log(WAIT, |_| queries(daemon, qname).len() >= n);
    queries(daemon, qname)
}

fn ask(lab: &Lab, server: &str, args: &[&str]) -> DigAnswer {
    let at = format!("@{server}");
    let mut all = vec![at.as_str()];
    all.extend_from_slice(args);
    dig(&lab.client, &all)
}

#[test]
fn first_query_misses_and_the_second_hits_with_a_lower_ttl() {
    require_tools(&["dig", "unbound"]);
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let _zone = unbound_zone(&lab.origin, dir.path(), &[addr::ORIGIN, addr::ORIGIN6], "");
    let daemon = Daemon::start(&lab, &upstream_config(""));

    let first = ask(&lab, addr::ORIGIN, &["www.test.lab"]);
    assert_eq!(first.status, "NOERROR", "{}", first.text);
    assert_eq!(first.answers[0].3, "10.9.9.9");
    assert_eq!(first.ttl(), Some(300));
    let lines = wait_queries(&daemon, "www.test.lab.", 1);
    assert_eq!(lines[0]["cache"], "miss");
    assert_eq!(lines[0]["level"], "info");
    assert_eq!(lines[0]["service"], "dns");
    assert_eq!(lines[0]["upstream"], format!("{}:53", addr::ORIGIN));
    assert_eq!(
        lines[0]["client"].as_str().unwrap().split(':').next(),
        Some(addr::CLIENT)
    );
    assert_eq!(lines[0]["qtype"], "A");
    assert_eq!(lines[0]["rcode"], "NOERROR");
    assert!(lines[0]["latency_us"].as_u64().is_some());

    std::thread::sleep(Duration::from_millis(2100));
    let second = ask(&lab, addr::ORIGIN, &["www.test.lab"]);
    assert_eq!(second.answers[0].3, "10.9.9.9");
    let ttl = second.ttl().unwrap();
    assert!(ttl <= 298, "TTL not decremented: {ttl}\n{}", second.text);
    let lines = wait_queries(&daemon, "www.test.lab.", 2);
    assert_eq!(lines[1]["cache"], "hit");
    assert_eq!(lines[1]["level"], "debug");

    // Any resolver address the client asks is answered, from that address — here one where
    // nothing listens at all, and over IPv6.
    let elsewhere = ask(&lab, addr::ORIGIN2, &["www.test.lab"]);
    assert_eq!(elsewhere.answers[0].3, "10.9.9.9", "{}", elsewhere.text);
    assert!(
        elsewhere.server.starts_with(addr::ORIGIN2),
        "{}",
        elsewhere.server
    );
    let v6 = ask(&lab, addr::ORIGIN6, &["www.test.lab", "AAAA"]);
    assert_eq!(v6.answers[0].3, "fd99::9", "{}", v6.text);
    let lines = wait_queries(&daemon, "www.test.lab.", 4);
    assert_eq!(lines[2]["cache"], "hit");
    assert_eq!(lines[3]["cache"], "miss", "AAAA is its own entry");
}

#[test]
fn nxdomain_is_cached_for_the_soa_minimum() {
    require_tools(&["dig", "unbound"]);
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let _zone = unbound_zone(&lab.origin, dir.path(), &[addr::ORIGIN], "");
    let daemon = Daemon::start(&lab, &upstream_config(""));

    let first = ask(&lab, addr::ORIGIN, &["nope.test.lab"]);
    assert_eq!(first.status, "NXDOMAIN", "{}", first.text);
    assert_eq!(first.authority[0].2, "SOA");
    assert!(first.authority[0].1 <= 5);
    let second = ask(&lab, addr::ORIGIN, &["nope.test.lab"]);
    assert_eq!(second.status, "NXDOMAIN");
    assert!(second.authority[0].1 <= 5, "{}", second.text);
    let lines = wait_queries(&daemon, "nope.test.lab.", 2);
    assert_eq!(lines[0]["cache"], "miss");
    assert_eq!(lines[1]["cache"], "hit");
    assert_eq!(lines[1]["rcode"], "NXDOMAIN");

    // NODATA too (www has no MX).
    ask(&lab, addr::ORIGIN, &["www.test.lab", "MX"]);
    let nodata = ask(&lab, addr::ORIGIN, &["www.test.lab", "MX"]);
    assert_eq!(nodata.status, "NOERROR");
    assert!(nodata.answers.is_empty());
    let mx: Vec<Value> = queries(&daemon, "www.test.lab.")
        .into_iter()
        .filter(|l| l["qtype"] == "MX")
        .collect();
    assert_eq!(mx.len(), 2);
    assert_eq!(mx[1]["cache"], "hit");

    // Past the SOA minimum (5 s) the negative answer is gone.
    std::thread::sleep(Duration::from_millis(5500));
    ask(&lab, addr::ORIGIN, &["nope.test.lab"]);
    let lines = wait_queries(&daemon, "nope.test.lab.", 3);
    assert_eq!(lines[2]["cache"], "miss");
}

#[test]
fn a_dead_upstream_gets_stale_answers_until_the_window_ends_then_servfail() {
    require_tools(&["dig", "unbound"]);
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let mut zone = unbound_zone(&lab.origin, dir.path(), &[addr::ORIGIN], "");
    let daemon = Daemon::start(
        &lab,
        &upstream_config("serve_stale_secs = 6\nprefetch = false\n"),
    );

    // short.test.lab has TTL 2.
    let fresh = ask(&lab, addr::ORIGIN, &["short.test.lab"]);
    assert_eq!(fresh.answers[0].3, "10.9.9.8", "{}", fresh.text);
    zone.kill();
    std::thread::sleep(Duration::from_millis(2500));

    let stale = ask(&lab, addr::ORIGIN, &["short.test.lab"]);
    assert_eq!(stale.status, "NOERROR", "{}", stale.text);
    assert_eq!(stale.answers[0].3, "10.9.9.8");
    assert_eq!(stale.ttl(), Some(30), "{}", stale.text);
    let lines = wait_queries(&daemon, "short.test.lab.", 2);
    assert_eq!(lines[1]["cache"], "stale");

    // Stored at t≈0, TTL 2, window 6: gone after t≈8.
    std::thread::sleep(Duration::from_millis(6500));
    let gone = ask(&lab, addr::ORIGIN, &["short.test.lab"]);
    assert_eq!(gone.status, "SERVFAIL", "{}", gone.text);
    let lines = wait_queries(&daemon, "short.test.lab.", 3);
    assert_eq!(lines[2]["rcode"], "SERVFAIL");
    assert_eq!(lines[2]["level"], "info");
}

#[test]
fn a_large_answer_comes_over_tcp_from_upstream_and_to_the_client() {
    require_tools(&["dig", "unbound"]);
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let _zone = unbound_zone(&lab.origin, dir.path(), &[addr::ORIGIN], "");
    let daemon = Daemon::start(&lab, &upstream_config(""));

    // dig asks over UDP, gets TC=1 from us, retries over TCP (intercepted too).
    let big = ask(&lab, addr::ORIGIN, &["big.test.lab", "TXT"]);
    assert_eq!(big.status, "NOERROR", "{}", big.text);
    assert_eq!(big.answers.len(), 40, "{}", big.text);
    assert!(
        big.text.contains("Truncated, retrying in TCP mode"),
        "{}",
        big.text
    );
    daemon.wait_for_log(WAIT, |l| {
        l["message"] == "upstream answer"
            && l["qname"] == "big.test.lab."
            && l["transport"] == "tcp"
    });
    let lines = wait_queries(&daemon, "big.test.lab.", 2);
    assert_eq!(lines[0]["transport"], "udp");
    assert_eq!(lines[1]["transport"], "tcp");
    assert_eq!(lines[1]["cache"], "hit");

    // Several queries on one TCP connection.
    let out = lab.client.run_ok(&[
        "dig",
        "+tcp",
        "+keepopen",
        "+time=3",
        "+tries=1",
        &format!("@{}", addr::ORIGIN),
        "www.test.lab",
        "www.test.lab",
        "AAAA",
        "big.test.lab",
        "TXT",
    ]);
    assert_eq!(out.matches("status: NOERROR").count(), 3, "{out}");
}

#[test]
fn malformed_packets_get_formerr_and_the_daemon_keeps_answering() {
    require_tools(&["dig", "unbound", "python3"]);
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let _zone = unbound_zone(&lab.origin, dir.path(), &[addr::ORIGIN], "");
    let daemon = Daemon::start(&lab, &upstream_config(""));

    // A header claiming one question, then a label running past the end; then two tiny and
    // one random packet (dropped), then the broken one again to read the answer.
    let script = format!(
        r#"
import os, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
bad = bytes([0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x3f, 0x61, 0x62])
for p in [b"\x01", b"\x00\x01\x02", os.urandom(700), bad]:
    s.sendto(p, ("{origin}", 53))
while True:
    r, _ = s.recvfrom(4096)
    if r[:2] == b"\xab\xcd":
        break
print("rcode", r[3] & 0xf, "qr", r[2] >> 7)
"#,
        origin = addr::ORIGIN
    );
    let out = lab.client.run_ok(&["python3", "-c", &script]);
    assert_eq!(out.trim(), "rcode 1 qr 1", "{out}");
    daemon.wait_for_log(WAIT, |l| {
        l["message"] == "malformed query" && l["rcode"] == "FORMERR"
    });

    let after = ask(&lab, addr::ORIGIN, &["www.test.lab"]);
    assert_eq!(after.answers[0].3, "10.9.9.9", "{}", after.text);
}

fn rules_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("rules.toml");
    std::fs::write(
        &path,
        "[[rule]]\nname = \"ads\"\nmatch_host = \"*.ads.test.lab\"\naction = \"deny\"\n\n[[rule]]\nname = \"pinned-ttl\"\nmatch_host = \"www.test.lab\"\naction = \"cache\"\nttl_override = \"42s\"\n\n[[rule]]\nname = \"live\"\nmatch_host = \"short.test.lab\"\naction = \"passthrough\"\n",
    )
    .unwrap();
    path
}

#[test]
fn denied_names_get_nxdomain_and_rules_override_ttls_and_bypass_the_cache() {
    require_tools(&["dig", "unbound"]);
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let _zone = unbound_zone(&lab.origin, dir.path(), &[addr::ORIGIN], "");
    let rules = rules_file(dir.path());
    let daemon = Daemon::start(
        &lab,
        &upstream_config(&format!("[rules]\nfile = \"{}\"\n", rules.display())),
    );

    let denied = ask(&lab, addr::ORIGIN, &["tracker.ads.test.lab"]);
    assert_eq!(denied.status, "NXDOMAIN", "{}", denied.text);
    let line = wait_queries(&daemon, "tracker.ads.test.lab.", 1).remove(0);
    assert_eq!(line["rule"], "ads");
    assert_eq!(line["rcode"], "NXDOMAIN");
    assert_eq!(line["upstream"], "");

    let pinned = ask(&lab, addr::ORIGIN, &["www.test.lab"]);
    assert_eq!(pinned.ttl(), Some(42), "{}", pinned.text);

    ask(&lab, addr::ORIGIN, &["short.test.lab"]);
    ask(&lab, addr::ORIGIN, &["short.test.lab"]);
    let lines = wait_queries(&daemon, "short.test.lab.", 2);
    assert!(
        lines
            .iter()
            .all(|l| l["cache"] == "none" && l["rule"] == "live"),
        "{lines:?}"
    );
}

#[test]
fn denied_names_can_get_zero_addresses() {
    require_tools(&["dig", "unbound"]);
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let _zone = unbound_zone(&lab.origin, dir.path(), &[addr::ORIGIN], "");
    let rules = rules_file(dir.path());
    let _daemon = Daemon::start(
        &lab,
        &upstream_config(&format!(
            "deny_answer = \"zero\"\n[rules]\nfile = \"{}\"\n",
            rules.display()
        )),
    );
    let a = ask(&lab, addr::ORIGIN, &["x.ads.test.lab"]);
    assert_eq!(
        (a.status.as_str(), a.answers[0].3.as_str()),
        ("NOERROR", "0.0.0.0"),
        "{}",
        a.text
    );
    let aaaa = ask(&lab, addr::ORIGIN, &["x.ads.test.lab", "AAAA"]);
    assert_eq!(aaaa.answers[0].3, "::", "{}", aaaa.text);
}

#[test]
fn do_and_cd_bits_are_part_of_the_cache_key() {
    require_tools(&["dig", "unbound"]);
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let _zone = unbound_zone(&lab.origin, dir.path(), &[addr::ORIGIN], "");
    let daemon = Daemon::start(&lab, &upstream_config(""));
    for flags in [
        &[][..],
        &["+dnssec"][..],
        &["+cdflag"][..],
        &["+dnssec", "+cdflag"][..],
    ] {
        for _ in 0..2 {
            let mut args = vec!["www.test.lab"];
            args.extend_from_slice(flags);
            let a = ask(&lab, addr::ORIGIN, &args);
            assert_eq!(a.answers[0].3, "10.9.9.9", "{}", a.text);
            if flags.contains(&"+cdflag") {
                assert!(a.flags.contains(&"cd".to_string()), "{:?}", a.flags);
            }
        }
    }
    let cache: Vec<String> = wait_queries(&daemon, "www.test.lab.", 8)
        .iter()
        .map(|l| l["cache"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        cache,
        ["miss", "hit", "miss", "hit", "miss", "hit", "miss", "hit"]
    );
}

#[test]
fn without_upstreams_each_client_resolver_is_asked_and_cached_apart() {
    require_tools(&["dig", "unbound"]);
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let _zone = unbound_zone(&lab.origin, dir.path(), &[addr::ORIGIN], "");
    let daemon = Daemon::start(&lab, "");

    ask(&lab, addr::ORIGIN, &["www.test.lab"]);
    let hit = ask(&lab, addr::ORIGIN, &["www.test.lab"]);
    assert_eq!(hit.answers[0].3, "10.9.9.9");
    // Nothing serves DNS on ORIGIN2: its clients get no answer from ORIGIN's cache entry.
    let other = ask(&lab, addr::ORIGIN2, &["www.test.lab"]);
    assert_eq!(other.status, "SERVFAIL", "{}", other.text);
    let lines = wait_queries(&daemon, "www.test.lab.", 3);
    assert_eq!(lines[0]["upstream"], format!("{}:53", addr::ORIGIN));
    assert_eq!(lines[1]["cache"], "hit");
    assert_eq!(lines[2]["cache"], "miss");
}

#[test]
fn a_dns_over_tls_upstream_is_verified_and_used() {
    require_tools(&["dig", "unbound", "openssl"]);
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path(), "Lab DNS CA");
    let (cert, key) = pki.server("dot", &["dns.test.lab"]);
    let tls = format!(
        "  interface: {}@853\n  tls-port: 853\n  tls-service-key: \"{}\"\n  tls-service-pem: \"{}\"\n",
        addr::ORIGIN,
        key.display(),
        cert.display()
    );
    let _zone = unbound_zone(&lab.origin, dir.path(), &[addr::ORIGIN], &tls);
    let daemon = Daemon::start(
        &lab,
        &format!(
            "[dns]\nupstreams = [\"tls://{}:853#dns.test.lab\"]\n[tls]\nextra_roots = [\"{}\"]\n",
            addr::ORIGIN,
            pki.ca_cert().display()
        ),
    );
    let a = ask(&lab, addr::ORIGIN2, &["www.test.lab"]);
    assert_eq!(a.answers[0].3, "10.9.9.9", "{}", a.text);
    let b = ask(&lab, addr::ORIGIN2, &["short.test.lab"]);
    assert_eq!(b.answers[0].3, "10.9.9.8", "{}", b.text);
    let line = wait_queries(&daemon, "www.test.lab.", 1).remove(0);
    assert_eq!(
        line["upstream"],
        format!("tls://{}:853#dns.test.lab", addr::ORIGIN)
    );

    // A name the certificate is not valid for is refused: SERVFAIL, not an unverified answer.
    drop(daemon);
    let wrong = Daemon::start(
        &lab,
        &format!(
            "[dns]\nupstreams = [\"tls://{}:853#other.test.lab\"]\n[tls]\nextra_roots = [\"{}\"]\n",
            addr::ORIGIN,
            pki.ca_cert().display()
        ),
    );
    let refused = ask(&lab, addr::ORIGIN2, &["www.test.lab"]);
    assert_eq!(refused.status, "SERVFAIL", "{}", refused.text);
    wrong.wait_for_log(WAIT, |l| {
        l["message"] == "query" && l["rcode"] == "SERVFAIL" && l["cache"] == "miss"
    });
}

#[test]
fn dnssec_records_pass_through_and_are_cached_with_their_rrsets() {
    require_tools(&["dig", "unbound", "ldns-signzone", "ldns-keygen"]);
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let signed = signed_zone(dir.path());
    let _zone = unbound_zone(&lab.origin, dir.path(), &[addr::ORIGIN], &signed);
    let daemon = Daemon::start(&lab, &upstream_config(""));

    let rrsig = |a: &DigAnswer| a.answers.iter().find(|r| r.2 == "RRSIG").cloned();
    let first = ask(&lab, addr::ORIGIN, &["+dnssec", "www.sec.lab"]);
    let sig = rrsig(&first).unwrap_or_else(|| panic!("no RRSIG:\n{}", first.text));
    assert!(sig.3.starts_with("A 13 3 300 "), "{sig:?}");
    std::thread::sleep(Duration::from_millis(1100));
    let second = ask(&lab, addr::ORIGIN, &["+dnssec", "www.sec.lab"]);
    let sig2 =
        rrsig(&second).unwrap_or_else(|| panic!("RRSIG lost from the cache:\n{}", second.text));
    assert_eq!(
        sig2.3, sig.3,
        "the signature (and its original TTL) is untouched"
    );
    assert!(sig2.1 < sig.1, "the RRSIG's TTL counts down with its RRset");
    assert!(second.text.contains("flags: do"), "{}", second.text);

    // Without DO: its own cache entry, no signatures.
    let plain = ask(&lab, addr::ORIGIN, &["www.sec.lab"]);
    assert_eq!(plain.answers.len(), 1, "{}", plain.text);
    // Negative answers keep their NSEC proof.
    ask(&lab, addr::ORIGIN, &["+dnssec", "nope.sec.lab"]);
    let nx = ask(&lab, addr::ORIGIN, &["+dnssec", "nope.sec.lab"]);
    assert_eq!(nx.status, "NXDOMAIN", "{}", nx.text);
    assert!(nx.authority.iter().any(|r| r.2 == "NSEC"), "{}", nx.text);
    assert!(nx.authority.iter().any(|r| r.2 == "RRSIG"), "{}", nx.text);
    wait_queries(&daemon, "nope.sec.lab.", 2);
    let cache: Vec<String> = wait_queries(&daemon, "www.sec.lab.", 3)
        .iter()
        .chain(queries(&daemon, "nope.sec.lab.").iter())
        .map(|l| l["cache"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(cache, ["miss", "hit", "miss", "miss", "hit"]);
}
