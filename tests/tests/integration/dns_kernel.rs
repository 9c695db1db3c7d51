//! DNS answers from the kernel (`[dns] kernel_answers`): the XDP program on the gateway's LAN
//! interface answers hot entries itself. `dig` and a raw UDP client in `client` ask the
//! resolver in `origin` (unbound) through the gateway; the kernel's answers are compared with
//! the daemon's own, byte for byte besides TTLs, and the counters, summaries and a rules
//! reload are checked as an operator would see them.
use std::time::{Duration, Instant};

use velocache_tests::{
    Daemon, Lab, addr,
    dns::{DigAnswer, dig, unbound_zone},
    require_tools,
    shared::{metrics, sample},
    xdp::prepare_for_xdp,
};

fn config(extra: &str) -> String {
    format!(
        "[dns]\nupstreams = [\"{}:53\"]\nkernel_answers = true\nkernel_min_hits = 2\n{extra}",
        addr::ORIGIN
    )
}

/// A query for `name` as the client spells it, ID `id`, RD set, no EDNS.
fn raw_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Send `query` from `client` to `server`:53 over UDP and return the answer's bytes.
fn exchange(lab: &Lab, server: &str, query: &[u8]) -> Vec<u8> {
    const SCRIPT: &str = "import socket,sys\n\
        f=socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET\n\
        s=socket.socket(f,socket.SOCK_DGRAM)\n\
        s.settimeout(3)\n\
        s.sendto(bytes.fromhex(sys.argv[2]),(sys.argv[1],53))\n\
        print(s.recv(4096).hex())\n";
    let hex: String = query.iter().map(|b| format!("{b:02x}")).collect();
    let out = lab.client.run(&["python3", "-c", SCRIPT, server, &hex]);
    assert!(
        out.status.success(),
        "no answer from {server}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let text = text.trim();
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// The offsets of every TTL field in a DNS message (questions skipped, names walked).
fn ttl_offsets(msg: &[u8]) -> Vec<usize> {
    fn skip_name(msg: &[u8], mut at: usize) -> usize {
        loop {
            let len = msg[at] as usize;
            if len == 0 {
                return at + 1;
            }
            if len >= 0xc0 {
                return at + 2;
            }
            at += 1 + len;
        }
    }
    let count = |i: usize| u16::from_be_bytes([msg[i], msg[i + 1]]) as usize;
    let mut at = 12;
    for _ in 0..count(4) {
        at = skip_name(msg, at) + 4;
    }
    let mut out = Vec::new();
    for _ in 0..count(6) + count(8) + count(10) {
        at = skip_name(msg, at);
        let rtype = count(at);
        if rtype != 41 {
            out.push(at + 4);
        }
        at += 10 + count(at + 8);
    }
    out
}

/// `a` and `b` with their TTL fields zeroed.
fn without_ttls(mut a: Vec<u8>) -> Vec<u8> {
    for off in ttl_offsets(&a) {
        a[off..off + 4].fill(0);
    }
    a
}

fn kernel_answers(lab: &Lab, daemon: &Daemon) -> f64 {
    sample(
        &metrics(lab, daemon),
        "velocache_dns_answers_total",
        "cache=\"kernel_hit\"",
    )
    .unwrap_or(0.0)
}

/// The `query` lines for `qname` with `cache` = `how`.
fn query_lines(daemon: &Daemon, qname: &str, how: &str) -> Vec<serde_json::Value> {
    daemon
        .logs()
        .into_iter()
        .filter(|l| l["message"] == "query" && l["qname"] == qname && l["cache"] == how)
        .collect()
}

/// Ask until the kernel has answered `n` more times than `before` (the daemon puts an entry
/// in the kernel after its second hit; the map update races the next query by microseconds).
/// `dig` from the client for the name the reload and flush tests follow.
fn ask_www(lab: &Lab) -> DigAnswer {
    dig(
        &lab.client,
        &[&format!("@{}", addr::ORIGIN), "www.test.lab"],
    )
}

fn until_kernel_answers(lab: &Lab, daemon: &Daemon, before: f64, ask: impl Fn() -> DigAnswer) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let a = ask();
        assert_eq!(a.status, "NOERROR", "{}", a.text);
        if kernel_answers(lab, daemon) > before {
            return;
        }
        assert!(
            Instant::now() < end,
            "the kernel never answered\n{}",
            daemon.log_text()
        );
    }
}

#[test]
fn hot_answers_come_from_the_kernel_byte_identical_to_the_daemons() {
    require_tools(&["dig", "unbound", "python3", "ethtool"]);
    let lab = Lab::new();
    prepare_for_xdp(&lab);
    let dir = tempfile::tempdir().unwrap();
    let _zone = unbound_zone(&lab.origin, dir.path(), &[addr::ORIGIN, addr::ORIGIN6], "");
    let daemon = Daemon::start(&lab, &config(""));

    // Miss, then two hits answered by the daemon (the second puts the entry in the kernel).
    let q = raw_query(0x5151, "wWw.TeSt.lab");
    let _miss = exchange(&lab, addr::ORIGIN, &q);
    let _first_hit = exchange(&lab, addr::ORIGIN, &q);
    let from_daemon = exchange(&lab, addr::ORIGIN, &q);
    assert_eq!(query_lines(&daemon, "wWw.TeSt.lab.", "hit").len(), 2);
    let before = kernel_answers(&lab, &daemon);
    let from_kernel = exchange(&lab, addr::ORIGIN, &q);
    assert_eq!(
        kernel_answers(&lab, &daemon),
        before + 1.0,
        "this answer came from the kernel"
    );
    assert_eq!(
        query_lines(&daemon, "wWw.TeSt.lab.", "hit").len(),
        2,
        "and the daemon never saw the query"
    );
    assert_eq!(
        &from_kernel[12..26],
        b"\x03wWw\x04TeSt\x03lab\x00",
        "spelling echoed"
    );
    assert_eq!(
        without_ttls(from_kernel.clone()),
        without_ttls(from_daemon.clone()),
        "kernel and daemon answers differ besides TTLs"
    );
    for (k, d) in ttl_offsets(&from_kernel)
        .into_iter()
        .map(|o| (&from_kernel[o..o + 4], &from_daemon[o..o + 4]))
    {
        let (k, d) = (
            u32::from_be_bytes(k.try_into().unwrap()),
            u32::from_be_bytes(d.try_into().unwrap()),
        );
        assert!(k <= d && d - k <= 2, "TTL {k} from the kernel, {d} before");
    }

    // dig as clients run it (EDNS with a cookie), over IPv4 and IPv6: a shape of its own,
    // which also moves to the kernel after two hits, and reads the same there.
    let ask4 = || {
        dig(
            &lab.client,
            &[&format!("@{}", addr::ORIGIN), "www.test.lab"],
        )
    };
    let daemon_dig = ask4();
    let before = kernel_answers(&lab, &daemon);
    until_kernel_answers(&lab, &daemon, before, ask4);
    let kernel_dig = ask4();
    assert_eq!(kernel_dig.flags, daemon_dig.flags, "{}", kernel_dig.text);
    let strip = |a: &DigAnswer| {
        a.answers
            .iter()
            .map(|(n, _, t, d)| (n.clone(), t.clone(), d.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&kernel_dig), strip(&daemon_dig));
    assert!(
        kernel_dig.server.starts_with(addr::ORIGIN),
        "{}",
        kernel_dig.server
    );
    let msg_size = |a: &DigAnswer| {
        a.text
            .lines()
            .find(|l| l.contains("MSG SIZE"))
            .map(str::to_string)
    };
    assert_eq!(msg_size(&kernel_dig), msg_size(&daemon_dig));

    let ask6 = || {
        dig(
            &lab.client,
            &[&format!("@{}", addr::ORIGIN6), "www.test.lab", "AAAA"],
        )
    };
    let before = kernel_answers(&lab, &daemon);
    until_kernel_answers(&lab, &daemon, before, ask6);
    let v6 = ask6();
    assert_eq!(v6.answers[0].3, "fd99::9", "{}", v6.text);

    // The operator's view: a summary line per name instead of one per packet, the kernel
    // counters line, and the DNS section of `velocache stats`.
    let summary = daemon.wait_for_log(Duration::from_secs(10), |l| {
        l["message"] == "query" && l["cache"] == "kernel_hit" && l["qname"] == "www.test.lab."
    });
    assert!(
        summary["count"].as_u64().is_some_and(|c| c >= 1),
        "{summary}"
    );
    daemon.wait_for_log(Duration::from_secs(10), |l| {
        l["message"] == "kernel counters"
            && l["service"] == "dns"
            && l["kernel_answered"].as_u64().is_some_and(|n| n >= 3)
    });
    let stats = daemon.cli(&lab, &["stats"]);
    let stats = String::from_utf8_lossy(&stats.stdout);
    assert!(stats.contains("kernel_hit"), "{stats}");
}

#[test]
fn a_rules_reload_takes_names_back_from_the_kernel() {
    require_tools(&["dig", "unbound", "ethtool"]);
    let lab = Lab::new();
    prepare_for_xdp(&lab);
    let dir = tempfile::tempdir().unwrap();
    let _zone = unbound_zone(&lab.origin, dir.path(), &[addr::ORIGIN], "");
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, "").unwrap();
    let daemon = Daemon::start(
        &lab,
        &config(&format!("[rules]\nfile = \"{}\"\n", rules.display())),
    );
    let ask = || ask_www(&lab);
    let before = kernel_answers(&lab, &daemon);
    until_kernel_answers(&lab, &daemon, before, ask);

    std::fs::write(
        &rules,
        "[[rule]]\nname = \"blocked\"\nmatch_host = \"www.test.lab\"\naction = \"deny\"\n",
    )
    .unwrap();
    daemon.reload();
    daemon.wait_for_log(Duration::from_secs(10), |l| {
        l["message"] == "rules changed: kernel DNS answers cleared"
    });
    let after = kernel_answers(&lab, &daemon);
    let denied = ask();
    assert_eq!(denied.status, "NXDOMAIN", "{}", denied.text);
    assert_eq!(
        kernel_answers(&lab, &daemon),
        after,
        "the kernel let it through"
    );
}

#[test]
fn a_flushed_name_leaves_the_kernel_and_is_asked_upstream_again() {
    require_tools(&["dig", "unbound", "ethtool"]);
    let lab = Lab::new();
    prepare_for_xdp(&lab);
    let dir = tempfile::tempdir().unwrap();
    let _zone = unbound_zone(&lab.origin, dir.path(), &[addr::ORIGIN], "");
    let daemon = Daemon::start(&lab, &config(""));
    let ask = || ask_www(&lab);
    let before = kernel_answers(&lab, &daemon);
    until_kernel_answers(&lab, &daemon, before, ask);
    assert_eq!(query_lines(&daemon, "www.test.lab.", "miss").len(), 1);

    let out = daemon.cli(&lab, &["dns", "flush", "WWW.test.lab", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["entries"], 1, "{report}");
    assert_eq!(report["kernel"], 1, "{report}");

    let after = kernel_answers(&lab, &daemon);
    assert_eq!(ask().status, "NOERROR");
    assert_eq!(
        kernel_answers(&lab, &daemon),
        after,
        "the kernel still answered"
    );
    daemon.wait_for_log(Duration::from_secs(10), |_| {
        query_lines(&daemon, "www.test.lab.", "miss").len() == 2
    });
}
