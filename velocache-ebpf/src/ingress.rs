//! The LAN ingress classifier (TC ingress, attached by TCX where the kernel has it).
//!
//! For each packet: is its `(protocol, destination port)` a configured service? Is its client or
//! destination bypassed, or is it addressed to the gateway itself? If not, find the socket that
//! should receive it — the daemon's established socket for this very tuple, else the daemon's
//! listener for the service — assign the packet to it and mark it so that policy routing
//! delivers it locally. No socket means the daemon is gone: the packet is passed untouched and
//! is forwarded as if VeloCache were not installed.
//!
//! Mark and assignment always happen together and only after a socket was found: a mark alone
//! would route the packet to the local table with nobody to receive it, an assignment alone
//! would make `ip_forward()` drop it.
use core::mem;

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_FIB_LKUP_RET_NOT_FWDED, TC_ACT_OK, bpf_fib_lookup, bpf_sock, bpf_sock_tuple,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 as Tuple4,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2 as Tuple6,
    },
    helpers::generated::{
        bpf_fib_lookup as fib_lookup, bpf_sk_assign, bpf_sk_lookup_tcp, bpf_sk_lookup_udp,
        bpf_sk_release, bpf_skc_lookup_tcp,
    },
    macros::classifier,
    maps::lpm_trie::Key,
    programs::TcContext,
};
use aya_log_ebpf::{debug, warn};
use velocache_common::{IPPROTO_TCP, IPPROTO_UDP, PortKey, Service, Verdict, counter_index};

use crate::{
    maps::{
        BYPASS_CLIENTS_V4, BYPASS_CLIENTS_V6, BYPASS_DESTS_V4, BYPASS_DESTS_V6, CONFIG, COUNTERS,
        SERVICE_PORTS,
    },
    parse::{Addrs, Flow, parse_flow},
};

/// `BPF_F_CURRENT_NETNS`: look sockets up in the namespace the packet is in.
const CURRENT_NETNS: u64 = u64::MAX;
/// `struct bpf_sock::state` values.
const BPF_TCP_TIME_WAIT: u32 = 6;
const BPF_TCP_LISTEN: u32 = 10;
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
    let flow = parse_flow(ctx)?;
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
    if client_bypassed(&flow) {
        return Some((service, Verdict::BypassedClient));
    }
    if destination_bypassed(&flow) {
        return Some((service, Verdict::BypassedDestination));
    }
    if cfg.intercept_gateway == 0 && addressed_to_gateway(ctx, &flow) {
        return Some((service, Verdict::GatewayLocal));
    }
    // TLS observation (`observe`): an HTTPS flow no rule could act on is forwarded by the kernel
    // and observed, never steered. `None`: this packet takes the usual path below.
    if service == Service::Https as u32
        && let Some(verdict) =
            crate::observe::ingress(ctx, &flow, entry.listen_port as u16, cfg.mark)
    {
        return Some((service, verdict));
    }

    if flow.proto == IPPROTO_TCP {
        match lookup_established_tcp(ctx, &flow) {
            Established::Socket(sk) => {
                return Some((
                    service,
                    steer(ctx, sk, cfg.mark, Verdict::SteeredEstablished),
                ));
            }
            Established::TimeWait => return Some((service, Verdict::PassedTimeWait)),
            Established::None => {}
        }
    }
    let listen_port_be = (entry.listen_port as u16).to_be();
    let sk = lookup_listener(ctx, &flow, listen_port_be);
    if sk.is_null() {
        return Some((service, Verdict::PassedNoListener));
    }
    let verdict = steer(ctx, sk, cfg.mark, Verdict::SteeredListener);
    if verdict == Verdict::SteeredListener {
        debug!(
            ctx,
            "steered new flow: service {} proto {} dport {}",
            service,
            flow.proto,
            u16::from_be(flow.dport_be)
        );
    }
    Some((service, verdict))
}

/// Assign the packet to `sk`, mark it, and release our reference. Consumes `sk`.
#[inline(always)]
fn steer(ctx: &TcContext, sk: *mut bpf_sock, mark: u32, ok: Verdict) -> Verdict {
    // SAFETY: `sk` is a non-null reference returned by a lookup helper; it is released exactly
    // once below, as the verifier requires.
    let rc = unsafe { bpf_sk_assign(ctx.as_ptr() as *mut _, sk as *mut _, 0) };
    unsafe { bpf_sk_release(sk as *mut _) };
    if rc != 0 {
        warn!(ctx, "bpf_sk_assign failed: {}", rc);
        return Verdict::AssignFailed;
    }
    ctx.set_mark(mark);
    ok
}

/// What the lookup of the packet's own tuple found.
enum Established {
    /// Nothing connected: a new flow (or a listener matched the wildcard; ignored).
    None,
    /// A connected daemon socket: assign the packet to it.
    Socket(*mut bpf_sock),
    /// A daemon socket in TIME_WAIT holds the tuple.
    TimeWait,
}

/// The socket of this very tuple if it is a connected (non-listening) one: a later packet of a
/// flow the daemon already accepted. A wildcard listener also matches any tuple, so listeners
/// found here are released and ignored — only the daemon's own listener may take new flows.
///
/// TIME_WAIT is reported separately: a packet for such a tuple is a client reusing its port.
/// Neither choice of socket works for it — a SYN given to the TIME_WAIT socket looks for a
/// listener on the *original* port and finds none; given to our listener it is dropped because
/// the tuple is still hashed. So such a connection is not intercepted at all. (The daemon
/// closes cleanly finished connections with a reset, so this is rare.)
#[inline(always)]
fn lookup_established_tcp(ctx: &TcContext, flow: &Flow) -> Established {
    let (mut tuple, size) = tuple_for(flow, None);
    // SAFETY: `tuple` is a valid, initialised stack buffer of `size` bytes.
    let sk =
        unsafe { bpf_skc_lookup_tcp(ctx.as_ptr() as *mut _, &mut tuple, size, CURRENT_NETNS, 0) };
    if sk.is_null() {
        return Established::None;
    }
    // SAFETY: non-null socket pointer from the helper; `state` is readable on sock_common.
    let state = unsafe { (*sk).state };
    match state {
        BPF_TCP_LISTEN | BPF_TCP_TIME_WAIT => {
            // SAFETY: releasing the reference the lookup returned, exactly once.
            unsafe { bpf_sk_release(sk as *mut _) };
            if state == BPF_TCP_TIME_WAIT {
                Established::TimeWait
            } else {
                Established::None
            }
        }
        _ => Established::Socket(sk),
    }
}

/// The daemon's listener for this service: a tuple with the listener's port and a zeroed
/// destination address matches a socket bound to the wildcard address on that port.
#[inline(always)]
fn lookup_listener(ctx: &TcContext, flow: &Flow, listen_port_be: u16) -> *mut bpf_sock {
    let (mut tuple, size) = tuple_for(flow, Some(listen_port_be));
    // SAFETY: as above.
    unsafe {
        if flow.proto == IPPROTO_TCP {
            bpf_sk_lookup_tcp(ctx.as_ptr() as *mut _, &mut tuple, size, CURRENT_NETNS, 0)
        } else {
            bpf_sk_lookup_udp(ctx.as_ptr() as *mut _, &mut tuple, size, CURRENT_NETNS, 0)
        }
    }
}

/// Build a socket lookup tuple. With `listener = Some(port)` the destination becomes the
/// wildcard address and the listener's port.
#[inline(always)]
fn tuple_for(flow: &Flow, listener: Option<u16>) -> (bpf_sock_tuple, u32) {
    // SAFETY: all-zero is a valid value for this plain C union.
    let mut tuple: bpf_sock_tuple = unsafe { mem::zeroed() };
    match flow.addrs {
        Addrs::V4 { src, dst } => {
            let (daddr, dport) = match listener {
                Some(port) => (0, port),
                None => (u32::from_ne_bytes(dst), flow.dport_be),
            };
            tuple.__bindgen_anon_1.ipv4 = Tuple4 {
                saddr: u32::from_ne_bytes(src),
                daddr,
                sport: flow.sport_be,
                dport,
            };
            (tuple, mem::size_of::<Tuple4>() as u32)
        }
        Addrs::V6 { src, dst } => {
            let (daddr, dport) = match listener {
                Some(port) => ([0u32; 4], port),
                None => (words(&dst), flow.dport_be),
            };
            tuple.__bindgen_anon_1.ipv6 = Tuple6 {
                saddr: words(&src),
                daddr,
                sport: flow.sport_be,
                dport,
            };
            (tuple, mem::size_of::<Tuple6>() as u32)
        }
    }
}

#[inline(always)]
fn words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

#[inline(always)]
fn client_bypassed(flow: &Flow) -> bool {
    match flow.addrs {
        Addrs::V4 { src, .. } => BYPASS_CLIENTS_V4.get(Key::new(32, src)).is_some(),
        Addrs::V6 { src, .. } => BYPASS_CLIENTS_V6.get(Key::new(128, src)).is_some(),
    }
}

#[inline(always)]
fn destination_bypassed(flow: &Flow) -> bool {
    match flow.addrs {
        Addrs::V4 { dst, .. } => BYPASS_DESTS_V4.get(Key::new(32, dst)).is_some(),
        Addrs::V6 { dst, .. } => BYPASS_DESTS_V6.get(Key::new(128, dst)).is_some(),
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
    match flow.addrs {
        Addrs::V4 { src, dst } => {
            params.family = AF_INET;
            params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(src);
            params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(dst);
        }
        Addrs::V6 { src, dst } => {
            params.family = AF_INET6;
            params.__bindgen_anon_3.ipv6_src = words(&src);
            params.__bindgen_anon_4.ipv6_dst = words(&dst);
        }
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
