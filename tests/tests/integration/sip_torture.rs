//! SIP torture corpora through the gateway: the 49 RFC 4475 messages (`tests/data/rfc4475`,
//! with what the observer should make of each in its `MANIFEST`), two regression variants (a
//! CRLF before the start line, a folded `Content-Length`) and a few hundred seeded mutants of an
//! INVITE (`velocache_tests::mutate`), sent from `client` over UDP and over TCP to a peer in
//! `origin` that records exactly what arrived (`tests/scripts/sip_peer.py`). Each must arrive
//! byte for byte (anchoring is off, so nothing may be rewritten), each must be logged (a `sip`
//! line or a `malformed` one), the daemon must live through it, and then a real sipp call must
//! work — during which BYEs that reuse its Call-ID from another client and over another
//! transport must not end it.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::Value;
use velocache_tests::{
    Background, Lab, addr, mutate,
    servers::wait_tcp,
    sipp::{self, Answer, G711A_PACKETS, PCAP_DIR},
};

use crate::sip::Call;

/// The recording peer: a second origin address, so sipp's UAS can have the first.
const PEER: &str = addr::ORIGIN2;
const SEED: u64 = 4475;
const MUTANTS: usize = 300;
/// Larger datagrams are IP-fragmented, and the classifier passes later fragments untouched
/// (a datapath limit, not the observer's): those mutants go over TCP only.
const UDP_MAX: usize = 1400;
const MALFORMED: &str = "malformed SIP message forwarded untouched";

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/rfc4475")
}

fn script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts/sip_peer.py")
        .display()
        .to_string()
}

/// One input: a name (sortable: the send order), its bytes, and for the RFC messages and the
/// regression variants what the observer must make of it as a datagram.
struct Input {
    name: String,
    bytes: Vec<u8>,
    expect: Option<String>,
}

fn corpus() -> Vec<Input> {
    let manifest = std::fs::read_to_string(data_dir().join("MANIFEST")).unwrap();
    let mut out = Vec::new();
    for line in manifest
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        out.push(Input {
            name: format!("{:04}-{}", out.len(), f[0]),
            bytes: std::fs::read(data_dir().join(format!("{}.dat", f[0]))).unwrap(),
            expect: Some(f[3].to_string()),
        });
    }
    let sdp01 = std::fs::read(data_dir().join("sdp01.dat")).unwrap();
    // RFC 3261 §7.5: a CRLF before the start line is ignored (was "bad start line").
    out.push(Input {
        name: format!("{:04}-crlf-sdp01", out.len()),
        bytes: [b"\r\n".as_slice(), &sdp01].concat(),
        expect: Some("parsed".into()),
    });
    // RFC 3261 §7.3.1: a folded Content-Length (was "bad Content-Length").
    out.push(Input {
        name: format!("{:04}-folded-sdp01", out.len()),
        bytes: String::from_utf8(sdp01)
            .unwrap()
            .replace("Content-Length: 150\r\n", "Content-Length:\r\n 150\r\n")
            .into_bytes(),
        expect: Some("parsed".into()),
    });
    for (i, m) in mutate::mutants(SEED, MUTANTS).into_iter().enumerate() {
        out.push(Input {
            name: format!("{:04}-mutant-{i}", out.len()),
            bytes: m,
            expect: None,
        });
    }
    out
}

fn write_dir(dir: &Path, inputs: &[&Input]) {
    std::fs::create_dir_all(dir).unwrap();
    for i in inputs {
        std::fs::write(dir.join(&i.name), &i.bytes).unwrap();
    }
}

struct Peer {
    log: PathBuf,
    _server: Background,
}

impl Peer {
    fn start(lab: &Lab, dir: &Path) -> Peer {
        let log = dir.join("arrived.jsonl");
        std::fs::write(&log, "").unwrap();
        let server = lab.origin.spawn(&[
            "python3",
            &script(),
            "record",
            PEER,
            "5060",
            &log.display().to_string(),
        ]);
        wait_tcp(&lab.origin, PEER, 5060);
        Peer {
            log,
            _server: server,
        }
    }

    /// What arrived over `transport`, in arrival order.
    fn arrived(&self, transport: &str) -> Vec<Vec<u8>> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["transport"] == transport)
            .map(|v| hex(v["hex"].as_str().unwrap()))
            // The readiness probe's connection carries nothing; every input carries a sentinel.
            .filter(|b| !b.is_empty())
            .collect()
    }

    fn wait(&self, transport: &str, n: usize) -> Vec<Vec<u8>> {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.arrived(transport);
            if got.len() >= n || Instant::now() > end {
                return got;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// The observer's verdicts on messages sent to the peer over `transport`, in log order.
fn verdicts(logs: &[Value], transport: &str) -> Vec<(String, Value)> {
    let dst = format!("{PEER}:5060");
    logs.iter()
        .filter(|l| l["transport"] == transport)
        .filter(|l| l["dst"] == dst.as_str())
        .filter_map(|l| match l["message"].as_str() {
            Some("sip") => Some(("parsed".to_string(), l.clone())),
            Some(MALFORMED) => Some(("malformed".to_string(), l.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn sip_torture_corpora_pass_byte_identical_are_logged_and_the_next_call_works() {
    // Torture INVITEs open calls that are never answered: they time out during the test.
    let mut c = Call::setup("setup_timeout_secs = 5\n");
    let peer = Peer::start(&c.lab, c.dir.path());
    let inputs = corpus();

    // UDP: one datagram each, from one client socket (one relay session, so in order).
    let udp: Vec<&Input> = inputs.iter().filter(|i| i.bytes.len() <= UDP_MAX).collect();
    assert!(udp.len() > 250, "{} UDP inputs", udp.len());
    let udp_dir = c.dir.path().join("udp");
    write_dir(&udp_dir, &udp);
    c.lab.client.run_ok(&[
        "python3",
        &script(),
        "send-udp",
        PEER,
        "5060",
        &udp_dir.display().to_string(),
    ]);
    let arrived = peer.wait("udp", udp.len());
    assert_eq!(arrived.len(), udp.len(), "datagrams lost in the gateway");
    for (sent, got) in udp.iter().zip(&arrived) {
        assert!(
            sent.bytes == *got,
            "{} changed on its way:\nsent {:?}\ngot  {:?}",
            sent.name,
            String::from_utf8_lossy(&sent.bytes),
            String::from_utf8_lossy(got)
        );
    }
    // Every datagram that is not a bare keep-alive was logged, in order; the RFC messages as
    // the manifest says.
    let expected: Vec<&Input> = udp
        .iter()
        .copied()
        .filter(|i| !i.bytes.iter().all(u8::is_ascii_whitespace))
        .collect();
    let logs = c.daemon.logs();
    let seen = verdicts(&logs, "udp");
    assert_eq!(
        seen.len(),
        expected.len(),
        "one log line per datagram:\n{}",
        c.daemon.log_text()
    );
    for (input, (verdict, line)) in expected.iter().zip(&seen) {
        if let Some(want) = &input.expect {
            assert_eq!(verdict, want, "{}: {line}", input.name);
        }
    }
    assert!(
        c.daemon.try_wait().is_none(),
        "the daemon died on UDP input"
    );

    // TCP: one connection per input, the input then a sentinel OPTIONS naming it.
    let tcp_dir = c.dir.path().join("tcp");
    let all: Vec<&Input> = inputs.iter().collect();
    write_dir(&tcp_dir, &all);
    let sentinel = c.dir.path().join("sentinel");
    let sentinel_text = "OPTIONS sip:sentinel@10.77.2.3 SIP/2.0\r\nCall-ID: sentinel-@@\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    std::fs::write(&sentinel, sentinel_text).unwrap();
    c.lab.client.run_ok(&[
        "python3",
        &script(),
        "send-tcp",
        PEER,
        "5060",
        &tcp_dir.display().to_string(),
        &sentinel.display().to_string(),
    ]);
    let mut arrived = peer.wait("tcp", all.len());
    let mut sent: Vec<Vec<u8>> = all
        .iter()
        .map(|i| {
            [
                i.bytes.as_slice(),
                sentinel_text.replace("@@", &i.name).as_bytes(),
            ]
            .concat()
        })
        .collect();
    arrived.sort();
    sent.sort();
    assert_eq!(arrived.len(), sent.len(), "connections lost in the gateway");
    assert!(arrived == sent, "a TCP stream changed on its way");
    // Every connection was logged; the observer kept reading after whatever came first (the
    // sentinel is seen), except where the input itself swallows it: a Content-Length larger
    // than the rest of the stream (clerr: reported at close). (baddn's head has no end, so
    // the sentinel's lines are more of its headers: one message, as on the wire.)
    let logs = c.daemon.logs();
    let tcp = verdicts(&logs, "tcp");
    let mut per_conn: BTreeMap<String, usize> = BTreeMap::new();
    for (_, l) in &tcp {
        *per_conn
            .entry(l["src"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(
        per_conn.len(),
        all.len(),
        "a connection without any log line"
    );
    let sentinels: Vec<&str> = tcp
        .iter()
        .filter_map(|(_, l)| l["call_id"].as_str())
        .filter_map(|id| id.strip_prefix("sentinel-"))
        .collect();
    for i in inputs
        .iter()
        .filter(|i| i.expect.is_some() && !i.name.ends_with("-baddn"))
    {
        let swallowed = i.name.ends_with("-clerr");
        assert_eq!(
            sentinels.contains(&i.name.as_str()),
            !swallowed,
            "{}: sentinel {}",
            i.name,
            if swallowed { "seen" } else { "missed" }
        );
    }
    let clerr = inputs.iter().find(|i| i.name.ends_with("-clerr")).unwrap();
    assert!(
        tcp.iter().any(|(v, l)| v == "malformed"
            && l["bytes"].as_u64()
                == Some((clerr.bytes.len() + sentinel_text.len() + clerr.name.len() - 2) as u64)),
        "clerr cut short at close is not reported"
    );
    let seen_mutant_sentinels = sentinels.iter().filter(|s| s.contains("-mutant-")).count();
    println!(
        "tcp: {} connections, {} mutant sentinels seen of {MUTANTS}",
        all.len(),
        seen_mutant_sentinels
    );
    assert!(
        c.daemon.try_wait().is_none(),
        "the daemon died on TCP input"
    );

    // The next real call works, and BYEs reusing its Call-ID elsewhere do not end it.
    let _uas = c.uas(Answer::Accept, 1, "u1");
    let xml = c.scenario(
        "uac.xml",
        &sipp::uac_scenario(&format!("{PCAP_DIR}/g711a.pcap"), None, 7600, false),
    );
    let mut uac = sipp::spawn_uac(
        &c.lab.client,
        addr::CLIENT,
        addr::ORIGIN,
        &xml,
        6000,
        1,
        "u1",
    );
    let invite = c.daemon.wait_for_log(Duration::from_secs(30), |l| {
        l["message"] == "sip"
            && l["method"] == "INVITE"
            && l["dst"] == format!("{}:5060", addr::ORIGIN)
    });
    let call_id = invite["call_id"].as_str().unwrap().to_string();
    c.daemon.wait_for_log(Duration::from_secs(30), |l| {
        l["message"] == "sip" && l["method"] == "ACK" && l["call_id"] == call_id.as_str()
    });
    let bye = format!(
        "BYE sip:service@{PEER}:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.77.1.3:5070;branch=z9hG4bK-spoof\r\nFrom: <sip:x@10.77.1.3>;tag=spoof\r\nTo: <sip:service@{PEER}>\r\nCall-ID: {call_id}\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    let spoof = c.dir.path().join("spoof");
    std::fs::create_dir_all(&spoof).unwrap();
    std::fs::write(spoof.join("bye"), &bye).unwrap();
    // Another client, over UDP; the same client, over TCP.
    c.lab.client.run_ok(&[
        "python3",
        "-c",
        &format!(
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('{}', 5070)); s.sendto(open('{}', 'rb').read(), ('{PEER}', 5060))",
            addr::CLIENT2,
            spoof.join("bye").display()
        ),
    ]);
    std::fs::write(c.dir.path().join("empty-sentinel"), "").unwrap();
    c.lab.client.run_ok(&[
        "python3",
        &script(),
        "send-tcp",
        PEER,
        "5060",
        &spoof.display().to_string(),
        &c.dir.path().join("empty-sentinel").display().to_string(),
    ]);
    let status = uac.wait_timeout(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "sipp UAC failed:\n{}", uac.stdout());
    let record = c.daemon.wait_for_log(Duration::from_secs(30), |l| {
        l["message"] == "call" && l["call_id"] == call_id.as_str()
    });
    assert_eq!(record["outcome"], "completed", "{record}");
    assert_eq!(record["ended_by"], "BYE from client", "{record}");
    assert_eq!(record["up_packets"], G711A_PACKETS, "ended early: {record}");
    assert!(c.daemon.try_wait().is_none(), "the daemon died");
}
