//! SIP observation and the RTP fast path, with sipp phones in `client` and `origin`.
use std::time::Duration;

use serde_json::Value;
use velocache_tests::{
    Daemon, Lab, addr, require_tools,
    sipp::{self, Answer, G711A_PACKETS, PCAP_DIR},
    xdp,
};

const WAIT: Duration = Duration::from_secs(30);
const UAS_MEDIA: u16 = 7000;
const UAC_MEDIA: u16 = 6000;

/// Daemon config: the fast path on both gateway interfaces.
fn config(extra: &str) -> String {
    format!(
        "[sip]\nmedia_interfaces = [\"{}\", \"{}\"]\nrtp_idle_timeout_secs = 5\n{extra}",
        addr::LAN_IF,
        addr::WAN_IF
    )
}

fn lines<'a>(logs: &'a [Value], message: &str) -> Vec<&'a Value> {
    logs.iter().filter(|l| l["message"] == message).collect()
}

#[test]
fn a_call_with_rtp_is_recorded_and_its_media_counted_in_the_kernel() {
    require_tools(&["sipp"]);
    let lab = Lab::new();
    xdp::prepare_for_xdp(&lab);
    let dir = tempfile::tempdir().unwrap();
    let uas_xml = sipp::write_scenario(dir.path(), "uas.xml", &sipp::uas_scenario(Answer::Accept));
    let uac_xml = sipp::write_scenario(
        dir.path(),
        "uac.xml",
        &sipp::uac_scenario(&format!("{PCAP_DIR}/g711a.pcap"), None, 8000, false),
    );
    let daemon = Daemon::start(&lab, &config(""));
    for dev in [addr::LAN_IF, addr::WAN_IF] {
        assert!(
            xdp::xdp_attached(&lab.gw, dev),
            "no XDP on {dev}: {}\n{}",
            lab.gw.run_ok(&["ip", "-d", "link", "show", dev]),
            daemon.log_text()
        );
    }
    let _uas = sipp::start_uas(&lab.origin, addr::ORIGIN, &uas_xml, UAS_MEDIA, 1, "u1");
    std::thread::sleep(Duration::from_millis(300));
    let (out, ok) = sipp::run_uac(&lab.client, addr::CLIENT, addr::ORIGIN, &uac_xml, UAC_MEDIA, 1, "u1");
    assert!(ok, "sipp UAC failed:\n{out}\n{}", daemon.log_text());

    let call = daemon.wait_for_log(WAIT, |l| l["message"] == "call");
    println!("{call}");
    let logs = daemon.logs();
    for l in lines(&logs, "rtp stream") {
        println!("{l}");
    }
    for l in lines(&logs, "sip") {
        println!("{l}");
    }
    assert_eq!(call["outcome"], "completed", "{call}");
    assert_eq!(call["status"], 200);
    assert_eq!(call["ended_by"], "BYE from client");
    assert!(call["setup_ms"].as_u64().unwrap() >= 200, "{call}");
    assert!(call["pdd_ms"].as_u64().is_some(), "{call}");
    assert!(call["duration_ms"].as_u64().unwrap() >= 7000, "{call}");
    assert_eq!(call["up_packets"], G711A_PACKETS, "{call}");
    assert_eq!(call["down_packets"], G711A_PACKETS, "{call}");
    assert_eq!(call["up_lost"], 0, "{call}");
}
