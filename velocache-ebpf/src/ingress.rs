//! The LAN ingress classifier (TC ingress, attached by TCX where the kernel has it).
//!
//! For each packet: is its `(protocol, destination port)` a configured service? Is its client or
//! destination bypassed, or is it addressed to the gateway itself? If not, find the socket that
//! should receive it — the daemon's socket for this very tuple (connected, or closing), else the
//! daemon's listener for the service — assign the packet to it and mark it so that policy
//! routing delivers it locally. No socket means the daemon is gone: the packet is passed
//! untouched and is forwarded as if VeloCache were not installed.
//!
//! A closing daemon socket (a timewait minisocket: TIME_WAIT, or an orphaned FIN_WAIT2 after the
//! daemon closed first) still owns its tuple. Packets for it are delivered to it, so the client's
//! FIN/ACK/RST finish the close (forwarded instead, they would reach an origin that never saw the
//! connection, and early demux would make `ip_forward()` drop them anyway). A SYN that reuses
//! such a tuple is delivered to it too: the kernel then looks for a listener on the original
//! destination (TCP's `TCP_TW_SYN` path), which the `sk_lookup` program answers with the
//! daemon's, so the new connection is intercepted at once. The same program answers for
//! fragmented datagrams after reassembly (see `fragments`).
//!
//! Mark and assignment always happen together and only after a socket was found: a mark alone
//! would route the packet to the local table with nobody to receive it, an assignment alone
//! would make `ip_forward()` drop it.
use core::mem;

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_FIB_LKUP_RET_NOT_FWDED, TC_ACT_OK, bpf_fib_lookup, bpf_sock},
    helpers::generated::bpf_fib_lookup as fib_lookup,
    macros::classifier,
    maps::lpm_trie::Key,
    programs::TcContext,
};
use aya_log_ebpf::debug;
use velocache_common::{
    IPPROTO_TCP, IPPROTO_UDP, PortKey, Service, ServiceEntry, Verdict, counter_index,
};

use crate::{
    fragments,
    maps::{
        BYPASS_CLIENTS_V4, BYPASS_CLIENTS_V6, BYPASS_DESTS_V4, BYPASS_DESTS_V6, CONFIG, COUNTERS,
        SERVICE_PORTS,
    },
    parse::{Flow, Packet, TCP_ACK, TCP_SYN, parse},
    sockets::{
        Established, forget_passed, lookup_established_tcp, lookup_listener, release,
        remember_passed, remember_steered, steer, was_passed, words,
    },
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

#[classifier]
pub fn velocache_lan_ingress(ctx: TcContext) -> i32 {
    // Every outcome, steered or not, lets the packet continue; only the side effects differ.
    // Returning the computed action (rather than a constant) keeps that decision in one place.
    match try_classify(&ctx) {
        Some((service, verdict)) => {
            count(service, verdict);
            TC_ACT_OK
        }
        None => TC_ACT_OK,
    }
}

/// `None`: not a service packet (not counted). `Some`: the service and what was done with it.
#[inline(always)]
fn try_classify(ctx: &TcContext) -> Option<(u32, Verdict)> {
    match parse(ctx)? {
        Packet::Flow(flow) => classify_flow(ctx, &flow),
        Packet::LaterFragment(frag) => {
            if frag.proto != IPPROTO_TCP && frag.proto != IPPROTO_UDP {
                return None;
            }
            fragments::follow(ctx, &frag, CONFIG.get(0)?)
        }
    }
}

#[inline(always)]
fn classify_flow(ctx: &TcContext, flow: &Flow) -> Option<(u32, Verdict)> {
    if flow.proto != IPPROTO_TCP && flow.proto != IPPROTO_UDP {
        return None;
    }
    // SAFETY: a map lookup result stays valid for the program's run (RCU).
    let entry =
        unsafe { *SERVICE_PORTS.get(PortKey::new(flow.proto, u16::from_be(flow.dport_be)))? };
    let service = entry.service;
    let cfg = CONFIG.get(0)?;
    if cfg.enabled == 0 {
        return Some((service, Verdict::Disabled));
    }
    if client_bypassed(flow) {
        return Some((service, Verdict::BypassedClient));
    }
    if destination_bypassed(flow) {
        return Some((service, Verdict::BypassedDestination));
    }
    if cfg.intercept_gateway == 0 && addressed_to_gateway(ctx, flow) {
        return Some((service, Verdict::GatewayLocal));
    }
    if let Some(id) = flow.first_fragment
        && fragments::forwarded_ahead(flow, id)
    {
        return Some((service, Verdict::PassedFragmentsAhead));
    }
    // TLS observation (`observe`): an HTTPS flow no rule could act on is forwarded by the kernel
    // and observed, never steered. `None`: this packet takes the usual path below.
    if service == Service::Https as u32
        && let Some(verdict) =
            crate::observe::ingress(ctx, flow, entry.listen_port as u16, cfg.mark)
    {
        return Some((service, verdict));
    }

    let verdict = steer_flow(ctx, flow, &entry, cfg.mark);
    match verdict {
        Verdict::SteeredListener => {
            debug!(
                ctx,
                "steered new flow: service {} proto {} dport {}",
                service,
                flow.proto,
                u16::from_be(flow.dport_be)
            );
        }
        Verdict::PassedNoListener | Verdict::PassedTimeWait | Verdict::AssignFailed => {
            return Some((service, verdict));
        }
        _ => {}
    }
    if let Some(id) = flow.first_fragment {
        fragments::remember_first(flow, id, service, entry.listen_port);
    }
    Some((service, verdict))
}

/// Find the daemon socket for `flow` and steer the packet to it: the connection's own socket
/// (connected or closing), else the service's listener. Returns what was done.
#[inline(always)]
pub fn steer_flow(ctx: &TcContext, flow: &Flow, entry: &ServiceEntry, mark: u32) -> Verdict {
    let tcp = flow.proto == IPPROTO_TCP;
    if tcp {
        match lookup_established_tcp(ctx, flow) {
            Established::Socket(sk) => return steer(ctx, sk, mark, Verdict::SteeredEstablished),
            Established::TimeWait(tw) => return closing(ctx, flow, entry, tw, mark),
            Established::None if !is_syn(flow) && was_passed(flow) => {
                return Verdict::PassedTimeWait;
            }
            Established::None => {}
        }
    }
    let sk = lookup_listener(ctx, flow, (entry.listen_port as u16).to_be());
    if sk.is_null() {
        return Verdict::PassedNoListener;
    }
    let verdict = steer(ctx, sk, mark, Verdict::SteeredListener);
    if tcp && verdict == Verdict::SteeredListener && is_syn(flow) {
        forget_passed(flow);
    }
    verdict
}

/// A bare SYN: a client opening a connection.
#[inline(always)]
fn is_syn(flow: &Flow) -> bool {
    flow.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// A packet for a tuple a closing daemon socket `tw` holds. Consumes `tw`.
///
/// Anything but a bare SYN belongs to that socket — unless the tuple's latest SYN was passed (a
/// direct connection now uses it). A SYN is a client reusing its port: given to the closing
/// socket, it makes the kernel look up a listener for the original destination, which the
/// `sk_lookup` program answers with the daemon's — but only while the daemon listens. Without a
/// listener the SYN is passed (handed over, it would reach whatever listens on that port on the
/// gateway itself) and so are the connection's later packets; the kernel forwards them because
/// the daemon turned TCP early demultiplexing off (`datapath::sysctl`).
#[inline(always)]
fn closing(
    ctx: &TcContext,
    flow: &Flow,
    entry: &ServiceEntry,
    tw: *mut bpf_sock,
    mark: u32,
) -> Verdict {
    if !is_syn(flow) {
        if was_passed(flow) {
            release(tw);
            return Verdict::PassedTimeWait;
        }
        return steer(ctx, tw, mark, Verdict::SteeredTimeWait);
    }
    let listener = lookup_listener(ctx, flow, (entry.listen_port as u16).to_be());
    if listener.is_null() {
        release(tw);
        remember_passed(flow);
        return Verdict::PassedTimeWait;
    }
    release(listener);
    forget_passed(flow);
    remember_steered(flow, entry.service);
    steer(ctx, tw, mark, Verdict::SteeredReusedPort)
}

#[inline(always)]
fn client_bypassed(flow: &Flow) -> bool {
    let a = &flow.addrs;
    if a.v6 {
        BYPASS_CLIENTS_V6.get(Key::new(128, a.src)).is_some()
    } else {
        BYPASS_CLIENTS_V4.get(Key::new(32, a.src4())).is_some()
    }
}

#[inline(always)]
fn destination_bypassed(flow: &Flow) -> bool {
    let a = &flow.addrs;
    if a.v6 {
        BYPASS_DESTS_V6.get(Key::new(128, a.dst)).is_some()
    } else {
        BYPASS_DESTS_V4.get(Key::new(32, a.dst4())).is_some()
    }
}

/// Is the destination one of the gateway's own addresses? Asked of the kernel's FIB (with the
/// routing rules), so it follows address changes without the daemon tracking them.
#[inline(always)]
fn addressed_to_gateway(ctx: &TcContext, flow: &Flow) -> bool {
    // SAFETY: all-zero is a valid value; zero also leaves the input `mark` at 0.
    let mut params: bpf_fib_lookup = unsafe { mem::zeroed() };
    params.l4_protocol = flow.proto;
    params.sport = flow.sport_be;
    params.dport = flow.dport_be;
    params.__bindgen_anon_1.tot_len = flow.tot_len;
    // SAFETY: reading a plain field of the context.
    params.ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
    let a = &flow.addrs;
    if a.v6 {
        params.family = AF_INET6;
        params.__bindgen_anon_3.ipv6_src = words(&a.src);
        params.__bindgen_anon_4.ipv6_dst = words(&a.dst);
    } else {
        params.family = AF_INET;
        params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(a.src4());
        params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(a.dst4());
    }
    // SAFETY: `params` is a valid stack buffer of the size passed.
    let rc = unsafe {
        fib_lookup(
            ctx.as_ptr() as *mut _,
            &mut params,
            mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    rc == BPF_FIB_LKUP_RET_NOT_FWDED as i64
}

#[inline(always)]
fn count(service: u32, verdict: Verdict) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter_index(service, verdict)) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *slot += 1 };
    }
}
