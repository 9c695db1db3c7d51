//! Header parsing for the classifier: Ethernet → IPv4/IPv6 (and its fragment header) →
//! TCP/UDP ports.
//!
//! Only what the classifier needs is extracted: addresses, protocol, ports, TCP flags, and for
//! fragments the datagram's identification. A fragment after the first carries no transport
//! header, so it comes out as a [`Packet::LaterFragment`] that the classifier matches to its
//! first fragment. Anything unusual (IPv6 extension headers other than a fragment header right
//! after the fixed header, non-IP ethertypes, truncated headers) yields `None`, and the caller
//! passes the packet untouched — the conservative choice for a program that must never break
//! forwarding.
use core::mem;

use aya_ebpf::programs::TcContext;
use velocache_common::steer::{FAMILY_V4, FAMILY_V6};

pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPV6_HLEN: usize = 40;
/// IPv6 next-header value of the fragment extension header.
const NEXTHDR_FRAGMENT: u8 = 44;
const IPV6_FRAG_HLEN: usize = 8;
/// IPv4 "more fragments" flag and fragment offset mask (in the flags/offset word).
const IP_MF: u16 = 0x2000;
const IP_OFFSET: u16 = 0x1fff;
/// IPv6 fragment header: offset mask and "more fragments" flag.
const IP6_OFFSET: u16 = 0xfff8;
const IP6_MF: u16 = 0x0001;
const IPPROTO_TCP: u8 = 6;

/// Addresses of one packet, in network byte order as they appear on the wire, always 16 bytes
/// (IPv4 in the first four, the rest zero). A struct rather than an enum of both sizes: copying
/// an enum copies the unused variant's uninitialised bytes, which the verifier refuses to read.
#[derive(Clone, Copy)]
pub struct Addrs {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub v6: bool,
}

impl Addrs {
    #[inline(always)]
    fn v4(src: [u8; 4], dst: [u8; 4]) -> Self {
        let mut a = Addrs {
            src: [0; 16],
            dst: [0; 16],
            v6: false,
        };
        a.src[..4].copy_from_slice(&src);
        a.dst[..4].copy_from_slice(&dst);
        a
    }

    /// The IPv4 source address (meaningful when `!v6`).
    #[inline(always)]
    pub fn src4(&self) -> [u8; 4] {
        [self.src[0], self.src[1], self.src[2], self.src[3]]
    }

    /// The IPv4 destination address (meaningful when `!v6`).
    #[inline(always)]
    pub fn dst4(&self) -> [u8; 4] {
        [self.dst[0], self.dst[1], self.dst[2], self.dst[3]]
    }

    /// The family as map keys hold it.
    #[inline(always)]
    pub fn family(&self) -> u8 {
        if self.v6 { FAMILY_V6 } else { FAMILY_V4 }
    }
}

/// What the classifier needs to know about one packet that carries a transport header.
#[derive(Clone, Copy)]
pub struct Flow {
    pub addrs: Addrs,
    pub proto: u8,
    /// Ports in network byte order (as on the wire).
    pub sport_be: u16,
    pub dport_be: u16,
    /// IP total length (IPv4) or payload length + header (IPv6), for the FIB lookup.
    pub tot_len: u16,
    /// TCP flags byte (zero for UDP).
    pub tcp_flags: u8,
    /// `Some(identification)` when this is the first fragment of a fragmented datagram.
    pub first_fragment: Option<u32>,
}

/// A fragment after the first: no ports, only what identifies its datagram.
#[derive(Clone, Copy)]
pub struct LaterFragment {
    pub addrs: Addrs,
    pub proto: u8,
    pub id: u32,
    pub tot_len: u16,
}

/// One parsed frame.
pub enum Packet {
    Flow(Flow),
    LaterFragment(LaterFragment),
}

/// TCP flag bits.
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

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
pub fn parse(ctx: &TcContext) -> Option<Packet> {
    let ethertype = u16::from_be(read::<u16>(ctx, 12)?);
    match ethertype {
        ETH_P_IP => parse_ipv4(ctx, ETH_HLEN),
        ETH_P_IPV6 => parse_ipv6(ctx, ETH_HLEN),
        _ => None,
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &TcContext, off: usize) -> Option<Packet> {
    let vihl: u8 = read(ctx, off)?;
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return None;
    }
    let tot_len = u16::from_be(read::<u16>(ctx, off + 2)?);
    let id = u32::from(read::<u16>(ctx, off + 4)?);
    let frag = u16::from_be(read::<u16>(ctx, off + 6)?);
    let proto: u8 = read(ctx, off + 9)?;
    let src: [u8; 4] = read(ctx, off + 12)?;
    let dst: [u8; 4] = read(ctx, off + 16)?;
    let addrs = Addrs::v4(src, dst);
    if frag & IP_OFFSET != 0 {
        return Some(Packet::LaterFragment(LaterFragment {
            addrs,
            proto,
            id,
            tot_len,
        }));
    }
    let first_fragment = (frag & IP_MF != 0).then_some(id);
    transport(ctx, off + ihl, addrs, proto, tot_len, first_fragment)
}

#[inline(always)]
fn parse_ipv6(ctx: &TcContext, off: usize) -> Option<Packet> {
    let payload_len = u16::from_be(read::<u16>(ctx, off + 4)?);
    let next: u8 = read(ctx, off + 6)?;
    let src: [u8; 16] = read(ctx, off + 8)?;
    let dst: [u8; 16] = read(ctx, off + 24)?;
    let addrs = Addrs { src, dst, v6: true };
    let tot_len = payload_len.wrapping_add(IPV6_HLEN as u16);
    if next != NEXTHDR_FRAGMENT {
        return transport(ctx, off + IPV6_HLEN, addrs, next, tot_len, None);
    }
    let frag_off = off + IPV6_HLEN;
    let proto: u8 = read(ctx, frag_off)?;
    let offlg = u16::from_be(read::<u16>(ctx, frag_off + 2)?);
    let id: u32 = read(ctx, frag_off + 4)?;
    if offlg & IP6_OFFSET != 0 {
        return Some(Packet::LaterFragment(LaterFragment {
            addrs,
            proto,
            id,
            tot_len,
        }));
    }
    // Offset zero: the first fragment, or an "atomic" fragment (RFC 6946) that is whole.
    let first_fragment = (offlg & IP6_MF != 0).then_some(id);
    transport(
        ctx,
        frag_off + IPV6_FRAG_HLEN,
        addrs,
        proto,
        tot_len,
        first_fragment,
    )
}

/// TCP and UDP both start with source port, destination port; TCP's flags are byte 13.
#[inline(always)]
fn transport(
    ctx: &TcContext,
    off: usize,
    addrs: Addrs,
    proto: u8,
    tot_len: u16,
    first_fragment: Option<u32>,
) -> Option<Packet> {
    let sport_be: u16 = read(ctx, off)?;
    let dport_be: u16 = read(ctx, off + 2)?;
    let tcp_flags = if proto == IPPROTO_TCP {
        read::<u8>(ctx, off + 13)?
    } else {
        0
    };
    Some(Packet::Flow(Flow {
        addrs,
        proto,
        sport_be,
        dport_be,
        tot_len,
        tcp_flags,
        first_fragment,
    }))
}
