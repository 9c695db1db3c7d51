//! One call's page and capture (`velocache calls show|capture`, `/v1/calls/show`): sipp phones
//! in `client` and `origin`, media relayed by the XDP fast path, the capture checked with
//! tshark.
use std::{path::Path, process::Command, time::Duration};

use serde_json::Value;
use velocache_tests::{
    addr,
    sipp::{self, Answer, PCAP_DIR},
};

use crate::{control::cli, sip::Call};

const UAC_MEDIA: u16 = 6000;
const UAS_MEDIA: u16 = 7000;
const WAIT: Duration = Duration::from_secs(30);

/// `tshark -r FILE` with both media ports decoded as RTP: one line of `fields` per packet
/// matching `filter`.
fn tshark(file: &Path, filter: &str, fields: &[&str]) -> Vec<String> {
    let mut args = vec![
        "-r".to_string(),
        file.display().to_string(),
        "-d".into(),
        format!("udp.port=={UAC_MEDIA},rtp"),
        "-d".into(),
        format!("udp.port=={UAS_MEDIA},rtp"),
        "-Y".into(),
        filter.into(),
        "-T".into(),
        "fields".into(),
    ];
    for f in fields {
        args.extend(["-e".to_string(), (*f).to_string()]);
    }
    let out = Command::new("tshark").args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "tshark {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_call_captured_with_the_cli_holds_its_sip_and_the_fast_paths_rtp_both_ways() {
    let tokens = tempfile::tempdir().unwrap();
    let c = Call::setup(&crate::live::web_config(tokens.path(), ""));
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
    // The call is answered: capture it until after its BYE.
    let started = std::time::Instant::now();
    let call_id = loop {
        let calls = cli(&c.lab, &c.daemon, &["calls", "--json"]).ok();
        if let Some(a) = calls["active"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["state"] == "confirmed")
        {
            break a["call_id"].as_str().unwrap().to_string();
        }
        assert!(
            uac.try_wait().is_none() && started.elapsed() < WAIT,
            "no confirmed call: {calls}\nsipp: {}\n{}",
            uac.stdout(),
            c.daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let file = c.dir.path().join("call.pcap");
    let out = cli(
        &c.lab,
        &c.daemon,
        &[
            "calls",
            "capture",
            &call_id,
            "--seconds",
            "10",
            "-o",
            &file.display().to_string(),
        ],
    );
    assert_eq!(
        out.code,
        0,
        "{}\n{}\n{}",
        out.stdout,
        out.stderr,
        c.daemon.log_text()
    );
    assert!(out.stdout.contains("RTP"), "{}", out.stdout);
    let status = uac.wait_timeout(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "sipp UAC failed:\n{}", uac.stdout());

    // The call's SIP with real addresses and ports: its setup (kept since the INVITE), and
    // what came during the capture.
    let sip = tshark(
        &file,
        "sip",
        &[
            "ip.src",
            "udp.srcport",
            "sip.Method",
            "sip.Status-Code",
            "sip.CSeq.method",
        ],
    );
    let (client, far) = (
        format!("{}\t5061", addr::CLIENT),
        format!("{}\t5060", addr::ORIGIN),
    );
    for want in [
        format!("{client}\tINVITE\t\tINVITE"),
        format!("{far}\t\t200\tINVITE"),
        format!("{client}\tACK\t\tACK"),
        format!("{client}\tBYE\t\tBYE"),
        format!("{far}\t\t200\tBYE"),
    ] {
        assert!(sip.contains(&want), "{want:?} missing: {sip:?}");
    }
    // RTP in both directions, every packet of which the kernel forwarded itself.
    let rtp = tshark(
        &file,
        "rtp",
        &["ip.src", "udp.srcport", "ip.dst", "udp.dstport"],
    );
    let up_key = format!(
        "{}\t{UAC_MEDIA}\t{}\t{UAS_MEDIA}",
        addr::CLIENT,
        addr::ORIGIN
    );
    let down_key = format!(
        "{}\t{UAS_MEDIA}\t{}\t{UAC_MEDIA}",
        addr::ORIGIN,
        addr::CLIENT
    );
    let up = rtp.iter().filter(|l| **l == up_key).count();
    let down = rtp.iter().filter(|l| **l == down_key).count();
    println!("capture: {} SIP, RTP up {up}, down {down}", sip.len());
    // The capture starts a moment after the answer, and the stream is 236 packets (4.7 s).
    assert!(
        up >= 150,
        "RTP client->far in the capture: {up} of {}",
        rtp.len()
    );
    assert!(
        down >= 150,
        "RTP far->client in the capture: {down} of {}",
        rtp.len()
    );
    assert_eq!(up + down, rtp.len(), "only this call's media");

    // The dashboard's live feed saw every message, each way.
    let browser = crate::live::Browser::login(&c.lab, crate::live::ADMIN);
    let invite = browser.wait_record(|r| {
        r["service"] == "sip" && r["id"] == call_id.as_str() && r["what"] == "INVITE"
    });
    assert_eq!(invite["direction"], "client->far", "{invite}");
    let ok = browser.wait_record(|r| {
        r["service"] == "sip" && r["id"] == call_id.as_str() && r["what"] == "200 OK"
    });
    assert_eq!(ok["direction"], "far->client", "{ok}");
    browser.wait_record(|r| {
        r["service"] == "sip" && r["id"] == call_id.as_str() && r["what"] == "BYE"
    });

    // The call's page: the whole ladder and the figures of each direction at the end.
    let show = cli(&c.lab, &c.daemon, &["calls", "show", &call_id, "--json"]).ok();
    let labels: Vec<&str> = show["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["label"].as_str().unwrap())
        .collect();
    for want in ["INVITE", "180 Ringing", "200 OK", "ACK", "BYE"] {
        assert!(labels.contains(&want), "{want} missing: {show}");
    }
    let invite = &show["messages"][0];
    assert_eq!(invite["label"], "INVITE", "{show}");
    assert_eq!(invite["direction"], "client->far", "{show}");
    assert_eq!(invite["src"], format!("{}:5061", addr::CLIENT), "{show}");
    assert_eq!(invite["dst"], format!("{}:5060", addr::ORIGIN), "{show}");
    assert_eq!(invite["cseq"], "1 INVITE", "{show}");
    assert_eq!(invite["transport"], "udp", "{show}");
    assert!(invite["bytes"].as_u64().unwrap() > 200, "{show}");
    assert_eq!(show["state"], "completed", "{show}");
    for (direction, src) in [
        ("client->far", format!("{}:{UAC_MEDIA}", addr::CLIENT)),
        ("far->client", format!("{}:{UAS_MEDIA}", addr::ORIGIN)),
    ] {
        let s: &Value = show["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["direction"] == direction)
            .unwrap_or_else(|| panic!("no {direction} stream: {show}"));
        assert_eq!(s["src"], src, "{show}");
        assert_eq!(s["packets"], sipp::G711A_PACKETS, "{show}");
        assert_eq!(s["fast_path_packets"], sipp::G711A_PACKETS, "{show}");
        assert_eq!(s["lost"], 0, "{show}");
        assert!(s["mos"].as_f64().unwrap() > 4.0, "{show}");
        assert!(s["jitter_ms"].is_f64(), "{show}");
    }
    let capture = &show["capture"];
    assert_eq!(capture["active"], false, "{show}");
    assert_eq!(capture["rtp_packets"], (up + down) as u64, "{show}");
    // The human ladder draws the messages between the two signalling addresses.
    let human = cli(&c.lab, &c.daemon, &["calls", "show", &call_id]);
    assert_eq!(human.code, 0, "{}", human.stderr);
    assert!(
        human.stdout.contains("INVITE (1 INVITE)"),
        "{}",
        human.stdout
    );
    assert!(human.stdout.contains("far->client"), "{}", human.stdout);
    // No flow keeps its capture mark: the call's flows are gone from the kernel.
    let maps = velocache_tests::xdp::xdp_map_entries(&c.lab.gw, addr::LAN_IF);
    assert_eq!(maps.get("RTP_FLOWS"), Some(&0), "{maps:?}");
}

#[test]
fn a_call_that_is_not_in_progress_cannot_be_captured_and_unknown_calls_are_not_found() {
    let c = Call::setup("");
    let out = cli(
        &c.lab,
        &c.daemon,
        &["calls", "capture", "no-such-call", "--seconds", "1"],
    );
    assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
    let out = cli(&c.lab, &c.daemon, &["calls", "show", "no-such-call"]);
    assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
}
