//! TLS observation: flows no rule could act on are forwarded by the kernel, never steered, and
//! observed as they pass.
//!
//! Data enters through the classifier's hook ([`ingress`], LAN ingress: client → server) and the
//! LAN egress program ([`velocache_lan_egress`]: server → client), and through the maps the
//! daemon fills (which destinations are steered, the SNI policy, the switch). It leaves as
//! per-flow counters in `TLS_FLOWS` and hello/end events in the `TLS_EVENTS` ring buffer.
//!
//! At a flow's SYN the classifier asks: is the destination steered (an address learned from a
//! DNS answer for a name a rule names, not yet expired, or in an operator prefix)? Then the flow
//! takes the usual path to the daemon. Otherwise — and only while the daemon's listener exists,
//! so that a daemon that died leaves nothing behind that acts — the flow gets an entry and is
//! forwarded untouched. Its packets are counted, its ClientHello read (`hello`), and a `deny`
//! for its SNI is enforced here: the packet carrying the ClientHello, and every later one of
//! that flow, is given to the daemon's (transparent) listener, whose TCP stack answers a packet
//! that is not a SYN with a reset from the original destination's address
//! (`sockets::reset_by_listener`); the ClientHello never reaches the origin. The origin is left
//! with a connection that never got its hello, which it closes at its handshake timeout; its
//! packets are left alone on their way to the client, whose stack resets them.
//!
//! A packet of a TLS flow that is neither steered nor tracked (it began before the daemon did,
//! or its entry was evicted) goes to the daemon only if a daemon socket holds its tuple, and
//! is otherwise forwarded untouched: a mid-flow packet is never handed to a listener, which
//! would reset a connection it never saw.
//!
//! # Layout
//! - `maps`: the maps; `packet`: the TCP header and the flow key.
//! - `hello`: the bounded ClientHello reader — a program of its own (`velocache_tls_hello`) the
//!   classifier tail-calls for a flow's first data segments; `policy`: its SNI policy lookup.
//! - `sockets`: is the daemon there (listener), does it own this tuple (established socket).
pub mod hello;
mod maps;
mod packet;
mod policy;
mod sockets;

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::TC_ACT_OK, helpers::bpf_ktime_get_ns, macros::classifier, maps::lpm_trie::Key,
    programs::TcContext,
};
use velocache_common::{
    IPPROTO_TCP, PortKey, Service, Verdict,
    tls::{
        DIR_FIN, DIR_RST, DOWN_END_SENT, END_FIN, END_REUSED, END_RST, EVENT_END, HELLO_DONE,
        ObservedFlow, TlsEventHead, TlsFlowKey, UP_DENIED, UP_END_SENT,
    },
};

use self::{
    maps::{
        TLS_EVENTS, TLS_FLOWS, TLS_OBSERVE, TLS_PROGS, TLS_SCRATCH, TLS_STEER_PREFIX_V4,
        TLS_STEER_PREFIX_V6, TLS_STEER_V4, TLS_STEER_V6,
    },
    packet::{FIN, RST, Tcp, key_up, parse_tcp, read_tcp},
};
use crate::{maps::SERVICE_PORTS, parse::Flow};

/// The classifier's hook for a packet of the HTTPS service (already past the bypass checks).
/// `None`: steer it the usual way. `Some(verdict)`: handled here — forwarded untouched, or, for
/// a denied SNI, marked with `mark` for local delivery.
#[inline(always)]
pub fn ingress(ctx: &TcContext, flow: &Flow, listen_port: u16, mark: u32) -> Option<Verdict> {
    if flow.proto != IPPROTO_TCP || TLS_OBSERVE.get(0)?.enabled == 0 {
        return None;
    }
    let tcp = read_tcp(ctx, flow)?;
    // The key and a new entry are staged in this CPU's scratch: the classifier's own stack is
    // nearly all used by its socket lookups.
    let s = TLS_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: `s` is this CPU's scratch; programs on one CPU do not interleave (TC ingress runs
    // in softirq context, TC egress with bottom halves disabled).
    let key = unsafe {
        key_up(flow, &mut (*s).ev.head.key);
        &(*s).ev.head.key
    };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(st) = TLS_FLOWS.get_ptr_mut(key) {
        // SAFETY: a map value pointer valid for this run.
        let reused = tcp.is_syn() && unsafe { (*st).syn_seq } != tcp.seq;
        if !reused {
            return Some(observed(ctx, st, key, &tcp, now, listen_port, mark));
        }
        // A new connection on the same tuple: the old one is over.
        // SAFETY: as above.
        unsafe { send_end(st, END_REUSED) };
    }
    if tcp.is_syn() {
        if steered(flow, now) || !sockets::daemon_listening_for(ctx, key, listen_port) {
            return None;
        }
        // SAFETY: as above.
        unsafe {
            let entry = &raw mut (*s).ev.head.flow;
            *entry = ObservedFlow::default();
            (*entry).packets_up = u64::from(tcp.segs);
            (*entry).started_ns = now;
            (*entry).last_ns = now;
            (*entry).syn_seq = tcp.seq;
            // A full map evicts its least recently used flow (LRU): observation never stops.
            #[expect(
                clippy::needless_borrows_for_generic_args,
                reason = "by value, key and entry would be copied onto the classifier's full stack"
            )]
            let _ = TLS_FLOWS.insert(&(*s).ev.head.key, &*entry, 0);
        }
        return Some(Verdict::ObservedNew);
    }
    if sockets::daemon_owns(ctx, key) {
        return None;
    }
    Some(Verdict::PassedUntracked)
}

/// A packet of an observed flow, client → server.
#[inline(always)]
fn observed(
    ctx: &TcContext,
    st: *mut ObservedFlow,
    key: &TlsFlowKey,
    tcp: &Tcp,
    now: u64,
    listen_port: u16,
    mark: u32,
) -> Verdict {
    // SAFETY: `st` is a map value pointer valid for this run. The counters are shared with the
    // egress program (another CPU) and added atomically; `up_flags` and the hello state are
    // written by the LAN ingress programs only (this one and the reader it calls).
    unsafe {
        add(&raw mut (*st).packets_up, u64::from(tcp.segs));
        add(&raw mut (*st).bytes_up, u64::from(tcp.payload_len));
        (*st).last_ns = now;
        if (*st).up_flags & UP_DENIED != 0 {
            // Every later packet of a denied flow is reset too (a retransmitted hello, data).
            sockets::reset_by_listener(ctx, key, listen_port, mark);
            return Verdict::DeniedSni;
        }
        close_seen(
            st,
            tcp.flags,
            &raw mut (*st).up_flags,
            (*st).down_flags,
            UP_END_SENT,
            DOWN_END_SENT,
        );
        if tcp.payload_len > 0 && (*st).hello_state != HELLO_DONE {
            // The reader takes over this packet (its verdict, its mark) and does not return.
            // If it cannot run (not loaded), the packet is simply observed.
            TLS_PROGS.tail_call(ctx, 0);
        }
    }
    Verdict::Observed
}

/// Is this destination steered: in an operator prefix, or learned from DNS and not expired?
#[inline(always)]
fn steered(flow: &Flow, now: u64) -> bool {
    // SAFETY (lookups): map values are valid for this run and copied out at once.
    if flow.addrs.v6 {
        let dst = flow.addrs.dst;
        TLS_STEER_PREFIX_V6.get(Key::new(128, dst)).is_some()
            || unsafe { TLS_STEER_V6.get(dst) }.is_some_and(|e| e.expires_ns > now)
    } else {
        let dst = flow.addrs.dst4();
        TLS_STEER_PREFIX_V4.get(Key::new(32, dst)).is_some()
            || unsafe { TLS_STEER_V4.get(dst) }.is_some_and(|e| e.expires_ns > now)
    }
}

/// A packet of one direction of an observed flow: on a FIN or RST, record it in that
/// direction's flags (`own`, written by that direction's program only) and, once the flow has
/// ended — a RST, or FINs both ways — send its end event, once, from whichever direction sees
/// the end first (`own_sent`/`other_sent` mark who did).
///
/// # Safety
/// `st` and `own` point into a live `TLS_FLOWS` value.
#[inline(always)]
unsafe fn close_seen(
    st: *mut ObservedFlow,
    tcp_flags: u8,
    own: *mut u32,
    other: u32,
    own_sent: u32,
    other_sent: u32,
) {
    if tcp_flags & (FIN | RST) == 0 {
        return;
    }
    // SAFETY: the caller's.
    unsafe {
        let mut flags = *own
            | if tcp_flags & RST != 0 {
                DIR_RST
            } else {
                DIR_FIN
            };
        let ended = flags & DIR_RST != 0 || other & DIR_FIN != 0;
        if ended && flags & own_sent == 0 && other & other_sent == 0 {
            flags |= own_sent;
            *own = flags;
            send_end(
                st,
                if flags & DIR_RST != 0 {
                    END_RST
                } else {
                    END_FIN
                },
            );
        } else {
            *own = flags;
        }
    }
}

/// Add to a counter another CPU may be adding to (compiles to one atomic add).
///
/// # Safety
/// `p` points into a live map value.
#[inline(always)]
unsafe fn add(p: *mut u64, v: u64) {
    // The BPF target has no `AtomicU64::fetch_add`; the intrinsic with its result unused is
    // what becomes the BPF atomic add (`lock *(u64 *)(r + 0) += r`).
    // SAFETY: map values are 8-byte aligned and live for this run.
    let _: u64 = unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
}

/// Send an end event for the flow whose key is in this CPU's scratch, with its counters.
///
/// # Safety
/// `st` is the flow's live map entry; the scratch holds its key.
#[inline(always)]
unsafe fn send_end(st: *const ObservedFlow, status: u32) {
    let Some(s) = TLS_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch (see `ingress`) and the flow's entry.
    unsafe {
        (*s).ev.head.kind = EVENT_END;
        (*s).ev.head.status = status;
        (*s).ev.head.flow = *st;
        // A full ring buffer loses the event; the daemon's sweep reports the flow as ended later.
        let _ = TLS_EVENTS.output::<TlsEventHead>(&(*s).ev.head, 0);
    }
}

/// LAN egress: counts the server → client direction of observed flows. It never changes or
/// drops a packet, so its action is always `TC_ACT_OK`.
#[classifier]
pub fn velocache_lan_egress(ctx: TcContext) -> i32 {
    let _counted: Option<()> = try_egress(&ctx);
    TC_ACT_OK
}

#[inline(always)]
fn try_egress(ctx: &TcContext) -> Option<()> {
    if TLS_OBSERVE.get(0)?.enabled == 0 {
        return None;
    }
    let pkt = parse_tcp(ctx)?;
    // SAFETY: a map value valid for this run, copied out at once.
    let entry =
        unsafe { *SERVICE_PORTS.get(PortKey::new(IPPROTO_TCP, u16::from_be(pkt.sport_be)))? };
    if entry.service != Service::Https as u32 {
        return None;
    }
    let s = TLS_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch (see `ingress`).
    let key = unsafe {
        (*s).ev.head.key = pkt.key_down();
        &(*s).ev.head.key
    };
    let st = TLS_FLOWS.get_ptr_mut(key)?;
    let tcp = pkt.tcp;
    // SAFETY: as in `observed`; `down_flags` is written by this program only.
    unsafe {
        add(&raw mut (*st).packets_down, u64::from(tcp.segs));
        add(&raw mut (*st).bytes_down, u64::from(tcp.payload_len));
        (*st).last_ns = bpf_ktime_get_ns();
        close_seen(
            st,
            tcp.flags,
            &raw mut (*st).down_flags,
            (*st).up_flags,
            DOWN_END_SENT,
            UP_END_SENT,
        );
    }
    Some(())
}
