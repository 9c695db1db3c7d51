//! A whole call through the observer with a fake media plane: the ladder, the per-direction
//! figures from the plane's statistics, the capture marks on the kernel flows, the pcap and the
//! live feed.
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use velocache_common::rtp::{FlowCounters, RtpQuality};

use crate::{
    admin::CallsAdmin,
    live::Live,
    rtp::{FlowSpec, FlowStats, MediaPlane, RtpError},
    sip::{Hop, Metrics, Observer, Settings, dialog::Side},
};

/// Flows from the client (10.77.1.2) send 100 packets with 2 lost; the far end's 80 with none.
#[derive(Default)]
struct Plane {
    installed: Mutex<Vec<FlowSpec>>,
    marked: Mutex<Vec<(FlowSpec, bool)>>,
}

impl MediaPlane for Plane {
    fn install(&self, flows: &[FlowSpec]) -> Result<(), RtpError> {
        self.installed.lock().unwrap().extend_from_slice(flows);
        Ok(())
    }
    fn stats(&self, flow: &FlowSpec) -> Option<FlowStats> {
        let up = flow.from.ip().to_string() == "10.77.1.2";
        let (packets, received, max_seq) = if up { (100, 98, 100) } else { (80, 80, 80) };
        Some(FlowStats {
            counters: FlowCounters {
                packets,
                bytes: packets * 200,
                redirected: packets,
                ..FlowCounters::default()
            },
            quality: RtpQuality {
                started: 1,
                base_seq: 1,
                max_seq,
                received,
                jitter_x16: 16 * 8,
                ..RtpQuality::default()
            },
        })
    }
    fn remove(&self, _flows: &[FlowSpec]) {}
    fn expire_orphans(&self, _known: &[FlowSpec], _idle_ns: u64) -> usize {
        0
    }
    fn capture(&self, flows: &[FlowSpec], on: bool) -> Result<(), RtpError> {
        let mut m = self.marked.lock().unwrap();
        m.extend(flows.iter().map(|f| (*f, on)));
        Ok(())
    }
}

fn sdp(ip: &str, port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
    )
}

fn message(start: &str, cseq: &str, body: &str) -> Vec<u8> {
    let ct = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".to_string()
    };
    format!(
        "{start}\r\n\
         Via: SIP/2.0/UDP 10.77.1.2:5061;branch=z9hG4bK-1\r\n\
         From: sipp <sip:sipp@10.77.1.2:5061>;tag=abc\r\n\
         To: <sip:service@10.77.2.2:5060>;tag=xyz\r\n\
         Call-ID: ladder-1@lab\r\n\
         CSeq: {cseq}\r\n\
         {ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn hop(from: Side) -> Hop {
    Hop {
        from,
        client: "10.77.1.2:5061".parse().unwrap(),
        far: "10.77.2.2:5060".parse().unwrap(),
        transport: "udp",
        relay: None,
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn a_call_shows_its_ladder_per_direction_figures_and_capture() {
    let plane = Arc::new(Plane::default());
    let live = Live::unregistered(100);
    let o = Observer::new(
        Settings {
            anchor: false,
            rtp_idle: Duration::from_secs(60),
            setup_timeout: Duration::from_secs(60),
            max_calls: 10,
        },
        plane.clone(),
        None,
        Metrics::default(),
    )
    .with_live(Some(live.clone()));
    let invite = message(
        "INVITE sip:service@10.77.2.2:5060 SIP/2.0",
        "1 INVITE",
        &sdp("10.77.1.2", 6000),
    );
    o.on_message(&invite, hop(Side::Client));
    o.on_message(
        &message("SIP/2.0 200 OK", "1 INVITE", &sdp("10.77.2.2", 7000)),
        hop(Side::Far),
    );
    let status = o.capture_start("ladder-1@lab").unwrap();
    assert!(status.active);
    let marked = plane.marked.lock().unwrap().clone();
    assert!(
        marked
            .iter()
            .any(|(f, on)| *on && f.from == addr("10.77.1.2:6000")),
        "{marked:?}"
    );
    assert!(
        marked
            .iter()
            .any(|(f, on)| *on && f.from == addr("10.77.2.2:7000"))
    );
    o.on_message(
        &message("ACK sip:service@10.77.2.2:5060 SIP/2.0", "1 ACK", ""),
        hop(Side::Client),
    );

    let show = o.show("ladder-1@lab").unwrap();
    let labels: Vec<&str> = show.messages.iter().map(|m| m.label.as_str()).collect();
    assert_eq!(labels, ["INVITE", "200 OK", "ACK"]);
    assert_eq!(show.messages[0].direction, "client->far");
    assert_eq!(show.messages[0].src, "10.77.1.2:5061");
    assert_eq!(show.messages[1].direction, "far->client");
    assert_eq!(show.messages[1].cseq, "1 INVITE");
    assert_eq!(show.messages[0].bytes, invite.len() as u64);
    let up = show
        .streams
        .iter()
        .find(|s| s.direction == "client->far")
        .unwrap();
    let down = show
        .streams
        .iter()
        .find(|s| s.direction == "far->client")
        .unwrap();
    assert_eq!((up.packets, up.lost, up.loss_pct), (100, 2, 2.0));
    assert_eq!((down.packets, down.lost), (80, 0));
    assert_eq!(up.src, "10.77.1.2:6000");
    assert_eq!(down.dst, "10.77.1.2:6000");
    assert!(down.mos.unwrap() > up.mos.unwrap());
    assert_eq!(up.jitter_ms, 1.0);
    assert_eq!(
        show.capture.as_ref().map(|c| c.packets),
        Some(3),
        "the INVITE and the 200 from before the start, then the ACK"
    );

    // The call ends; its page stays, with the figures at the end.
    o.on_message(
        &message("BYE sip:service@10.77.2.2:5060 SIP/2.0", "2 BYE", ""),
        hop(Side::Client),
    );
    o.on_message(&message("SIP/2.0 200 OK", "2 BYE", ""), hop(Side::Far));
    let show = o.show("ladder-1@lab").unwrap();
    assert_eq!(show.messages.len(), 5);
    assert_eq!(show.state, "completed");
    assert_eq!(show.streams.len(), 2);
    let stopped = o.capture_stop("ladder-1@lab").unwrap();
    assert_eq!((stopped.packets, stopped.active), (5, false));
    let pcap = o.pcap("ladder-1@lab").unwrap();
    assert_eq!(&pcap[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
    assert!(pcap.windows(3).any(|w| w == b"BYE"));
    assert!(pcap.windows(6).any(|w| w == b"INVITE"));
    assert!(o.show("nope").is_err());
    assert!(o.capture_start("ladder-1@lab").is_err(), "the call is over");

    let records = live.history(0).records;
    assert_eq!(records.len(), 5);
    assert_eq!(records[0].service, "sip");
    assert_eq!(records[0].host, "ladder-1@lab");
    assert_eq!(records[0].what, "INVITE");
    assert_eq!(records[1].what, "200 OK");
    assert_eq!(records[1].status, "200");
    assert_eq!(records[1].direction, "far->client");
    assert!(
        records[0]
            .detail
            .iter()
            .any(|(k, v)| k == "cseq" && v == "1 INVITE")
    );
}
