//! From a call's offer and answer to the media flows the kernel relays, and (anchoring) the
//! gateway ports announced instead of the endpoints' own.
//!
//! Per `m=` line both sides announced with a non-zero port there are two RTP flows (client →
//! far end, far end → client) and, without `a=rtcp-mux`, two RTCP flows. Plain relaying
//! learns the endpoints' own 5-tuples (symmetric RTP, RFC 4961: a UA sends from the port it
//! receives on). Anchoring gives each side's stream a gateway port pair on the gateway's
//! address facing the *other* side; each flow then arrives at one anchor and leaves, rewritten,
//! from the other.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
};

use tokio_util::sync::CancellationToken;

use super::{
    dialog::{Call, Side},
    sdp::{MediaStream, Replacement},
};
use crate::rtp::{AnchorPorts, FlowSpec, FlowStats, Rewrite};

/// One learned flow and what the call record needs to say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFlow {
    /// The kernel's view.
    pub spec: FlowSpec,
    /// Client → far end.
    pub up: bool,
    /// `m=` line index.
    pub index: usize,
    /// `audio`, `video`…
    pub kind: String,
    /// Negotiated encoding name.
    pub codec: Option<String>,
}

/// A call's media state on the gateway.
#[derive(Debug, Default)]
pub struct CallMedia {
    /// Flows installed in the kernel now.
    pub flows: Vec<PlannedFlow>,
    /// Statistics of flows replaced by a re-INVITE, kept for the call record.
    pub finished: Vec<(PlannedFlow, FlowStats)>,
    /// Anchor ports of each side's stream, by (side whose media it stands for, m-line).
    pub anchors: HashMap<(Side, usize), AnchorPorts>,
    /// Gateway addresses facing the client and the far end.
    pub gateway_ips: Option<(IpAddr, IpAddr)>,
    /// When flows were first installed (monotonic ns), for the idle timeout.
    pub installed_at_ns: u64,
    /// Stops the userspace fallback relays of the anchors.
    pub relay: Option<CancellationToken>,
}

impl CallMedia {
    /// Anchored media: (re)start the userspace relays between each pair of anchors, for the
    /// streams both sides announced (those before are cancelled).
    pub fn restart_relays(&mut self, call: &Call) {
        if let Some(t) = self.relay.take() {
            t.cancel();
        }
        let token = CancellationToken::new();
        let (Some(client), Some(far)) = (call.media_of(Side::Client), call.media_of(Side::Far))
        else {
            return;
        };
        for c in client.iter().filter(|s| s.port != 0) {
            let Some(f) = far.iter().find(|f| f.index == c.index && f.port != 0) else {
                continue;
            };
            let (Some(c_ip), Some(f_ip)) = (c.addr, f.addr) else {
                continue;
            };
            let (Some(a_client), Some(a_far)) = (
                self.anchors.get(&(Side::Client, c.index)),
                self.anchors.get(&(Side::Far, c.index)),
            ) else {
                continue;
            };
            // The client sends to the far end's anchor; the far end to the client's.
            a_far.relay(
                a_client,
                (
                    SocketAddr::new(c_ip, c.port),
                    SocketAddr::new(c_ip, c.rtcp_port),
                ),
                (
                    SocketAddr::new(f_ip, f.port),
                    SocketAddr::new(f_ip, f.rtcp_port),
                ),
                token.clone(),
            );
        }
        self.relay = Some(token);
    }
}

impl Drop for CallMedia {
    fn drop(&mut self) {
        if let Some(t) = self.relay.take() {
            t.cancel();
        }
    }
}

fn sock(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

/// The four (or two, with rtcp-mux) flows of one m-line pair.
fn pair_flows(
    index: usize,
    client: &MediaStream,
    far: &MediaStream,
    anchored: Option<(&AnchorPorts, &AnchorPorts, IpAddr, IpAddr)>,
    clock: u32,
    codec: Option<String>,
) -> Vec<PlannedFlow> {
    let (Some(c_ip), Some(f_ip)) = (client.addr, far.addr) else {
        return Vec::new();
    };
    let srtp = client.srtp || far.srtp;
    let muxed = client.rtcp_port == client.port && far.rtcp_port == far.port;
    let mut out = Vec::new();
    let mut push = |spec: FlowSpec, up: bool| {
        out.push(PlannedFlow {
            spec,
            up,
            index,
            kind: client.kind.clone(),
            codec: codec.clone(),
        });
    };
    let kinds: &[bool] = if muxed { &[false] } else { &[false, true] };
    for &rtcp in kinds {
        let (cp, fp) = if rtcp {
            (client.rtcp_port, far.rtcp_port)
        } else {
            (client.port, far.port)
        };
        let c_media = sock(c_ip, cp);
        let f_media = sock(f_ip, fp);
        let base = |from, to, rewrite| FlowSpec {
            from,
            to,
            rewrite,
            clock_rate: clock,
            rtcp,
            srtp,
        };
        match anchored {
            None => {
                push(base(c_media, f_media, None), true);
                push(base(f_media, c_media, None), false);
            }
            Some((a_client, a_far, gw_client, gw_far)) => {
                // `a_client` stands for the client's stream towards the far end (on the far
                // side's address); `a_far` for the far end's stream towards the client.
                let port = |a: &AnchorPorts| if rtcp { a.rtcp_port() } else { a.rtp_port() };
                let at_far_anchor = sock(gw_client, port(a_far));
                let at_client_anchor = sock(gw_far, port(a_client));
                push(
                    base(
                        c_media,
                        at_far_anchor,
                        Some(Rewrite {
                            from: at_client_anchor,
                            to: f_media,
                        }),
                    ),
                    true,
                );
                push(
                    base(
                        f_media,
                        at_client_anchor,
                        Some(Rewrite {
                            from: at_far_anchor,
                            to: c_media,
                        }),
                    ),
                    false,
                );
            }
        }
    }
    out
}

/// Every flow the call's current offer/answer asks for.
pub fn plan(call: &Call, media: &CallMedia, anchoring: bool) -> Vec<PlannedFlow> {
    let (Some(client), Some(far)) = (call.media_of(Side::Client), call.media_of(Side::Far)) else {
        return Vec::new();
    };
    let answerer = call.caller.other();
    let mut out = Vec::new();
    for c in client.iter().filter(|s| s.port != 0) {
        let Some(f) = far.iter().find(|f| f.index == c.index && f.port != 0) else {
            continue;
        };
        let negotiated = if answerer == Side::Far { f } else { c };
        let clock = negotiated.clock_rate.or(c.clock_rate).unwrap_or(0);
        let codec = negotiated.codec.clone();
        let anchored = if anchoring {
            match (
                media.anchors.get(&(Side::Client, c.index)),
                media.anchors.get(&(Side::Far, c.index)),
                media.gateway_ips,
            ) {
                (Some(a), Some(b), Some((gw_c, gw_f))) => Some((a, b, gw_c, gw_f)),
                // Not both anchored (an SDP that did not parse): nothing sensible to relay.
                _ => continue,
            }
        } else {
            None
        };
        out.extend(pair_flows(c.index, c, f, anchored, clock, codec));
    }
    out
}

/// The SDP replacements for `side`'s streams (anchors must exist for them).
pub fn replacements(streams: &[MediaStream], side: Side, media: &CallMedia) -> Vec<Replacement> {
    let Some((gw_client, gw_far)) = media.gateway_ips else {
        return Vec::new();
    };
    // The other side sends to the gateway address facing it.
    let addr = match side {
        Side::Client => gw_far,
        Side::Far => gw_client,
    };
    streams
        .iter()
        .filter(|s| s.port != 0)
        .filter_map(|s| {
            let a = media.anchors.get(&(side, s.index))?;
            let muxed = s.rtcp_port == s.port;
            Some(Replacement {
                index: s.index,
                addr,
                port: a.rtp_port(),
                rtcp_port: if muxed { a.rtp_port() } else { a.rtcp_port() },
            })
        })
        .collect()
}

/// The local address the kernel would use to reach `peer` (no packet is sent).
pub fn local_ip_towards(peer: IpAddr) -> Option<IpAddr> {
    let bind: SocketAddr = match peer {
        IpAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect((peer, 9)).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::sip::dialog::CallState;

    fn stream(addr: &str, port: u16, clock: u32) -> MediaStream {
        MediaStream {
            index: 0,
            kind: "audio".into(),
            addr: Some(addr.parse().unwrap()),
            port,
            rtcp_port: port + 1,
            protocol: "RTP/AVP".into(),
            srtp: false,
            codec: Some("PCMA".into()),
            clock_rate: Some(clock),
            inactive: false,
        }
    }

    fn call() -> Call {
        Call {
            call_id: "c".into(),
            from: String::new(),
            to: String::new(),
            caller: Side::Client,
            client: "10.77.1.2:5060".parse().unwrap(),
            far: "10.77.2.2:5060".parse().unwrap(),
            transport: "udp",
            state: CallState::Confirmed,
            invited_at: Instant::now(),
            early_at: None,
            answered_at: None,
            invite_cseq: 1,
            final_status: None,
            media: [
                Some(vec![stream("10.77.1.2", 6000, 8000)]),
                Some(vec![stream("10.77.2.2", 7000, 8000)]),
            ],
            reinvites: 0,
            cancelled: false,
            ended_by: None,
            tags: Vec::new(),
        }
    }

    #[test]
    fn plain_relaying_learns_both_directions_of_rtp_and_rtcp() {
        let flows = plan(&call(), &CallMedia::default(), false);
        let pairs: Vec<(String, String, bool, bool)> = flows
            .iter()
            .map(|f| {
                (
                    f.spec.from.to_string(),
                    f.spec.to.to_string(),
                    f.spec.rtcp,
                    f.up,
                )
            })
            .collect();
        assert_eq!(
            pairs,
            vec![
                (
                    "10.77.1.2:6000".into(),
                    "10.77.2.2:7000".into(),
                    false,
                    true
                ),
                (
                    "10.77.2.2:7000".into(),
                    "10.77.1.2:6000".into(),
                    false,
                    false
                ),
                ("10.77.1.2:6001".into(), "10.77.2.2:7001".into(), true, true),
                (
                    "10.77.2.2:7001".into(),
                    "10.77.1.2:6001".into(),
                    true,
                    false
                ),
            ]
        );
        assert!(
            flows
                .iter()
                .all(|f| f.spec.clock_rate == 8000 && f.spec.rewrite.is_none())
        );
    }

    #[tokio::test]
    async fn anchoring_meets_at_the_gateway_and_rewrites_to_the_real_peer() {
        let pool = crate::rtp::PortPool::new(42000, 42099);
        let mut media = CallMedia::default();
        media.gateway_ips = Some(("10.77.1.1".parse().unwrap(), "10.77.2.1".parse().unwrap()));
        media
            .anchors
            .insert((Side::Client, 0), pool.allocate().unwrap());
        media
            .anchors
            .insert((Side::Far, 0), pool.allocate().unwrap());
        let a_client = media.anchors[&(Side::Client, 0)].rtp_port();
        let a_far = media.anchors[&(Side::Far, 0)].rtp_port();
        let c = call();
        let flows = plan(&c, &media, true);
        assert_eq!(flows.len(), 4);
        let up = &flows[0].spec;
        assert_eq!(up.from, "10.77.1.2:6000".parse().unwrap());
        assert_eq!(up.to, SocketAddr::new("10.77.1.1".parse().unwrap(), a_far));
        let rw = up.rewrite.unwrap();
        assert_eq!(
            rw.from,
            SocketAddr::new("10.77.2.1".parse().unwrap(), a_client)
        );
        assert_eq!(rw.to, "10.77.2.2:7000".parse().unwrap());
        let down = &flows[1].spec;
        assert_eq!(down.to, rw.from);
        assert_eq!(down.rewrite.unwrap().to, up.from);

        let r = replacements(c.media_of(Side::Client).unwrap(), Side::Client, &media);
        assert_eq!(r[0].addr, "10.77.2.1".parse::<IpAddr>().unwrap());
        assert_eq!(r[0].port, a_client);
    }
}
