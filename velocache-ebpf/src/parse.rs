//! Header parsing for the classifier: Ethernet → IPv4/IPv6 → TCP/UDP ports.
//!
//! Only what the classifier needs is extracted. Anything unusual (fragments after the first,
//! IPv6 extension headers, non-IP ethertypes) yields `None`, and the caller passes the packet
//! untouched — the conservative choice for a program that must never break forwarding.
use core::mem;

use aya_ebpf::programs::TcContext;

pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPV6_HLEN: usize = 40;

/// Addresses of one packet, in network byte order as they appear on the wire.
#[derive(Clone, Copy)]
pub enum Addrs {
    V4 { src: [u8; 4], dst: [u8; 4] },
    V6 { src: [u8; 16], dst: [u8; 16] },
}

/// What the classifier needs to know about one packet.
#[derive(Clone, Copy)]
pub struct Flow {
    pub addrs: Addrs,
    pub proto: u8,
    /// Ports in network byte order (as on the wire).
    pub sport_be: u16,
    pub dport_be: u16,
    /// IP total length (IPv4) or payload length + header (IPv6), for the FIB lookup.
    pub tot_len: u16,
}

/// A pointer to a `T` at `offset` bytes into the packet, or `None` if it would read past the end.
/// This is the one bounds check every header access goes through.
#[inline(always)]
pub fn ptr_at<T>(ctx: &TcContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

#[inline(always)]
fn read<T: Copy>(ctx: &TcContext, offset: usize) -> Option<T> {
    // SAFETY: `ptr_at` checked that the whole `T` lies inside the packet; the read is unaligned
    // because headers carry no alignment guarantee.
    ptr_at::<T>(ctx, offset).map(|p| unsafe { p.read_unaligned() })
}

/// Parse one Ethernet frame. `None` means "not something the classifier handles".
#[inline(always)]
pub fn parse_flow(ctx: &TcContext) -> Option<Flow> {
    let ethertype = u16::from_be(read::<u16>(ctx, 12)?);
    match ethertype {
        ETH_P_IP => parse_ipv4(ctx, ETH_HLEN),
        ETH_P_IPV6 => parse_ipv6(ctx, ETH_HLEN),
        _ => None,
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &TcContext, off: usize) -> Option<Flow> {
    let vihl: u8 = read(ctx, off)?;
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return None;
    }
    let tot_len = u16::from_be(read::<u16>(ctx, off + 2)?);
    let frag = u16::from_be(read::<u16>(ctx, off + 6)?);
    if frag & 0x1fff != 0 {
        // A non-first fragment carries no L4 header.
        return None;
    }
    let proto: u8 = read(ctx, off + 9)?;
    let src: [u8; 4] = read(ctx, off + 12)?;
    let dst: [u8; 4] = read(ctx, off + 16)?;
    let (sport_be, dport_be) = ports(ctx, off + ihl)?;
    Some(Flow {
        addrs: Addrs::V4 { src, dst },
        proto,
        sport_be,
        dport_be,
        tot_len,
    })
}

#[inline(always)]
fn parse_ipv6(ctx: &TcContext, off: usize) -> Option<Flow> {
    let payload_len = u16::from_be(read::<u16>(ctx, off + 4)?);
    let next: u8 = read(ctx, off + 6)?;
    let src: [u8; 16] = read(ctx, off + 8)?;
    let dst: [u8; 16] = read(ctx, off + 24)?;
    let (sport_be, dport_be) = ports(ctx, off + IPV6_HLEN)?;
    Some(Flow {
        addrs: Addrs::V6 { src, dst },
        proto: next,
        sport_be,
        dport_be,
        tot_len: payload_len.wrapping_add(IPV6_HLEN as u16),
    })
}

/// TCP and UDP both start with source port, destination port.
#[inline(always)]
fn ports(ctx: &TcContext, off: usize) -> Option<(u16, u16)> {
    let sport: u16 = read(ctx, off)?;
    let dport: u16 = read(ctx, off + 2)?;
    Some((sport, dport))
}
