//! SDP bodies: what media each side announces, and (for anchoring) the same body with the
//! connection addresses and ports replaced.
//!
//! Parsing is a line reader of our own for the few lines an observer needs (RFC 8866 §5:
//! `v=`, `c=`, `m=`, and the `rtpmap`, `rtcp`, `rtcp-mux` and `inactive` attributes); every
//! other line is checked only for the `x=value` shape and otherwise ignored, as the RFC asks
//! of unknown attributes. A general parser (webrtc-sdp, tried first) judges SIP's SDP by
//! WebRTC's rules: it refused `a=rtpmap:31 LPC` (an rtpmap without a clock rate, valid in
//! RFC 2327), dropped `m=` lines with a transport it does not know (T.38's `udptl`,
//! `UDP/BFCP`) so the streams after them were misnumbered, and logged warnings of its own for
//! `a=crypto`. Its result is reduced to [`MediaStream`]s: per `m=` line the address and ports
//! where that side wants to receive RTP and RTCP, the transport profile, and the clock rate of
//! the first payload type (jitter is measured in timestamp units, so the kernel needs it).
//!
//! Rewriting is done on the text, line by line, touching only `c=`, the port of `m=`, and
//! `a=rtcp:`: re-serialising the parsed session would reorder or drop attributes the endpoints
//! care about (crypto keys, fmtp), which is exactly what an observer must never do.
use std::net::IpAddr;

use thiserror::Error;

/// The body is not SDP we can learn from.
#[derive(Debug, Error)]
pub enum SdpError {
    /// Not UTF-8.
    #[error("SDP is not UTF-8")]
    NotUtf8,
    /// A line the media description needs does not parse.
    #[error("SDP line {line}: {reason}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// One `m=` line as its sender described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaStream {
    /// Position of the `m=` line (0-based); offer and answer streams pair up by it.
    pub index: usize,
    /// `audio`, `video`, `application`, `image`, …
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

/// A media section being read.
struct Section {
    stream: MediaStream,
    first_pt: Option<u32>,
    rtpmap: Option<(String, Option<u32>)>,
    rtcp: Option<u16>,
    mux: bool,
    has_addr: bool,
}

impl Section {
    fn finish(self, session_addr: Option<IpAddr>) -> MediaStream {
        let mut s = self.stream;
        if !self.has_addr {
            s.addr = session_addr;
        }
        let (codec, clock_rate) = match (self.rtpmap, self.first_pt.and_then(static_payload)) {
            (Some((name, rate)), _) => (Some(name), rate),
            (None, Some((name, rate))) => (Some(name.to_string()), Some(rate)),
            (None, None) => (None, None),
        };
        s.codec = codec;
        s.clock_rate = clock_rate;
        s.rtcp_port = match self.rtcp {
            Some(p) => p,
            None if self.mux => s.port,
            None => s.port.saturating_add(1),
        };
        s
    }
}

/// `c=IN IP4 192.0.2.1[/ttl]`: the address (`None` for a name), or why it does not parse.
fn connection(value: &str) -> Result<Option<IpAddr>, String> {
    let mut t = value.split_whitespace();
    let (Some(_net), Some(kind), Some(addr)) = (t.next(), t.next(), t.next()) else {
        return Err(format!(
            "connection line `{value}` needs a network, type and address"
        ));
    };
    if !kind.eq_ignore_ascii_case("IP4") && !kind.eq_ignore_ascii_case("IP6") {
        return Ok(None);
    }
    let host = addr.split('/').next().unwrap_or(addr);
    Ok(host.parse().ok())
}

/// `m=audio 49170[/2] RTP/AVP 0 8`.
fn media(index: usize, value: &str) -> Result<(MediaStream, Option<u32>), String> {
    let t: Vec<&str> = value.split_whitespace().collect();
    let [kind, port, proto, fmt, ..] = t.as_slice() else {
        return Err(format!(
            "media line `{value}` needs a type, port, transport and format"
        ));
    };
    let port: u16 = port
        .split('/')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("media port `{port}` is not a port"))?;
    let upper = proto.to_ascii_uppercase();
    let srtp = matches!(
        upper.as_str(),
        "RTP/SAVP" | "RTP/SAVPF" | "UDP/TLS/RTP/SAVP" | "UDP/TLS/RTP/SAVPF"
    );
    let kind = match kind.to_ascii_lowercase().as_str() {
        k @ ("audio" | "video" | "application") => k.to_string(),
        _ => kind.to_string(),
    };
    let stream = MediaStream {
        index,
        kind,
        addr: None,
        port,
        rtcp_port: 0,
        protocol: proto.to_string(),
        srtp,
        codec: None,
        clock_rate: None,
        inactive: false,
    };
    Ok((stream, fmt.parse().ok()))
}

/// `a=rtpmap:8 PCMA/8000[/1]` → payload type, encoding, clock rate (absent in old SDP).
fn rtpmap(value: &str) -> Option<(u32, String, Option<u32>)> {
    let (pt, rest) = value.trim().split_once([' ', '\t'])?;
    let mut parts = rest.trim().split('/');
    let name = parts.next().filter(|n| !n.is_empty())?;
    let rate = parts.next().and_then(|r| r.trim().parse().ok());
    Some((pt.parse().ok()?, name.to_string(), rate))
}

/// The media streams an SDP body announces.
pub fn parse(body: &[u8]) -> Result<Vec<MediaStream>, SdpError> {
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
    let mut session_addr = None;
    let mut sections: Vec<Section> = Vec::new();
    let mut seen_version = false;
    for (n, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let err = |reason: String| SdpError::Parse {
            line: n + 1,
            reason,
        };
        if line.trim().is_empty() {
            continue;
        }
        let b = line.as_bytes();
        if b.len() < 2 || !b[0].is_ascii_lowercase() || b[1] != b'=' {
            let shown: String = line.chars().take(40).collect();
            return Err(err(format!("`{shown}` is not a `x=value` line")));
        }
        let value = &line[2..];
        if !seen_version {
            if b[0] != b'v' || value.trim() != "0" {
                return Err(err("SDP starts with `v=0`".into()));
            }
            seen_version = true;
            continue;
        }
        match b[0] {
            b'm' => {
                let (stream, first_pt) = media(sections.len(), value).map_err(err)?;
                sections.push(Section {
                    stream,
                    first_pt,
                    rtpmap: None,
                    rtcp: None,
                    mux: false,
                    has_addr: false,
                });
            }
            b'c' => {
                let addr = connection(value).map_err(err)?;
                match sections.last_mut() {
                    Some(s) => {
                        s.stream.addr = addr;
                        s.has_addr = true;
                    }
                    None => session_addr = addr,
                }
            }
            b'a' => {
                let Some(s) = sections.last_mut() else {
                    continue;
                };
                let (name, arg) = value.split_once(':').unwrap_or((value, ""));
                match name.trim() {
                    "rtpmap" => {
                        if let Some((pt, codec, rate)) = rtpmap(arg)
                            && Some(pt) == s.first_pt
                        {
                            s.rtpmap = Some((codec, rate));
                        }
                    }
                    "rtcp" => {
                        s.rtcp = arg.split_whitespace().next().and_then(|p| p.parse().ok());
                    }
                    "rtcp-mux" => s.mux = true,
                    "inactive" => s.stream.inactive = true,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if !seen_version {
        return Err(SdpError::Parse {
            line: 1,
            reason: "empty SDP".into(),
        });
    }
    Ok(sections
        .into_iter()
        .map(|s| s.finish(session_addr))
        .collect())
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
    fn an_rtpmap_without_a_clock_rate_is_old_sdp_not_malformed() {
        // RFC 4475's INVITEs all carry `a=rtpmap:31 LPC` (RFC 2327 allowed it).
        let m = crate::sip::message::parse(&crate::sip::message::tests::rfc4475("wsinv")).unwrap();
        let s = parse(&m.body).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].port, s[0].codec.as_deref()), (49217, Some("PCMU")));
        assert_eq!(s[0].addr, Some("192.0.2.4".parse().unwrap()));
        assert_eq!((s[1].port, s[1].codec.as_deref()), (3227, Some("LPC")));
        assert_eq!(s[1].clock_rate, None);
    }

    #[test]
    fn t38_bfcp_and_crypto_keep_every_stream_in_its_place() {
        // webrtc-sdp dropped the `udptl` and `UDP/BFCP` lines (numbering the audio stream
        // after them wrongly) and logged warnings of its own for them and `a=crypto`.
        let sdp = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=image 49170 udptl t38\r\na=T38FaxVersion:0\r\na=T38FaxRateManagement:transferredTCF\r\n\
m=application 5070 UDP/BFCP *\r\na=floorctrl:c-only\r\n\
m=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n";
        let s = parse(sdp.as_bytes()).unwrap();
        let kinds: Vec<(usize, &str, &str, u16)> = s
            .iter()
            .map(|m| (m.index, m.kind.as_str(), m.protocol.as_str(), m.port))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (0, "image", "udptl", 49170),
                (1, "application", "UDP/BFCP", 5070),
                (2, "audio", "RTP/SAVP", 4000),
            ]
        );
        assert!(s[2].srtp);
        assert_eq!(s[2].codec.as_deref(), Some("PCMU"));
        assert_eq!(s[0].codec, None);
    }

    #[test]
    fn malformed_sdp_is_an_error() {
        assert!(parse(b"v=0\r\nm=audio banana\r\n").is_err());
        assert!(parse(&[0xff, 0xfe]).is_err());
        assert!(parse(b"").is_err());
        assert!(parse(b"hello\r\n").is_err());
        assert!(parse(b"v=0\r\nc=IN\r\n").is_err());
        assert!(parse(b"v=0\r\nm=audio 99999 RTP/AVP 0\r\n").is_err());
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
