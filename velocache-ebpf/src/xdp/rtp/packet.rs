//! Bounds-checked access to an XDP frame and the Ethernet → IPv4 → UDP → RTP parse.
//!
//! Anything unusual (VLAN tags, IP options are fine but fragments are not, IPv6 for now) is
//! `None`, and the program passes the frame untouched.
use core::mem;

use aya_ebpf::programs::XdpContext;

pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
pub const IPPROTO_UDP: u8 = 17;
pub const UDP_HLEN: usize = 8;
const RTP_HLEN: usize = 12;

/// A pointer to a `T` at `offset` bytes into the frame, or `None` past the end. Every frame
/// access goes through this one check.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

#[inline(always)]
pub fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Option<T> {
    // SAFETY: `ptr_at` checked the whole `T` lies inside the frame; headers carry no alignment
    // guarantee, hence the unaligned read.
    ptr_at::<T>(ctx, offset).map(|p| unsafe { p.read_unaligned() })
}

#[inline(always)]
pub fn write<T: Copy>(ctx: &XdpContext, offset: usize, value: T) -> Option<()> {
    // SAFETY: as in `read`; the frame is writable in XDP.
    ptr_at::<T>(ctx, offset).map(|p| unsafe { p.write_unaligned(value) })
}

/// The IPv4/UDP facts of one frame.
#[derive(Clone, Copy)]
pub struct Udp4 {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport_be: u16,
    pub dport_be: u16,
    pub tos: u8,
    pub ttl: u8,
    pub tot_len: u16,
    /// Offset of the UDP header.
    pub l4: usize,
}

#[inline(always)]
pub fn parse_udp4(ctx: &XdpContext) -> Option<Udp4> {
    let ethertype = u16::from_be(read::<u16>(ctx, 12)?);
    if ethertype != ETH_P_IP {
        return None;
    }
    let off = ETH_HLEN;
    let vihl: u8 = read(ctx, off)?;
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return None;
    }
    let frag = u16::from_be(read::<u16>(ctx, off + 6)?);
    // More-fragments set or a non-zero offset: not a whole datagram.
    if frag & 0x3fff != 0 {
        return None;
    }
    if read::<u8>(ctx, off + 9)? != IPPROTO_UDP {
        return None;
    }
    let l4 = off + ihl;
    Some(Udp4 {
        tos: read(ctx, off + 1)?,
        tot_len: u16::from_be(read::<u16>(ctx, off + 2)?),
        ttl: read(ctx, off + 8)?,
        src: read(ctx, off + 12)?,
        dst: read(ctx, off + 16)?,
        sport_be: read(ctx, l4)?,
        dport_be: read(ctx, l4 + 2)?,
        l4,
    })
}

/// The RTP header fields the quality tracking needs.
pub struct Rtp {
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

/// RTP version 2 with a payload type that is not RTCP (RFC 5761 §4: 200–204 with the marker
/// bit look like payload types 72–76). Only the fixed header is read; SRTP keeps it in clear.
#[inline(always)]
pub fn parse_rtp(ctx: &XdpContext, l4: usize) -> Option<Rtp> {
    // One read of the whole fixed header: the verifier tracks one bounds check per pointer,
    // and separate reads at a variable offset would each need their own.
    let h: [u8; RTP_HLEN] = read(ctx, l4 + UDP_HLEN)?;
    if h[0] >> 6 != 2 {
        return None;
    }
    let pt = h[1] & 0x7f;
    if (72..=76).contains(&pt) {
        return None;
    }
    Some(Rtp {
        seq: u16::from_be_bytes([h[2], h[3]]),
        timestamp: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        ssrc: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
    })
}
