//! SDP bodies: what media each side announces, and (for anchoring) the same body with the
//! connection addresses and ports replaced.
//!
//! Parsing is `webrtc-sdp`'s (Mozilla's parser, maintained for Firefox; it reads the plain
//! RFC 4566 offers SIP phones send, not only WebRTC's). Its result is reduced to
//! [`MediaStream`]s: per `m=` line the address and ports where that side wants to receive RTP
//! and RTCP, the transport profile, and the clock rate of the first payload type (jitter is
//! measured in timestamp units, so the kernel needs it).
//!
//! Rewriting is done on the text, line by line, touching only `c=`, the port of `m=`, and
//! `a=rtcp:`: re-serialising the parsed session would reorder or drop attributes the endpoints
//! care about (crypto keys, fmtp), which is exactly what an observer must never do.
use std::net::IpAddr;

use thiserror::Error;
use webrtc_sdp::{
    SdpConnection,
    address::ExplicitlyTypedAddress,
    attribute_type::{SdpAttribute, SdpAttributeType},
    media_type::{SdpFormatList, SdpMediaValue, SdpProtocolValue},
};

/// The body is not SDP we can learn from.
#[derive(Debug, Error)]
pub enum SdpError {
    /// Not UTF-8.
    #[error("SDP is not UTF-8")]
    NotUtf8,
    /// webrtc-sdp rejected it.
    #[error("SDP does not parse: {0}")]
    Parse(String),
}

/// One `m=` line as its sender described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaStream {
    /// Position of the `m=` line (0-based); offer and answer streams pair up by it.
    pub index: usize,
    /// `audio`, `video`, `application`.
    pub kind: String,
    /// Where the sender receives RTP (`None`: an FQDN, which is not learned).
    pub addr: Option<IpAddr>,
    /// RTP port; 0 means the stream is rejected or disabled.
    pub port: u16,
    /// RTCP address and port (`a=rtcp`, else RTP port + 1; equal to `port` with `a=rtcp-mux`).
    pub rtcp_port: u16,
    /// Transport profile, e.g. `RTP/AVP`.
    pub protocol: String,
    /// SRTP profile (`RTP/SAVP`, `…/SAVPF`): relayed untouched, only headers are read.
    pub srtp: bool,
    /// Encoding name of the first payload type (`PCMA`, `opus`).
    pub codec: Option<String>,
    /// Clock rate of the first payload type in Hz.
    pub clock_rate: Option<u32>,
    /// `a=inactive`: no media expected.
    pub inactive: bool,
}

/// Static payload types of RFC 3551 table 4/5 (encoding, clock rate).
fn static_payload(pt: u32) -> Option<(&'static str, u32)> {
    Some(match pt {
        0 => ("PCMU", 8000),
        3 => ("GSM", 8000),
        4 => ("G723", 8000),
        8 => ("PCMA", 8000),
        9 => ("G722", 8000),
        18 => ("G729", 8000),
        26 => ("JPEG", 90_000),
        31 => ("H261", 90_000),
        34 => ("H263", 90_000),
        _ => return None,
    })
}

fn ip_of(addr: &ExplicitlyTypedAddress) -> Option<IpAddr> {
    match addr {
        ExplicitlyTypedAddress::Ip(ip) => Some(*ip),
        ExplicitlyTypedAddress::Fqdn { .. } => None,
    }
}

fn conn_ip(c: &Option<SdpConnection>) -> Option<IpAddr> {
    c.as_ref().and_then(|c| ip_of(&c.address))
}

/// The media streams an SDP body announces.
pub fn parse(body: &[u8]) -> Result<Vec<MediaStream>, SdpError> {
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
    let session = webrtc_sdp::parse_sdp(text, false).map_err(|e| SdpError::Parse(e.to_string()))?;
    let session_addr = conn_ip(session.get_connection());
    let mut out = Vec::new();
    for (index, m) in session.media.iter().enumerate() {
        let port = u16::try_from(m.get_port()).unwrap_or(0);
        let first_pt = match m.get_formats() {
            SdpFormatList::Integers(v) => v.first().copied(),
            _ => None,
        };
        let rtpmap = m.get_attributes().iter().find_map(|a| match a {
            SdpAttribute::Rtpmap(r) if Some(u32::from(r.payload_type)) == first_pt => {
                Some((r.codec_name.clone(), r.frequency))
            }
            _ => None,
        });
        let (codec, clock_rate) = match rtpmap {
            Some((c, f)) => (Some(c), Some(f)),
            None => match first_pt.and_then(static_payload) {
                Some((c, f)) => (Some(c.to_string()), Some(f)),
                None => (None, None),
            },
        };
        let mux = m.get_attribute(SdpAttributeType::RtcpMux).is_some();
        let rtcp_port = match m.get_attribute(SdpAttributeType::Rtcp) {
            Some(SdpAttribute::Rtcp(r)) => r.port,
            _ if mux => port,
            _ => port.saturating_add(1),
        };
        let protocol = m.get_proto().to_string();
        let srtp = matches!(
            m.get_proto(),
            SdpProtocolValue::RtpSavp
                | SdpProtocolValue::RtpSavpf
                | SdpProtocolValue::UdpTlsRtpSavp
                | SdpProtocolValue::UdpTlsRtpSavpf
        );
        out.push(MediaStream {
            index,
            kind: match m.get_type() {
                SdpMediaValue::Audio => "audio".into(),
                SdpMediaValue::Video => "video".into(),
                SdpMediaValue::Application => "application".into(),
                SdpMediaValue::Unknown(other) => other.clone(),
            },
            addr: conn_ip(m.get_connection()).or(session_addr),
            port,
            rtcp_port,
            protocol,
            srtp,
            codec,
            clock_rate,
            inactive: m.get_attribute(SdpAttributeType::Inactive).is_some(),
        });
    }
    Ok(out)
}

/// Where one anchored stream is to be announced instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replacement {
    /// `m=` line index.
    pub index: usize,
    /// The gateway address the other side should send to.
    pub addr: IpAddr,
    /// The gateway's RTP port.
    pub port: u16,
    /// The gateway's RTCP port.
    pub rtcp_port: u16,
}

fn conn_line(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => format!("c=IN IP4 {a}"),
        IpAddr::V6(a) => format!("c=IN IP6 {a}"),
    }
}

/// Rewrite `c=`, `m=` ports and `a=rtcp` for the streams in `with`; every other byte stays as
/// it was (line endings included). The session-level `c=` takes the first replacement's
/// address; a media section that had no `c=` of its own but is anchored elsewhere gets one.
pub fn rewrite(body: &str, with: &[Replacement]) -> String {
    let find = |i: usize| with.iter().find(|r| r.index == i);
    let mut out = String::with_capacity(body.len() + 64);
    let mut media: Option<usize> = None;
    let mut next_media = 0usize;
    let mut media_has_c = false;
    let eol = if body.contains("\r\n") { "\r\n" } else { "\n" };
    for raw in body.split_inclusive('\n') {
        let line = raw.trim_end_matches(['\r', '\n']);
        let ending = &raw[line.len()..];
        if line.starts_with("m=") {
            // A media section ends: one announced at session level only keeps that address.
            media = Some(next_media);
            next_media += 1;
            media_has_c = false;
            if let Some(r) = find(next_media - 1) {
                let mut parts: Vec<&str> = line.splitn(3, ' ').collect();
                let port = r.port.to_string();
                if parts.len() == 3 && parts[1] != "0" {
                    parts[1] = &port;
                    out.push_str(&parts.join(" "));
                    out.push_str(ending);
                    continue;
                }
            }
        } else if line.starts_with("c=") {
            let target = match media {
                None => with.first(),
                Some(i) => {
                    media_has_c = true;
                    find(i)
                }
            };
            if let Some(r) = target {
                out.push_str(&conn_line(r.addr));
                out.push_str(ending);
                continue;
            }
        } else if let Some(rest) = line.strip_prefix("a=rtcp:")
            && let Some(r) = media.and_then(find)
        {
            let tail = rest.split_once(' ').map(|(_, t)| t);
            out.push_str(&format!("a=rtcp:{}", r.rtcp_port));
            if tail.is_some() {
                let c = conn_line(r.addr);
                out.push(' ');
                out.push_str(&c[2..]);
            }
            out.push_str(ending);
            continue;
        } else if line.starts_with("a=")
            && !media_has_c
            && let Some(i) = media
            && let Some(r) = find(i)
            && let Some(session) = with.first()
            && session.addr != r.addr
        {
            // Rare: streams anchored on different addresses need their own c= lines.
            out.push_str(&conn_line(r.addr));
            out.push_str(eol);
            media_has_c = true;
        }
        out.push_str(raw);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 10.77.1.2\r\ns=-\r\nc=IN IP4 10.77.1.2\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-11,16\r\nm=video 0 RTP/AVP 31\r\n";

    #[test]
    fn streams_with_addresses_ports_and_clock_rates() {
        let s = parse(OFFER.as_bytes()).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].kind, "audio");
        assert_eq!(s[0].addr, Some("10.77.1.2".parse().unwrap()));
        assert_eq!((s[0].port, s[0].rtcp_port), (6000, 6001));
        assert_eq!(s[0].codec.as_deref(), Some("PCMA"));
        assert_eq!(s[0].clock_rate, Some(8000));
        assert!(!s[0].srtp);
        assert_eq!(s[1].port, 0, "rejected stream");
        assert_eq!(s[1].clock_rate, Some(90_000), "static payload type");
    }

    #[test]
    fn srtp_rtcp_attribute_and_media_level_connection() {
        let sdp = "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=x\nt=0 0\nm=audio 4000 RTP/SAVP 0\nc=IN IP4 5.6.7.8\na=rtcp:4005\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\n";
        let s = parse(sdp.as_bytes()).unwrap();
        assert!(s[0].srtp);
        assert_eq!(s[0].addr, Some("5.6.7.8".parse().unwrap()));
        assert_eq!(s[0].rtcp_port, 4005);
        assert_eq!(s[0].clock_rate, Some(8000));
    }

    #[test]
    fn malformed_sdp_is_an_error() {
        assert!(parse(b"v=0\r\nm=audio banana\r\n").is_err());
        assert!(parse(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn rewrite_touches_only_connection_ports_and_rtcp() {
        let with = [Replacement {
            index: 0,
            addr: "10.77.2.1".parse().unwrap(),
            port: 30000,
            rtcp_port: 30001,
        }];
        let body = OFFER.replace(
            "a=fmtp:101 0-11,16\r\n",
            "a=fmtp:101 0-11,16\r\na=rtcp:6001 IN IP4 10.77.1.2\r\n",
        );
        let out = rewrite(&body, &with);
        assert!(out.contains("\r\nc=IN IP4 10.77.2.1\r\n"), "{out}");
        assert!(out.contains("\r\nm=audio 30000 RTP/AVP 8 101\r\n"), "{out}");
        assert!(
            out.contains("\r\nm=video 0 RTP/AVP 31\r\n"),
            "rejected stream kept"
        );
        assert!(out.contains("o=user1 53655765 2353687637 IN IP4 10.77.1.2\r\n"));
        assert!(out.contains("a=fmtp:101 0-11,16\r\n"));
        assert!(
            out.contains("\r\na=rtcp:30001 IN IP4 10.77.2.1\r\nm=video"),
            "{out}"
        );
        let again = parse(out.as_bytes()).unwrap();
        assert_eq!(again[0].addr, Some("10.77.2.1".parse().unwrap()));
        assert_eq!((again[0].port, again[0].rtcp_port), (30000, 30001));
    }
}
