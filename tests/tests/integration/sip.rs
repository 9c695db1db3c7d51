//! SIP observation and the RTP fast path, with sipp phones in `client` and `origin`.
use std::{path::PathBuf, time::Duration};

use serde_json::Value;
use velocache_tests::{
    Background, Daemon, Lab, Ns, addr, require_tools,
    sipp::{self, Answer, G711A_PACKETS, PCAP_DIR},
    xdp,
};

const WAIT: Duration = Duration::from_secs(30);
const UAS_MEDIA: u16 = 7000;
const UAC_MEDIA: u16 = 6000;

/// Daemon config: the fast path on both gateway interfaces.
pub(crate) fn config(extra: &str) -> String {
    format!(
        "[sip]\nmedia_interfaces = [\"{}\", \"{}\"]\nrtp_idle_timeout_secs = 5\n{extra}",
        addr::LAN_IF,
        addr::WAN_IF
    )
}

fn lines<'a>(logs: &'a [Value], message: &str) -> Vec<&'a Value> {
    logs.iter().filter(|l| l["message"] == message).collect()
}

/// A lab ready for XDP, the daemon, and the two scenarios written out.
pub(crate) struct Call {
    pub(crate) lab: Lab,
    pub(crate) daemon: Daemon,
    pub(crate) dir: tempfile::TempDir,
}

impl Call {
    pub(crate) fn setup(extra: &str) -> Call {
        require_tools(&["sipp", "tshark", "bpftool", "ethtool", "python3"]);
        let lab = Lab::new();
        xdp::prepare_for_xdp(&lab);
        let daemon = Daemon::start(&lab, &config(extra));
        for dev in [addr::LAN_IF, addr::WAN_IF] {
            assert!(
                xdp::xdp_attached(&lab.gw, dev),
                "no XDP on {dev}:\n{}",
                daemon.log_text()
            );
        }
        Call {
            lab,
            daemon,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn scenario(&self, name: &str, xml: &str) -> PathBuf {
        sipp::write_scenario(self.dir.path(), name, xml)
    }

    pub(crate) fn uas(&self, answer: Answer, calls: u32, transport: &str) -> Background {
        let xml = self.scenario("uas.xml", &sipp::uas_scenario(answer));
        let uas = sipp::start_uas(
            &self.lab.origin,
            addr::ORIGIN,
            &xml,
            UAS_MEDIA,
            calls,
            transport,
        );
        wait_listening(&self.lab.origin, transport);
        uas
    }

    /// One call from the client; panics with sipp's and the daemon's output if it fails.
    pub(crate) fn place(&self, dtmf: Option<&str>, transport: &str) {
        self.place_with(&format!("{PCAP_DIR}/g711a.pcap"), dtmf, transport);
    }

    fn place_with(&self, pcap: &str, dtmf: Option<&str>, transport: &str) {
        let xml = self.scenario(
            "uac.xml",
            &sipp::uac_scenario(
                pcap,
                dtmf.map(|d| format!("{PCAP_DIR}/{d}")).as_deref(),
                7600,
                false,
            ),
        );
        let (out, ok) = sipp::run_uac(
            &self.lab.client,
            addr::CLIENT,
            addr::ORIGIN,
            &xml,
            UAC_MEDIA,
            1,
            transport,
        );
        assert!(ok, "sipp UAC failed:\n{out}\n{}", self.daemon.log_text());
    }

    pub(crate) fn record(&self) -> Value {
        self.daemon.wait_for_log(WAIT, |l| l["message"] == "call")
    }

    fn stream(&self, direction: &str, kind: &str) -> Value {
        self.daemon.wait_for_log(WAIT, |l| {
            l["message"] == "rtp stream" && l["direction"] == direction && l["kind"] == kind
        })
    }
}

fn wait_listening(ns: &Ns, transport: &str) {
    let flag = if transport == "t1" { "-tln" } else { "-uln" };
    for _ in 0..200 {
        if ns.run_ok(&["ss", flag]).contains(":5060") {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("sipp UAS is not listening in {}", ns.name());
}

/// Send one datagram from `ns` (python3: bash's /dev/udp writes one datagram per line).
fn send_udp(ns: &Ns, dir: &std::path::Path, payload: &[u8], to: &str) {
    let file = dir.join("payload.bin");
    std::fs::write(&file, payload).unwrap();
    let (host, port) = to.rsplit_once(':').unwrap();
    ns.run_ok(&[
        "python3",
        "-c",
        &format!(
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(open('{}', 'rb').read(), ('{host}', {port}))",
            file.display()
        ),
    ]);
}

fn assert_flows_gone(lab: &Lab) {
    // The record is logged after the flows were removed; a packet in flight cannot re-create
    // them (the program never inserts).
    for dev in [addr::LAN_IF, addr::WAN_IF] {
        let maps = xdp::xdp_map_entries(&lab.gw, dev);
        for name in ["RTP_FLOWS", "RTP_COUNTERS", "RTP_QUALITY"] {
            assert_eq!(
                maps.get(name),
                Some(&0),
                "{name} not empty on {dev}: {maps:?}"
            );
        }
    }
}

#[test]
fn a_call_with_rtp_is_recorded_and_its_media_counted_in_the_kernel() {
    let c = Call::setup("");
    let _uas = c.uas(Answer::Accept, 1, "u1");
    c.place(None, "u1");

    let call = c.record();
    assert_eq!(call["outcome"], "completed", "{call}");
    assert_eq!(call["status"], 200);
    assert_eq!(call["ended_by"], "BYE from client");
    assert_eq!(call["transport"], "udp");
    assert!(call["setup_ms"].as_u64().unwrap() >= 200, "{call}");
    assert!(call["pdd_ms"].as_u64().unwrap() <= call["setup_ms"].as_u64().unwrap());
    assert!(call["duration_ms"].as_u64().unwrap() >= 7000, "{call}");
    // sipp played every packet of the capture; the echo sent each one back.
    assert_eq!(call["up_packets"], G711A_PACKETS, "{call}");
    assert_eq!(call["down_packets"], G711A_PACKETS, "{call}");
    assert_eq!(
        call["up_fast_path_packets"], G711A_PACKETS,
        "forwarded by XDP: {call}"
    );
    assert_eq!(call["up_lost"], 0, "{call}");
    assert!(call["up_mos"].as_f64().unwrap() > 4.0, "{call}");
    let up = c.stream("up", "rtp");
    assert_eq!(up["src"], format!("{}:{UAC_MEDIA}", addr::CLIENT));
    assert_eq!(up["dst"], format!("{}:{UAS_MEDIA}", addr::ORIGIN));
    assert_eq!(up["codec"], "PCMA");
    // `velocache calls` shows the ended call with its media figures.
    let calls = crate::control::cli(&c.lab, &c.daemon, &["calls", "--json"]).ok();
    let recent = &calls["recent"][0];
    assert_eq!(recent["call_id"], call["call_id"], "{calls}");
    assert_eq!(recent["state"], "completed", "{calls}");
    assert_eq!(recent["final_status"], 200, "{calls}");
    // The same figures as the log's record.
    assert_eq!(recent["setup_ms"], call["setup_ms"], "{calls}");
    assert_eq!(recent["pdd_ms"], call["pdd_ms"], "{calls}");
    let media = recent["media"].as_array().unwrap();
    assert!(
        media
            .iter()
            .any(|m| m["direction"] == "client->far" && m["packets"] == G711A_PACKETS),
        "{calls}"
    );
    assert!(calls["active"].as_array().unwrap().is_empty(), "{calls}");
    // And /metrics counts the streams; no flow is left in the fast path.
    let metrics = crate::control::cli(&c.lab, &c.daemon, &["metrics"]).stdout;
    let up = format!("velocache_sip_rtp_packets_total{{direction=\"up\"}} {G711A_PACKETS}");
    assert!(metrics.contains(&up), "{up} missing:\n{metrics}");
    assert!(
        metrics.contains("velocache_sip_rtp_flows_active 0"),
        "{metrics}"
    );

    let logs = c.daemon.logs();
    let sip = lines(&logs, "sip");
    let methods: Vec<String> = sip
        .iter()
        .map(|l| {
            l.get("method")
                .and_then(Value::as_str)
                .map(String::from)
                .unwrap_or_else(|| l["status"].to_string())
        })
        .collect();
    for want in ["INVITE", "180", "200", "ACK", "BYE"] {
        assert!(
            methods.iter().any(|m| m == want),
            "{want} not logged: {methods:?}"
        );
    }
    for l in &sip {
        for key in ["call_id", "cseq", "from", "to", "src", "dst", "transport"] {
            assert!(l.get(key).is_some(), "{key} missing: {l}");
        }
        assert_eq!(l["call_id"], call["call_id"]);
    }
    assert_flows_gone(&c.lab);
}

#[test]
fn calls_shows_a_call_in_progress_with_live_media_then_its_record() {
    let c = Call::setup("");
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
        UAC_MEDIA,
        1,
        "u1",
    );
    // While the phones talk: the call is active, confirmed, and its media counters move.
    let calls_now = || crate::control::cli(&c.lab, &c.daemon, &["calls", "--json"]).ok();
    let started = std::time::Instant::now();
    let active = loop {
        let calls = calls_now();
        let talking = calls["active"]
            .as_array()
            .unwrap()
            .first()
            .cloned()
            .filter(|a| {
                a["state"] == "confirmed"
                    && ["client->far", "far->client"].iter().all(|d| {
                        a["media"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|m| m["direction"] == *d && m["packets"].as_u64().unwrap() > 0)
                    })
            });
        if let Some(a) = talking {
            break a;
        }
        assert!(
            uac.try_wait().is_none() && started.elapsed() < WAIT,
            "no call in progress with media: {calls}\nsipp: {}\n{}",
            uac.stdout(),
            c.daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let call_id = active["call_id"].as_str().unwrap().to_string();
    assert!(!call_id.is_empty(), "{active}");
    assert_eq!(active["transport"], "udp", "{active}");
    assert_eq!(
        active["client"],
        format!("{}:5061", addr::CLIENT),
        "{active}"
    );
    assert_eq!(active["far"], format!("{}:5060", addr::ORIGIN), "{active}");
    assert!(active["duration_ms"].is_u64(), "answered: {active}");
    assert_eq!(active["final_status"], 200, "{active}");
    let up = active["media"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["direction"] == "client->far")
        .unwrap();
    assert_eq!(up["codec"], "PCMA", "{active}");
    // The human table shows it too.
    let human = crate::control::cli(&c.lab, &c.daemon, &["calls"]);
    assert_eq!(human.code, 0);
    assert!(
        human.stdout.starts_with("active calls: 1\n"),
        "{}",
        human.stdout
    );
    assert!(human.stdout.contains(&call_id), "{}", human.stdout);

    let status = uac.wait_timeout(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "sipp UAC failed:\n{}", uac.stdout());
    let record = c.record();
    assert_eq!(record["call_id"], call_id.as_str());
    let calls = calls_now();
    assert!(calls["active"].as_array().unwrap().is_empty(), "{calls}");
    let ended = &calls["recent"][0];
    assert_eq!(ended["call_id"], call_id.as_str(), "{calls}");
    assert_eq!(ended["state"], "completed", "{calls}");
    assert_eq!(ended["ended_by"], "BYE from client", "{calls}");
    for direction in ["client->far", "far->client"] {
        let m = ended["media"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["direction"] == direction)
            .unwrap();
        assert_eq!(m["packets"], G711A_PACKETS, "{calls}");
        assert_eq!(m["loss_pct"], 0.0, "{calls}");
        assert!(m["mos"].as_f64().unwrap() > 4.0, "{calls}");
    }
}

/// A tshark capture in `ns` on `eth0` of UDP port `port`, stopped on drop of the handle.
fn capture(ns: &Ns, dir: &std::path::Path, port: u16) -> (Background, PathBuf) {
    let file = dir.join(format!("cap-{port}.pcap"));
    let bg = ns.spawn(&[
        "tshark",
        "-i",
        "eth0",
        "-f",
        &format!("udp port {port}"),
        "-w",
        &file.display().to_string(),
    ]);
    for _ in 0..400 {
        if bg.stderr().contains("Capturing on") {
            return (bg, file);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("tshark did not start: {}", bg.stderr());
}

/// tshark's RTP stream line for `src` → `dst`: (packets, lost, max jitter ms, mean jitter ms).
fn tshark_stream(
    file: &std::path::Path,
    src: (&str, u16),
    dst: (&str, u16),
) -> (u64, i64, f64, f64) {
    let out = std::process::Command::new("tshark")
        .args([
            "-r",
            &file.display().to_string(),
            // Decode the port as RTP outright: the heuristic dissector skips a packet now and
            // then whose payload happens to look like another protocol.
            "-d",
            &format!("udp.port=={},rtp", dst.1),
            "-q",
            "-z",
            "rtp,streams",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    for line in text.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.len() >= 17
            && t[2] == src.0
            && t[3] == src.1.to_string()
            && t[4] == dst.0
            && t[5] == dst.1.to_string()
        {
            // Start End Src Port Dst Port SSRC Payload Pkts Lost (pct) MinΔ MeanΔ MaxΔ MinJ MeanJ MaxJ
            return (
                t[8].parse().unwrap(),
                t[9].parse().unwrap(),
                t[16].parse().unwrap(),
                t[15].parse().unwrap(),
            );
        }
    }
    panic!("no stream {src:?} -> {dst:?} in:\n{text}");
}

#[test]
fn loss_and_jitter_agree_with_tshark_on_the_same_call() {
    let c = Call::setup("");
    // This kernel has no netem: impair the stream itself. Every 13th packet and a burst of
    // three are dropped, and send times wander by up to ±6 ms (too little to reorder packets
    // 30 ms apart); sipp replays it with that timing.
    let pcap = c.dir.path().join("impaired.pcap");
    let (_, dropped) = sipp::impaired_pcap(
        std::path::Path::new(&format!("{PCAP_DIR}/g711a.pcap")),
        &pcap,
        |i| i % 13 == 7 || (100..103).contains(&i),
        |i| ((i as i64 * 7919) % 13 - 6) * 1000,
    );
    let _uas = c.uas(Answer::Accept, 1, "u1");
    let (tshark, file) = capture(&c.lab.origin, c.dir.path(), UAS_MEDIA);
    c.place_with(&pcap.display().to_string(), None, "u1");
    let up = c.stream("up", "rtp");
    std::thread::sleep(Duration::from_millis(300));
    tshark.signal(nix::sys::signal::Signal::SIGINT);
    drop(tshark);

    let (pkts, lost, max_jitter, mean_jitter) =
        tshark_stream(&file, (addr::CLIENT, UAC_MEDIA), (addr::ORIGIN, UAS_MEDIA));
    println!(
        "gateway: {up}\ntshark: packets {pkts} lost {lost} max jitter {max_jitter} mean jitter {mean_jitter}"
    );
    assert_eq!(lost, dropped as i64, "tshark sees the gaps we made");
    assert_eq!(up["packets"].as_u64().unwrap(), pkts, "packets");
    assert_eq!(up["lost"].as_i64().unwrap(), lost, "lost");
    let ours_max = up["max_jitter_ms"].as_f64().unwrap();
    let ours = up["jitter_ms"].as_f64().unwrap();
    assert!(
        max_jitter > 0.5,
        "the replay should carry jitter: {max_jitter}"
    );
    assert!(
        (ours_max - max_jitter).abs() <= 0.5 + 0.15 * max_jitter,
        "max jitter: gateway {ours_max} ms, tshark {max_jitter} ms"
    );
    // The final RFC 3550 value is one sample of the running estimate whose mean tshark gives.
    assert!(
        ours > 0.0 && ours <= max_jitter * 1.15 + 0.5,
        "jitter {ours} vs tshark max {max_jitter}"
    );
    let loss_pct = up["loss_pct"].as_f64().unwrap();
    assert!((loss_pct - lost as f64 * 100.0 / (pkts as f64 + lost as f64)).abs() < 0.05);
}

#[test]
fn a_busy_callee_is_logged_with_486_and_its_reason() {
    let c = Call::setup("");
    let _uas = c.uas(Answer::Refuse(486, "Busy Here"), 1, "u1");
    let xml = c.scenario("uac-fail.xml", &sipp::uac_scenario("", None, 0, true));
    let (out, ok) = sipp::run_uac(
        &c.lab.client,
        addr::CLIENT,
        addr::ORIGIN,
        &xml,
        UAC_MEDIA,
        1,
        "u1",
    );
    assert!(ok, "{out}");
    let call = c.record();
    assert_eq!(call["outcome"], "failed", "{call}");
    assert_eq!(call["status"], 486);
    assert_eq!(call["reason"], "Busy Here");
    assert!(call.get("setup_ms").is_none_or(Value::is_null), "{call}");
    assert!(
        call.get("up_packets").is_none_or(Value::is_null),
        "no media on a failed call"
    );
    assert_flows_gone(&c.lab);
}

#[test]
fn a_malformed_invite_does_not_stop_the_next_call() {
    let mut c = Call::setup("");
    // The UAS takes the syntactically valid garbage as calls of its own: leave it room.
    let _uas = c.uas(Answer::Accept, 5, "u1");
    // A truncated INVITE (Content-Length larger than the body), then binary noise, both to the
    // SIP port the classifier intercepts.
    let noise: Vec<u8> = (0..700u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let garbage: [&[u8]; 3] = [
        b"INVITE sip:x@10.77.2.2 SIP/2.0\r\nCall-ID: bad-1\r\nCSeq: 1 INVITE\r\nContent-Length: 500\r\n\r\nv=0\r\n",
        &noise,
        b"INVITE sip:x SIP/2.0\r\nCall-ID: bad-2\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: 14\r\n\r\nm=audio banana",
    ];
    for g in garbage {
        send_udp(
            &c.lab.client,
            c.dir.path(),
            g,
            &format!("{}:5060", addr::ORIGIN),
        );
    }
    c.daemon.wait_for_log(WAIT, |l| {
        l["message"] == "malformed SIP message forwarded untouched"
    });
    c.daemon.wait_for_log(WAIT, |l| {
        l["message"] == "malformed SDP: media not learned, message forwarded untouched"
    });
    c.place(None, "u1");
    let call = c.record();
    assert_eq!(call["outcome"], "completed", "{call}");
    assert_eq!(call["up_packets"], G711A_PACKETS, "{call}");
    assert!(c.daemon.try_wait().is_none(), "daemon died");
}

#[test]
fn anchored_media_flows_end_to_end_through_gateway_ports() {
    let c = Call::setup("anchor_media = true\nanchor_port_min = 31000\nanchor_port_max = 31099\n");
    let _uas = c.uas(Answer::Accept, 1, "u1");
    let (tshark, file) = capture(&c.lab.origin, c.dir.path(), UAS_MEDIA);
    let (tshark_sip, sip_file) = capture(&c.lab.origin, c.dir.path(), 5060);
    c.place(None, "u1");
    let call = c.record();
    std::thread::sleep(Duration::from_millis(300));
    tshark.signal(nix::sys::signal::Signal::SIGINT);
    tshark_sip.signal(nix::sys::signal::Signal::SIGINT);
    drop((tshark, tshark_sip));
    assert_eq!(call["outcome"], "completed", "{call}");
    assert_eq!(call["up_packets"], G711A_PACKETS, "{call}");
    assert_eq!(
        call["down_packets"], G711A_PACKETS,
        "echoed back through the anchor: {call}"
    );
    // Like the kernel's SIP NAT helper: the far end saw the gateway in Via, Contact and SDP.
    let invite = String::from_utf8_lossy(
        &std::process::Command::new("tshark")
            .args([
                "-r",
                &sip_file.display().to_string(),
                "-Y",
                "sip.Method == \"INVITE\"",
                "-T",
                "fields",
                "-e",
                "sip.Via",
                "-e",
                "sip.Contact",
                "-e",
                "sdp.connection_info",
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .to_string();
    assert!(invite.contains(addr::GW_WAN), "{invite}");
    assert!(
        !invite.contains(addr::CLIENT),
        "client address leaked in signalling: {invite}"
    );
    assert!(
        call["down_fast_path_packets"].as_u64().unwrap() >= G711A_PACKETS - 1,
        "{call}"
    );
    let up = c.stream("up", "rtp");
    // The client sent to the gateway's LAN address; the kernel rewrote to the real peer.
    assert_eq!(up["src"], format!("{}:{UAC_MEDIA}", addr::CLIENT));
    assert!(
        up["dst"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}:310", addr::GW_LAN)),
        "{up}"
    );
    assert_eq!(up["rewritten_to"], format!("{}:{UAS_MEDIA}", addr::ORIGIN));
    // The origin saw media from the gateway's WAN address only, never the client's.
    let text = String::from_utf8_lossy(
        &std::process::Command::new("tshark")
            .args([
                "-r",
                &file.display().to_string(),
                "-T",
                "fields",
                "-e",
                "ip.src",
                "-e",
                "udp.srcport",
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .to_string();
    let from_gw = text.lines().filter(|l| l.starts_with(addr::GW_WAN)).count() as u64;
    assert!(
        from_gw >= G711A_PACKETS,
        "origin got {from_gw} packets from the gateway:\n{text}"
    );
    assert!(
        !text.contains(addr::CLIENT),
        "client address leaked past the anchor"
    );
    // The SDP the origin received named the gateway, not the client.
    let sip = c.daemon.logs();
    assert!(
        lines(&sip, "media flows installed")
            .iter()
            .any(|l| l["anchored"] == true)
    );
    assert_flows_gone(&c.lab);
}

#[test]
fn sip_over_tcp_is_framed_and_observed() {
    let c = Call::setup("");
    let _uas = c.uas(Answer::Accept, 1, "t1");
    c.place(None, "t1");
    let call = c.record();
    assert_eq!(call["transport"], "tcp", "{call}");
    assert_eq!(call["outcome"], "completed", "{call}");
    assert_eq!(call["up_packets"], G711A_PACKETS, "{call}");
    let logs = c.daemon.logs();
    assert!(lines(&logs, "sip").iter().all(|l| l["transport"] == "tcp"));
    assert!(lines(&logs, "sip").len() >= 6, "every message framed");
}

#[test]
fn dtmf_end_of_event_repeats_and_ssrc_changes_never_count_as_loss() {
    let c = Call::setup("");
    let _uas = c.uas(Answer::Accept, 1, "u1");
    // The DTMF capture is another source (new SSRC, new sequence) whose end-of-event packet is
    // sent three times with the same sequence number.
    c.place(Some("dtmf_2833_1.pcap"), "u1");
    let up = c.stream("up", "rtp");
    assert_eq!(up["ssrc_changes"], 1, "{up}");
    assert!(up["duplicates"].as_u64().unwrap() >= 2, "{up}");
    assert_eq!(up["lost"], 0, "{up}");
    let call = c.record();
    assert_eq!(call["up_lost"], 0, "{call}");
    assert!(
        call["up_packets"].as_u64().unwrap() > G711A_PACKETS,
        "{call}"
    );
}

#[test]
fn clean_stop_detaches_the_fast_path() {
    let mut c = Call::setup("");
    // `datapath show` names the dispatcher and the RTP slot on both media interfaces.
    let show = ["datapath", "show", "--json", addr::LAN_IF, addr::WAN_IF];
    let shown = crate::control::cli(&c.lab, &c.daemon, &show).ok();
    for (i, dev) in [addr::LAN_IF, addr::WAN_IF].iter().enumerate() {
        let x = &shown[i]["xdp"];
        assert_eq!(shown[i]["interface"], *dev, "{shown}");
        assert_eq!(x["program"], "velocache_xdp", "{shown}");
        assert_eq!(x["velocache_dispatcher"], true, "{shown}");
        assert_eq!(x["slots"], serde_json::json!(["rtp"]), "{shown}");
    }
    assert!(c.daemon.stop().success());
    for dev in [addr::LAN_IF, addr::WAN_IF] {
        assert!(!xdp::xdp_attached(&c.lab.gw, dev), "XDP left on {dev}");
    }
    let shown = crate::control::cli(&c.lab, &c.daemon, &show);
    let shown: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert!(
        shown[0]["xdp"].is_null() && shown[1]["xdp"].is_null(),
        "{shown}"
    );
    c.daemon
        .wait_for_log(WAIT, |l| l["message"] == "RTP fast path detached");
}

#[test]
fn pinned_flow_maps_survive_a_killed_daemon_and_a_clean_stop_removes_them() {
    require_tools(&["mount", "umount"]);
    // A bpffs of the test's own, mounted before the daemons start so their mount namespaces
    // (made by `ip netns exec`) see it.
    let bpffs = tempfile::tempdir().unwrap();
    let mnt = bpffs.path().display().to_string();
    let out = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpf", &mnt])
        .output()
        .unwrap();
    assert!(out.status.success(), "mount bpffs: {out:?}");
    struct Unmount(String);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let pins = bpffs.path().join("velocache");
    let extra = format!("pin_dir = \"{}\"\n", pins.display());
    let mut c = Call::setup(&extra);
    for m in ["RTP_FLOWS", "RTP_COUNTERS", "RTP_QUALITY", "RTP_CAPTURE"] {
        assert!(pins.join(m).exists(), "{m} not pinned");
    }
    c.daemon.kill9();
    assert!(
        pins.join("RTP_FLOWS").exists(),
        "pins outlive a killed daemon"
    );

    let mut second = Daemon::start(&c.lab, &config(&extra));
    let attached = second.wait_for_log(WAIT, |l| l["message"] == "RTP fast path attached");
    assert_eq!(attached["reused_pinned_maps"], 4, "{attached}");
    assert!(second.stop().success());
    assert!(!pins.exists(), "a clean stop removes the pins");
}
