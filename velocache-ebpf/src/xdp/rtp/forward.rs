//! The XDP program: learned media flows are accounted and forwarded here, everything else is
//! handed on untouched (to the dispatcher's next slot, else the stack).
//!
//! Order matters for fail-safety: the FIB is asked about the packet's *new* addresses first,
//! and the frame is modified only once the answer says it can be redirected. A frame that
//! cannot be forwarded right now (no neighbour entry yet, TTL about to expire, larger than the
//! egress MTU) goes to the stack exactly as it arrived: a plain flow is then forwarded by the
//! kernel as usual, an anchored one reaches the daemon's anchor socket, whose userspace relay
//! sends it on (and resolves the neighbour on the way).
use core::mem;

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup,
        xdp_action::{XDP_PASS, XDP_REDIRECT},
    },
    helpers::{
        bpf_ktime_get_ns,
        generated::{bpf_fib_lookup as fib_lookup, bpf_redirect},
    },
    macros::xdp,
    programs::XdpContext,
};
use velocache_common::{
    rtp::{
        FAMILY_V4, FLOW_CAPTURE, FLOW_REWRITE, FLOW_RTCP, FlowKey, MediaFlow, arrival_units,
        csum_replace2, csum_replace4,
    },
    xdp::XdpSlot,
};

use super::{
    maps::{RTP_COUNTERS, RTP_FLOWS, RTP_QUALITY},
    packet::{ETH_HLEN, IPPROTO_UDP, Udp4, parse_rtp, parse_udp4, read, write},
};
use crate::dispatch::next;

const AF_INET: u8 = 2;

#[xdp]
pub fn velocache_rtp(ctx: XdpContext) -> u32 {
    match try_forward(&ctx) {
        // Not ours, or ours but the stack must carry it this time: the next slot decides.
        None | Some(XDP_PASS) => next(&ctx, XdpSlot::Rtp),
        Some(action) => action,
    }
}

/// `None`: not a learned flow (or unparsable): pass. `Some(action)`: what was decided.
#[inline(always)]
fn try_forward(ctx: &XdpContext) -> Option<u32> {
    let pkt = parse_udp4(ctx)?;
    let key = key_of(&pkt);
    // SAFETY: map values stay valid for this program run (RCU); copied out at once.
    let flow: MediaFlow = unsafe { *RTP_FLOWS.get(key)? };
    let now = unsafe { bpf_ktime_get_ns() };
    if flow.flags & FLOW_CAPTURE != 0 {
        // Before any rewrite: the capture shows the frame as it arrived.
        super::capture::copy(ctx, now);
    }

    if flow.flags & FLOW_RTCP == 0
        && let Some(rtp) = parse_rtp(ctx, pkt.l4)
        && let Some(q) = RTP_QUALITY.get_ptr_mut(key)
    {
        let arrival = if flow.clock_rate != 0 {
            Some(arrival_units(now, flow.clock_rate))
        } else {
            None
        };
        // SAFETY: a valid map value pointer for this run; see `RtpQuality` on sharing.
        unsafe { (*q).on_packet(rtp.seq, rtp.timestamp, rtp.ssrc, arrival) };
    }

    let action = route_and_rewrite(ctx, &pkt, &flow);
    if let Some(c) = RTP_COUNTERS.get_ptr_mut(key) {
        // SAFETY: this CPU's own slot of a per-CPU map value.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += pkt.tot_len as u64;
            (*c).last_seen_ns = now;
            if action == XDP_REDIRECT {
                (*c).redirected += 1;
            } else {
                (*c).passed += 1;
            }
        }
    }
    Some(action)
}

#[inline(always)]
fn key_of(pkt: &Udp4) -> FlowKey {
    let mut key = FlowKey {
        sport_be: pkt.sport_be,
        dport_be: pkt.dport_be,
        family: FAMILY_V4,
        proto: IPPROTO_UDP,
        ..FlowKey::default()
    };
    key.src[..4].copy_from_slice(&pkt.src);
    key.dst[..4].copy_from_slice(&pkt.dst);
    key
}

/// Ask the FIB about the outgoing packet; on success rewrite and redirect, else pass.
#[inline(always)]
fn route_and_rewrite(ctx: &XdpContext, pkt: &Udp4, flow: &MediaFlow) -> u32 {
    if pkt.ttl <= 1 {
        // The stack sends the ICMP time-exceeded.
        return XDP_PASS;
    }
    let rewrite = flow.flags & FLOW_REWRITE != 0;
    let (src, dst, sport_be, dport_be) = if rewrite {
        (
            [
                flow.new_src[0],
                flow.new_src[1],
                flow.new_src[2],
                flow.new_src[3],
            ],
            [
                flow.new_dst[0],
                flow.new_dst[1],
                flow.new_dst[2],
                flow.new_dst[3],
            ],
            flow.new_sport_be,
            flow.new_dport_be,
        )
    } else {
        (pkt.src, pkt.dst, pkt.sport_be, pkt.dport_be)
    };

    // SAFETY: all-zero is a valid value of this plain C struct.
    let mut params: bpf_fib_lookup = unsafe { mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = IPPROTO_UDP;
    params.sport = sport_be;
    params.dport = dport_be;
    params.__bindgen_anon_1.tot_len = pkt.tot_len;
    params.__bindgen_anon_2.tos = pkt.tos;
    params.ifindex = ctx.ingress_ifindex() as u32;
    params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(src);
    params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(dst);
    // SAFETY: `params` is a valid stack buffer of the size passed.
    let rc = unsafe {
        fib_lookup(
            ctx.as_ptr() as *mut _,
            &mut params,
            mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 {
        return XDP_PASS;
    }
    if rewrite_frame(ctx, pkt, rewrite, src, dst, sport_be, dport_be, &params).is_none() {
        return XDP_PASS;
    }
    // SAFETY: plain helper call; an ifindex from the FIB answer.
    unsafe { bpf_redirect(params.ifindex, 0) as u32 }
}

/// Decrement the TTL, rewrite addresses and ports for anchored flows, fix both checksums, and
/// set the Ethernet addresses the FIB returned. `None` only if the frame shrank under us
/// (cannot happen after a successful parse; the bounds checks are for the verifier).
#[expect(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename them"
)]
#[inline(always)]
fn rewrite_frame(
    ctx: &XdpContext,
    pkt: &Udp4,
    rewrite: bool,
    src: [u8; 4],
    dst: [u8; 4],
    sport_be: u16,
    dport_be: u16,
    params: &bpf_fib_lookup,
) -> Option<()> {
    let ip = ETH_HLEN;
    let mut ip_csum: u16 = read(ctx, ip + 10)?;
    // TTL shares a 16-bit word with the protocol.
    let old_word: u16 = read(ctx, ip + 8)?;
    write::<u8>(ctx, ip + 8, pkt.ttl - 1)?;
    let new_word: u16 = read(ctx, ip + 8)?;
    ip_csum = csum_replace2(ip_csum, old_word, new_word);

    if rewrite {
        ip_csum = csum_replace4(ip_csum, pkt.src, src);
        ip_csum = csum_replace4(ip_csum, pkt.dst, dst);
        write(ctx, ip + 12, src)?;
        write(ctx, ip + 16, dst)?;

        let udp_csum: u16 = read(ctx, pkt.l4 + 6)?;
        // Zero means "no checksum" for UDP over IPv4 and stays zero.
        if udp_csum != 0 {
            let mut c = csum_replace4(udp_csum, pkt.src, src);
            c = csum_replace4(c, pkt.dst, dst);
            c = csum_replace2(c, pkt.sport_be, sport_be);
            c = csum_replace2(c, pkt.dport_be, dport_be);
            write(ctx, pkt.l4 + 6, if c == 0 { 0xffff } else { c })?;
        }
        write(ctx, pkt.l4, sport_be)?;
        write(ctx, pkt.l4 + 2, dport_be)?;
    }
    write(ctx, ip + 10, ip_csum)?;
    write(ctx, 0, params.dmac)?;
    write(ctx, 6, params.smac)?;
    Some(())
}
