//! Classic libpcap files (`LINKTYPE_RAW`: each record is an IPv4 or IPv6 packet) for call
//! captures.
//!
//! Packets enter as [`Packet`]s — RTP frames the kernel copied (their Ethernet header already
//! cut off) and SIP messages the daemon saw in userspace, wrapped in a synthesised IP/UDP
//! header by [`udp_packet`] with their real addresses and ports — and leave as the bytes of one
//! pcap file ([`file()`]) that tcpdump, tshark and Wireshark read.
use std::net::{IpAddr, SocketAddr};

/// pcap's magic number (microsecond timestamps), written little-endian.
const MAGIC: u32 = 0xa1b2_c3d4;
/// `LINKTYPE_RAW`: the record starts with the IP header; its version nibble says which.
pub const LINKTYPE_RAW: u32 = 101;
/// The snap length the file announces.
const SNAPLEN: u32 = 65_535;
/// Largest SIP payload wrapped whole (an IPv4 datagram holds 65 507 bytes).
const MAX_PAYLOAD: usize = 65_000;

/// One captured packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Arrival, Unix microseconds.
    pub ts_us: u64,
    /// The IP packet (possibly cut short: `orig_len` says how long it was).
    pub data: Vec<u8>,
    /// Its length on the wire.
    pub orig_len: u32,
}

/// The 24-byte file header.
pub fn header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    // thiszone and sigfigs stay zero.
    h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_RAW.to_le_bytes());
    h
}

/// A whole pcap file holding `packets` in the order given.
pub fn file<'a>(packets: impl IntoIterator<Item = &'a Packet>) -> Vec<u8> {
    let mut out = header().to_vec();
    for p in packets {
        let incl = p.data.len().min(SNAPLEN as usize);
        out.extend_from_slice(&((p.ts_us / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((p.ts_us % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(incl as u32).to_le_bytes());
        out.extend_from_slice(&p.orig_len.max(incl as u32).to_le_bytes());
        out.extend_from_slice(&p.data[..incl]);
    }
    out
}

/// One's-complement sum of `data` as big-endian 16-bit words, added to `sum`.
fn sum16(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// `payload` as a UDP datagram from `src` to `dst` in an IPv4 or IPv6 packet with valid
/// checksums (SIP seen in userspace, over UDP or TCP alike). `None` when the two addresses are
/// of different families. Payloads beyond 65 000 bytes are cut.
pub fn udp_packet(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    let payload = &payload[..payload.len().min(MAX_PAYLOAD)];
    let udp_len = 8 + payload.len();
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&src.port().to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let (mut out, pseudo) = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&((20 + udp_len) as u16).to_be_bytes());
            ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let c = fold(sum16(0, &ip));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            let mut pseudo = s.octets().to_vec();
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, 17]);
            pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
            (ip, pseudo)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut ip = vec![0x60, 0, 0, 0];
            ip.extend_from_slice(&(udp_len as u16).to_be_bytes());
            ip.extend_from_slice(&[17, 64]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let mut pseudo = s.octets().to_vec();
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&(udp_len as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 17]);
            (ip, pseudo)
        }
        _ => return None,
    };
    let c = fold(sum16(sum16(0, &pseudo), &udp));
    // Zero means "no checksum"; a computed zero is sent as all ones (RFC 768).
    let c = if c == 0 { 0xffff } else { c };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    out.extend_from_slice(&udp);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_header_is_classic_pcap_with_raw_ip() {
        let f = file(&[]);
        assert_eq!(
            f,
            [
                0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 101,
                0, 0, 0
            ]
        );
    }

    #[test]
    fn records_carry_seconds_microseconds_and_both_lengths() {
        let p = Packet {
            ts_us: 1_700_000_000_123_456,
            data: vec![0x45, 1, 2],
            orig_len: 200,
        };
        let f = file([&p]);
        let r = &f[24..];
        assert_eq!(&r[0..4], &1_700_000_000u32.to_le_bytes());
        assert_eq!(&r[4..8], &123_456u32.to_le_bytes());
        assert_eq!(&r[8..12], &3u32.to_le_bytes());
        assert_eq!(&r[12..16], &200u32.to_le_bytes());
        assert_eq!(&r[16..], &[0x45, 1, 2]);
    }

    #[test]
    fn a_synthesised_ipv4_udp_packet_has_valid_checksums() {
        let src: SocketAddr = "10.1.0.2:5060".parse().unwrap();
        let dst: SocketAddr = "10.2.0.2:5070".parse().unwrap();
        let p = udp_packet(src, dst, b"INVITE sip:x SIP/2.0\r\n\r\n").unwrap();
        assert_eq!(p.len(), 20 + 8 + 24);
        assert_eq!(p[0], 0x45);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]) as usize, p.len());
        assert_eq!(p[9], 17);
        assert_eq!(&p[12..16], &[10, 1, 0, 2]);
        assert_eq!(&p[16..20], &[10, 2, 0, 2]);
        assert_eq!(fold(sum16(0, &p[..20])), 0, "IP header checksum");
        assert_eq!(u16::from_be_bytes([p[20], p[21]]), 5060);
        assert_eq!(u16::from_be_bytes([p[22], p[23]]), 5070);
        let mut pseudo = vec![10, 1, 0, 2, 10, 2, 0, 2, 0, 17];
        pseudo.extend_from_slice(&((p.len() - 20) as u16).to_be_bytes());
        assert_eq!(fold(sum16(sum16(0, &pseudo), &p[20..])), 0, "UDP checksum");
        assert_eq!(&p[28..], b"INVITE sip:x SIP/2.0\r\n\r\n");
    }

    #[test]
    fn a_synthesised_ipv6_udp_packet_has_a_valid_checksum() {
        let src: SocketAddr = "[fd00::1]:5060".parse().unwrap();
        let dst: SocketAddr = "[fd00::2]:5060".parse().unwrap();
        let p = udp_packet(src, dst, b"BYE").unwrap();
        assert_eq!(p.len(), 40 + 8 + 3);
        assert_eq!(p[0] >> 4, 6);
        assert_eq!(p[6], 17);
        let mut pseudo = p[8..40].to_vec();
        pseudo.extend_from_slice(&11u32.to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 17]);
        assert_eq!(fold(sum16(sum16(0, &pseudo), &p[40..])), 0);
        assert!(udp_packet(src, "10.0.0.1:1".parse().unwrap(), b"x").is_none());
    }
}
