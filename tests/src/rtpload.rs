//! Pieces of `rtp-load`, the lab's RTP load generator and receiver (`src/bin/rtp-load.rs`):
//! RTP packets that carry their send time, the minimal SIP a benchmark needs to set calls up
//! through the gateway, and rtpengine's ng control protocol (bencode over UDP).
//!
//! Latency is one-way: every namespace shares the machine's `CLOCK_MONOTONIC`, so the
//! receiver subtracts the send time written into the payload from its own clock.
use std::net::SocketAddr;

/// `CLOCK_MONOTONIC` in nanoseconds (shared by every network namespace of the machine).
pub fn now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// An RTP packet (PCMA, version 2) whose payload starts with `sent_ns`.
pub fn rtp_packet(ssrc: u32, seq: u16, timestamp: u32, payload: usize, sent_ns: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload.max(8));
    p.extend_from_slice(&[0x80, 8]);
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&timestamp.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&sent_ns.to_le_bytes());
    p.resize(12 + payload.max(8), 0xd5);
    p
}

/// `(ssrc, seq, sent_ns)` of a packet made by [`rtp_packet`].
pub fn parse_rtp(buf: &[u8]) -> Option<(u32, u16, u64)> {
    if buf.len() < 20 || buf[0] >> 6 != 2 {
        return None;
    }
    let ssrc = u32::from_be_bytes(buf[8..12].try_into().ok()?);
    let seq = u16::from_be_bytes(buf[2..4].try_into().ok()?);
    let sent = u64::from_le_bytes(buf[12..20].try_into().ok()?);
    Some((ssrc, seq, sent))
}

/// Percentile `p` (0–100) of sorted samples.
pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The SDP body offering or answering one PCMA stream at `media`.
pub fn sdp(media: SocketAddr) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n",
        ip = media.ip(),
        port = media.port()
    )
}

/// A request of a bench call (`INVITE` with SDP, `ACK`, `BYE`).
pub fn request(
    method: &str,
    call_id: &str,
    cseq: u32,
    local: SocketAddr,
    remote: SocketAddr,
    to_tag: Option<&str>,
    body: Option<&str>,
) -> String {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let (ctype, body) = match body {
        Some(b) => ("Content-Type: application/sdp\r\n", b),
        None => ("", ""),
    };
    format!(
        "{method} sip:bench@{remote} SIP/2.0\r\nVia: SIP/2.0/UDP {local};rport;branch=z9hG4bK-{call_id}-{cseq}-{method}\r\nFrom: <sip:load@{local}>;tag=load\r\nTo: <sip:bench@{remote}>{to_tag}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:load@{local}>\r\nMax-Forwards: 70\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The value of header `name` (case-insensitive) in a message.
pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    let head = msg.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The status code of a response.
pub fn status(msg: &str) -> Option<u16> {
    msg.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// The `tag` parameter of a From/To value.
pub fn tag(value: &str) -> Option<&str> {
    value.split(';').find_map(|p| p.trim().strip_prefix("tag="))
}

/// Where an SDP body (in a message or alone) wants its audio: `c=` address and `m=audio` port.
pub fn sdp_media(text: &str) -> Option<SocketAddr> {
    let mut ip = None;
    let mut port = None;
    for l in text.lines() {
        if let Some(a) = l.strip_prefix("c=IN IP4 ") {
            ip = a.trim().parse::<std::net::Ipv4Addr>().ok();
        } else if let Some(m) = l.strip_prefix("m=audio ") {
            port = m
                .split_whitespace()
                .next()
                .and_then(|p| p.parse::<u16>().ok());
        }
    }
    Some(SocketAddr::new(ip?.into(), port?))
}

/// A response to `req` (copying Via, From, To, Call-ID, CSeq), optionally with SDP.
pub fn response(req: &str, code: u16, reason: &str, to_tag: &str, body: Option<&str>) -> String {
    let h = |n| header(req, n).unwrap_or("");
    let to = h("To");
    let to = if tag(to).is_some() {
        to.to_string()
    } else {
        format!("{to};tag={to_tag}")
    };
    let (ctype, body) = match body {
        Some(b) => ("Content-Type: application/sdp\r\n", b),
        None => ("", ""),
    };
    format!(
        "SIP/2.0 {code} {reason}\r\nVia: {}\r\nFrom: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
        h("Via"),
        h("From"),
        h("Call-ID"),
        h("CSeq"),
        body.len()
    )
}

/// A bencoded dictionary of strings (keys sorted, as bencode requires).
pub fn bencode(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut sorted = pairs.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = b"d".to_vec();
    for (k, v) in sorted {
        out.extend_from_slice(format!("{}:{k}{}:", k.len(), v.len()).as_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out.push(b'e');
    out
}

/// A string value of a bencoded dictionary (top level, by key).
pub fn bencode_get(data: &[u8], key: &str) -> Option<String> {
    let needle = format!("{}:{key}", key.len());
    let at = data
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())?
        + needle.len();
    let rest = &data[at..];
    let colon = rest.iter().position(|b| *b == b':')?;
    let len: usize = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
    let value = rest.get(colon + 1..colon + 1 + len)?;
    Some(String::from_utf8_lossy(value).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_round_trip_and_sip_helpers_read_what_they_write() {
        let p = rtp_packet(9, 7, 160, 160, 123_456);
        assert_eq!(p.len(), 172);
        assert_eq!(parse_rtp(&p), Some((9, 7, 123_456)));
        let local: SocketAddr = "10.0.0.2:5062".parse().unwrap();
        let remote: SocketAddr = "10.0.0.3:5060".parse().unwrap();
        let media: SocketAddr = "10.0.0.2:6000".parse().unwrap();
        let inv = request("INVITE", "c1", 1, local, remote, None, Some(&sdp(media)));
        assert_eq!(header(&inv, "call-id"), Some("c1"));
        assert_eq!(sdp_media(&inv), Some(media));
        let ok = response(&inv, 200, "OK", "uas", Some(&sdp(remote)));
        assert_eq!(status(&ok), Some(200));
        assert_eq!(tag(header(&ok, "To").unwrap()), Some("uas"));
        let d = bencode(&[("sdp", "v=0"), ("command", "offer")]);
        assert_eq!(d, b"d7:command5:offer3:sdp3:v=0e");
        assert_eq!(bencode_get(&d, "sdp").as_deref(), Some("v=0"));
        assert_eq!(percentile(&[1, 2, 3, 4], 50.0), 3);
    }
}
