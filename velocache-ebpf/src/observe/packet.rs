//! The TCP header of a packet the classifier already parsed, the observed-flow key, and copies
//! of packet bytes into map memory in verifier-friendly chunks.
//!
//! Every read goes through `bpf_skb_load_bytes` (`TcContext::load`): offsets here depend on
//! header lengths read from the packet, and the helper checks them at run time, so the verifier
//! has no variable packet pointers to prove and non-linear packets read the same.
use core::ffi::c_void;

use aya_ebpf::{EbpfContext, helpers::generated::bpf_skb_load_bytes, programs::TcContext};
use velocache_common::tls::{FAMILY_V4, FAMILY_V6, TlsFlowKey};

use crate::parse::{ETH_HLEN, Flow};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPPROTO_TCP: u8 = 6;

const IPV6_HLEN: u32 = 40;
/// TCP flag bits.
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// What observation needs of a TCP header.
#[derive(Clone, Copy)]
pub struct Tcp {
    /// Sequence number (host order).
    pub seq: u32,
    /// Flag bits (`FIN`, `SYN`, …).
    pub flags: u8,
    /// Offset of the TCP payload from the start of the frame.
    pub payload_off: u32,
    /// Payload bytes (from the IP length, so Ethernet padding is not counted).
    pub payload_len: u32,
    /// Segments this packet stands for (a GRO packet carries several).
    pub segs: u32,
}

impl Tcp {
    /// A connection's first packet: SYN without ACK.
    pub fn is_syn(&self) -> bool {
        self.flags & (SYN | ACK) == SYN
    }
}

/// Read the TCP header of `flow` (parsed by the classifier, known to be TCP).
#[inline(always)]
pub fn read_tcp(ctx: &TcContext, flow: &Flow) -> Option<Tcp> {
    let l3 = ETH_HLEN as u32;
    let ip_hlen = if flow.addrs.v6 {
        IPV6_HLEN
    } else {
        let vihl: u8 = ctx.load(l3 as usize).ok()?;
        u32::from(vihl & 0x0f) * 4
    };
    tcp_at(ctx, l3 + ip_hlen, ip_hlen, u32::from(flow.tot_len))
}

/// The TCP header at `l4`, in an IP packet of `ip_len` bytes with an `ip_hlen`-byte header.
#[inline(always)]
fn tcp_at(ctx: &TcContext, l4: u32, ip_hlen: u32, ip_len: u32) -> Option<Tcp> {
    // seq (4), ack (4), data offset (1), flags (1).
    let hdr: [u8; 10] = ctx.load(l4 as usize + 4).ok()?;
    let doff = u32::from(hdr[8] >> 4) * 4;
    if doff < 20 {
        return None;
    }
    // SAFETY: reading a plain field of the context.
    let gso_segs = unsafe { (*ctx.skb.skb).gso_segs };
    Some(Tcp {
        seq: u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]),
        flags: hdr[9],
        payload_off: l4 + doff,
        payload_len: ip_len.saturating_sub(ip_hlen + doff),
        segs: if gso_segs == 0 { 1 } else { gso_segs },
    })
}

/// A TCP packet as the reader and the egress counter see it, every byte initialised (the
/// classifier's `Flow` enum leaves the unused variant's bytes undefined, which the verifier
/// rejects once the compiler copies them through registers).
pub struct TcpPacket {
    /// Source address, network order; IPv4 in the first four bytes.
    pub src: [u8; 16],
    /// Destination address, network order.
    pub dst: [u8; 16],
    /// Ports, network order.
    pub sport_be: u16,
    pub dport_be: u16,
    /// `FAMILY_V4` or `FAMILY_V6`.
    pub family: u32,
    /// The TCP header.
    pub tcp: Tcp,
}

impl TcpPacket {
    /// The key if this packet goes client → server.
    #[inline(always)]
    pub fn key_up(&self) -> TlsFlowKey {
        TlsFlowKey {
            client: self.src,
            server: self.dst,
            client_port_be: self.sport_be,
            server_port_be: self.dport_be,
            family: self.family,
        }
    }

    /// The key if this packet goes server → client.
    #[inline(always)]
    pub fn key_down(&self) -> TlsFlowKey {
        TlsFlowKey {
            client: self.dst,
            server: self.src,
            client_port_be: self.dport_be,
            server_port_be: self.sport_be,
            family: self.family,
        }
    }
}

/// Parse an Ethernet frame carrying TCP over IPv4 (first fragment) or IPv6 (no extension
/// headers); anything else is `None`.
#[inline(always)]
pub fn parse_tcp(ctx: &TcContext) -> Option<TcpPacket> {
    let l3 = ETH_HLEN;
    let ethertype = u16::from_be(ctx.load::<u16>(12).ok()?);
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    let (family, ip_hlen, ip_len) = if ethertype == ETH_P_IP {
        let h: [u8; 20] = ctx.load(l3).ok()?;
        let ihl = u32::from(h[0] & 0x0f) * 4;
        if h[0] >> 4 != 4 || ihl < 20 || h[9] != IPPROTO_TCP {
            return None;
        }
        if u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0 {
            return None;
        }
        src[..4].copy_from_slice(&h[12..16]);
        dst[..4].copy_from_slice(&h[16..20]);
        (FAMILY_V4, ihl, u32::from(u16::from_be_bytes([h[2], h[3]])))
    } else if ethertype == ETH_P_IPV6 {
        let h: [u8; 8] = ctx.load(l3).ok()?;
        if h[6] != IPPROTO_TCP {
            return None;
        }
        src = ctx.load(l3 + 8).ok()?;
        dst = ctx.load(l3 + 24).ok()?;
        (
            FAMILY_V6,
            IPV6_HLEN,
            u32::from(u16::from_be_bytes([h[4], h[5]])) + IPV6_HLEN,
        )
    } else {
        return None;
    };
    let l4 = l3 as u32 + ip_hlen;
    let ports: [u8; 4] = ctx.load(l4 as usize).ok()?;
    let tcp = tcp_at(ctx, l4, ip_hlen, ip_len)?;
    Some(TcpPacket {
        src,
        dst,
        sport_be: u16::from_ne_bytes([ports[0], ports[1]]),
        dport_be: u16::from_ne_bytes([ports[2], ports[3]]),
        family,
        tcp,
    })
}

/// Write the key of a packet going client → server (LAN ingress) into `key` — in place: the
/// classifier's stack has no room for another copy. An IPv4 address is held in the first four
/// bytes, the rest zero, as `Flow` holds it.
#[inline(always)]
pub fn key_up(flow: &Flow, key: &mut TlsFlowKey) {
    key.client = flow.addrs.src;
    key.server = flow.addrs.dst;
    key.client_port_be = flow.sport_be;
    key.server_port_be = flow.dport_be;
    key.family = if flow.addrs.v6 { FAMILY_V6 } else { FAMILY_V4 };
}

/// Copy `n` (< 256) packet bytes at skb offset `from` so that they end at the end of the
/// 256-byte array at `dst` (the name then ends at a fixed index, so the policy's backwards pass
/// reads constant offsets). Chunks are taken from the end, largest first; each chunk's distance
/// from the end is `n` with its lower bits cleared, so the verifier sees its bounds directly.
///
/// # Safety
/// `dst` points to 256 writable bytes of a map value.
#[inline(always)]
pub unsafe fn copy_right_aligned(ctx: &TcContext, from: u32, n: u32, dst: *mut u8) -> bool {
    macro_rules! chunk {
        ($size:literal) => {
            if n & $size != 0 {
                // Bytes already copied from the end: the larger chunks of `n`.
                let done = n & !(2 * $size - 1) & 0xff;
                let to = 256 - $size - done;
                // SAFETY: `to + $size <= 256`; the source is inside the name.
                let rc = unsafe {
                    bpf_skb_load_bytes(
                        ctx.as_ptr(),
                        from + (n - done - $size),
                        dst.add(to as usize) as *mut c_void,
                        $size,
                    )
                };
                if rc != 0 {
                    return false;
                }
            }
        };
    }
    chunk!(128);
    chunk!(64);
    chunk!(32);
    chunk!(16);
    chunk!(8);
    chunk!(4);
    chunk!(2);
    chunk!(1);
    true
}

/// Copy `n` (< 256) packet bytes at skb offset `from` to `dst` in power-of-two chunks. Each
/// chunk's offset is `n` with its lower bits cleared, so no offset is carried from branch to
/// branch and the verifier sees each chunk's bounds directly.
///
/// # Safety
/// `dst` points into a map value with at least `n` writable bytes.
#[inline(always)]
pub unsafe fn copy_chunks(ctx: &TcContext, from: u32, n: u32, dst: *mut u8) -> bool {
    macro_rules! chunk {
        ($size:literal) => {
            if n & $size != 0 {
                let off = n & !(2 * $size - 1) & 0xff;
                // SAFETY: `off + $size <= n`, within the caller's bound.
                let rc = unsafe {
                    bpf_skb_load_bytes(
                        ctx.as_ptr(),
                        from + off,
                        dst.add(off as usize) as *mut c_void,
                        $size,
                    )
                };
                if rc != 0 {
                    return false;
                }
            }
        };
    }
    chunk!(128);
    chunk!(64);
    chunk!(32);
    chunk!(16);
    chunk!(8);
    chunk!(4);
    chunk!(2);
    chunk!(1);
    true
}
