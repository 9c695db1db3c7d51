//! sipp, the SIP traffic generator, as the lab's phones: scenarios and runs.
//!
//! The UAC (in `client`) places calls whose SDP offers `[media_ip]:[media_port]` and, once
//! answered, plays a pcap of real RTP (sipp ships `g711a.pcap`: 236 G.711 A-law packets over
//! 7 s) from that very port — symmetric RTP, as phones do. The UAS (in `origin`) answers with
//! its own media address, or refuses with a given status; with `-rtp_echo` it sends every RTP
//! packet back to where it came from, so both directions carry media. Scenarios are written to
//! a scratch directory, runs are bounded by sipp's own timeouts.
use std::path::{Path, PathBuf};

use crate::{Background, Ns};

/// Where Debian's sip-tester keeps its RTP captures.
pub const PCAP_DIR: &str = "/usr/share/sip-tester";
/// Packets in `g711a.pcap`.
pub const G711A_PACKETS: u64 = 236;

/// How the UAS answers.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// 180, then 200 with SDP; waits for ACK and BYE.
    Accept,
    /// A final failure, e.g. `(486, "Busy Here")`.
    Refuse(u16, &'static str),
}

/// A UAC scenario: INVITE with SDP, ACK, play `pcap`, optionally play a DTMF capture on the same
/// stream, wait `hold_ms`, BYE. With `expect_failure`, the call is expected to fail and the
/// scenario accepts any 4xx–6xx (sipp then ACKs it itself).
pub fn uac_scenario(pcap: &str, dtmf: Option<&str>, hold_ms: u64, expect_failure: bool) -> String {
    let invite = INVITE;
    if expect_failure {
        return format!(
            r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="velocache failing uac">
{invite}  <recv response="486" optional="true" next="done"/>
  <recv response="603" optional="true" next="done"/>
  <recv response="404"/>
  <label id="done"/>
</scenario>
"#
        );
    }
    uac_call(invite, pcap, dtmf, hold_ms)
}

/// A UAC scenario whose INVITE must be answered with exactly `status` (sipp ACKs it itself):
/// nothing else is accepted, so the run fails if the call goes through.
pub fn uac_refused_scenario(status: u16) -> String {
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="velocache refused uac">
{INVITE}  <recv response="{status}"/>
</scenario>
"#
    )
}

/// The INVITE every UAC scenario starts with (to `[service]`, sipp's `-s`).
const INVITE: &str = r#"  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Subject: velocache lab call
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
"#;

fn uac_call(invite: &str, pcap: &str, dtmf: Option<&str>, hold_ms: u64) -> String {
    let dtmf = dtmf
        .map(|d| {
            format!(
                "  <nop><action><exec play_pcap_audio=\"{d}\"/></action></nop>\n  <pause milliseconds=\"1500\"/>\n"
            )
        })
        .unwrap_or_default();
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="velocache uac with rtp">
{invite}  <recv response="200" rtd="true"/>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>
  <pause milliseconds="{hold_ms}"/>
{dtmf}  <send retrans="500">
    <![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"#
    )
}

/// A UAS scenario answering every INVITE as `answer` says.
pub fn uas_scenario(answer: Answer) -> String {
    let body = match answer {
        Answer::Refuse(code, reason) => format!(
            r#"  <send>
    <![CDATA[
      SIP/2.0 {code} {reason}
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK"/>
"#
        ),
        Answer::Accept => r#"  <send>
    <![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="200"/>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000

    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
"#
        .to_string(),
    };
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="velocache uas">
  <recv request="INVITE"/>
{body}</scenario>
"#
    )
}

/// Write `xml` to `dir/name` and return the path.
pub fn write_scenario(dir: &Path, name: &str, xml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, xml).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// Start a UAS in `ns` on `ip:5060` (media on `media_port`, echoing RTP) for `calls` calls.
/// `transport` is `u1` (UDP) or `t1` (TCP).
pub fn start_uas(
    ns: &Ns,
    ip: &str,
    scenario: &Path,
    media_port: u16,
    calls: u32,
    transport: &str,
) -> Background {
    let media_port = media_port.to_string();
    let calls = calls.to_string();
    ns.spawn(&[
        "sipp",
        "-sf",
        &scenario.display().to_string(),
        "-i",
        ip,
        "-p",
        "5060",
        "-t",
        transport,
        "-mi",
        ip,
        "-mp",
        &media_port,
        "-rtp_echo",
        "-m",
        &calls,
        "-nostdin",
        "-timeout",
        "120s",
    ])
}

/// The command line of a UAC from `ip:5061` (media on `media_port`) to `target:5060`.
fn uac_args(
    ip: &str,
    target: &str,
    scenario: &Path,
    media_port: u16,
    calls: u32,
    transport: &str,
) -> Vec<String> {
    uac_args_to(
        ip, target, scenario, media_port, calls, transport, "service",
    )
}

/// [`uac_args`] calling `service` (the Request-URI's user part).
fn uac_args_to(
    ip: &str,
    target: &str,
    scenario: &Path,
    media_port: u16,
    calls: u32,
    transport: &str,
    service: &str,
) -> Vec<String> {
    [
        "sipp",
        &format!("{target}:5060"),
        "-sf",
        &scenario.display().to_string(),
        "-i",
        ip,
        "-p",
        "5061",
        "-t",
        transport,
        "-mi",
        ip,
        "-mp",
        &media_port.to_string(),
        "-m",
        &calls.to_string(),
        "-nostdin",
        "-timeout",
        "60s",
        "-timeout_error",
        "-s",
        service,
    ]
    .map(String::from)
    .to_vec()
}

/// Run a UAC in `ns` from `ip:5061` (media on `media_port`) to `target:5060`: `calls` calls
/// in all. Returns sipp's output and whether every call succeeded.
pub fn run_uac(
    ns: &Ns,
    ip: &str,
    target: &str,
    scenario: &Path,
    media_port: u16,
    calls: u32,
    transport: &str,
) -> (String, bool) {
    let args = uac_args(ip, target, scenario, media_port, calls, transport);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ns.run(&args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (text, out.status.success())
}

/// [`run_uac`] calling `service` (sipp's `-s`: the Request-URI's user part, e.g. a number).
#[expect(
    clippy::too_many_arguments,
    reason = "sipp's command line, passed flat"
)]
pub fn run_uac_to(
    ns: &Ns,
    ip: &str,
    target: &str,
    scenario: &Path,
    media_port: u16,
    calls: u32,
    transport: &str,
    service: &str,
) -> (String, bool) {
    let args = uac_args_to(ip, target, scenario, media_port, calls, transport, service);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ns.run(&args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (text, out.status.success())
}

/// [`start_uas`] that also writes every message it sends or receives to `message_file`
/// (sipp's `-trace_msg`): what a test reads to tell what reached the callee.
pub fn start_uas_traced(
    ns: &Ns,
    ip: &str,
    scenario: &Path,
    calls: u32,
    transport: &str,
    message_file: &Path,
) -> Background {
    ns.spawn(&[
        "sipp",
        "-sf",
        &scenario.display().to_string(),
        "-i",
        ip,
        "-p",
        "5060",
        "-t",
        transport,
        "-m",
        &calls.to_string(),
        "-nostdin",
        "-timeout",
        "120s",
        "-trace_msg",
        "-message_file",
        &message_file.display().to_string(),
    ])
}

/// [`run_uac`] in the background, to look at calls while they are in progress.
pub fn spawn_uac(
    ns: &Ns,
    ip: &str,
    target: &str,
    scenario: &Path,
    media_port: u16,
    calls: u32,
    transport: &str,
) -> Background {
    let args = uac_args(ip, target, scenario, media_port, calls, transport);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ns.spawn(&args)
}

/// Copy an RTP capture, dropping the packets `drop(i)` selects and moving each kept packet's
/// capture time by `shift_us(i)` microseconds. sipp replays a capture with its recorded
/// timing and RTP headers, so the result is a real stream with real sequence gaps and real
/// interarrival jitter, the same for every observer along the path. Returns (kept, dropped).
pub fn impaired_pcap(
    src: &Path,
    dst: &Path,
    drop: impl Fn(usize) -> bool,
    shift_us: impl Fn(usize) -> i64,
) -> (usize, usize) {
    let data = std::fs::read(src).unwrap_or_else(|e| panic!("reading {}: {e}", src.display()));
    assert_eq!(
        &data[..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "little-endian microsecond pcap expected"
    );
    let mut out = data[..24].to_vec();
    let (mut off, mut i, mut kept, mut dropped) = (24usize, 0usize, 0usize, 0usize);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    while off + 16 <= data.len() {
        let caplen = u32_at(&data, off + 8) as usize;
        let end = off + 16 + caplen;
        if end > data.len() {
            break;
        }
        if drop(i) {
            dropped += 1;
        } else {
            let t = i64::from(u32_at(&data, off)) * 1_000_000
                + i64::from(u32_at(&data, off + 4))
                + shift_us(i);
            out.extend_from_slice(&((t / 1_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&((t % 1_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&data[off + 8..end]);
            kept += 1;
        }
        off = end;
        i += 1;
    }
    std::fs::write(dst, out).unwrap_or_else(|e| panic!("writing {}: {e}", dst.display()));
    (kept, dropped)
}
