//! Finding the daemon socket a packet belongs to, and handing the packet to it.
//!
//! The classifier asks two questions of the kernel's socket tables: is there a socket for this
//! very tuple (an intercepted connection in progress, or one that is closing), and does the
//! daemon listen for this service? [`steer`] then assigns the packet to the socket found and
//! marks it for local delivery — always both, and only once a socket was found.
//! [`remember_steered`] leaves the tuple for the `sk_lookup` program where the kernel's own
//! listener lookup has the last word.
use core::mem;

use aya_ebpf::{
    EbpfContext,
    bindings::{
        bpf_sock, bpf_sock_tuple, bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 as Tuple4,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2 as Tuple6,
    },
    helpers::generated::{
        bpf_ktime_get_ns, bpf_sk_assign, bpf_sk_lookup_tcp, bpf_sk_lookup_udp, bpf_sk_release,
        bpf_skc_lookup_tcp,
    },
    programs::TcContext,
};
use velocache_common::{
    IPPROTO_TCP, Verdict,
    steer::{SteerKey, SteerValue, listener_slot},
};

use crate::{
    maps::{PASSED, STEERED},
    parse::Flow,
};

/// `BPF_F_CURRENT_NETNS`: look sockets up in the namespace the packet is in.
const CURRENT_NETNS: u64 = u64::MAX;
/// `struct bpf_sock::state` values. A timewait minisocket reports TIME_WAIT whatever its
/// substate (TIME_WAIT proper, or FIN_WAIT2 for an orphaned socket whose close is pending).
const BPF_TCP_TIME_WAIT: u32 = 6;
const BPF_TCP_LISTEN: u32 = 10;

/// Assign the packet to `sk`, mark it, and release our reference. Consumes `sk`.
#[inline(always)]
pub fn steer(ctx: &TcContext, sk: *mut bpf_sock, mark: u32, ok: Verdict) -> Verdict {
    // SAFETY: `sk` is a non-null reference returned by a lookup helper; it is released exactly
    // once below, as the verifier requires.
    let rc = unsafe { bpf_sk_assign(ctx.as_ptr() as *mut _, sk as *mut _, 0) };
    unsafe { bpf_sk_release(sk as *mut _) };
    if rc != 0 {
        // Counted (`assign_failed`), not logged: the log call is a BPF subprogram whose frame,
        // on top of the classifier's, would pass the verifier's 512-byte combined stack limit.
        return Verdict::AssignFailed;
    }
    ctx.set_mark(mark);
    ok
}

/// Release a socket reference without using it.
#[inline(always)]
pub fn release(sk: *mut bpf_sock) {
    // SAFETY: a non-null reference from a lookup helper, released exactly once.
    unsafe { bpf_sk_release(sk as *mut _) };
}

/// What the lookup of the packet's own tuple found.
pub enum Established {
    /// Nothing connected: a new flow (or a listener matched the wildcard; ignored).
    None,
    /// A connected daemon socket: assign the packet to it.
    Socket(*mut bpf_sock),
    /// A closing daemon socket (timewait minisocket) holds the tuple.
    TimeWait(*mut bpf_sock),
}

/// The socket of this very tuple if it is a connected (non-listening) one: a later packet of a
/// flow the daemon already accepted, or of one it is closing. A wildcard listener also matches
/// any tuple, so listeners found here are released and ignored — only the daemon's own listener
/// may take new flows.
#[inline(always)]
pub fn lookup_established_tcp(ctx: &TcContext, flow: &Flow) -> Established {
    let (mut tuple, size) = tuple_for(flow, None);
    // SAFETY: `tuple` is a valid, initialised stack buffer of `size` bytes.
    let sk =
        unsafe { bpf_skc_lookup_tcp(ctx.as_ptr() as *mut _, &mut tuple, size, CURRENT_NETNS, 0) };
    if sk.is_null() {
        return Established::None;
    }
    // SAFETY: non-null socket pointer from the helper; `state` is readable on sock_common.
    match unsafe { (*sk).state } {
        BPF_TCP_LISTEN => {
            release(sk);
            Established::None
        }
        BPF_TCP_TIME_WAIT => Established::TimeWait(sk),
        _ => Established::Socket(sk),
    }
}

/// The daemon's listener for this service: a tuple with the listener's port and a zeroed
/// destination address matches a socket bound to the wildcard address on that port.
#[inline(always)]
pub fn lookup_listener(ctx: &TcContext, flow: &Flow, listen_port_be: u16) -> *mut bpf_sock {
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

/// `flow`'s tuple as the steering maps key it (remote = the client).
#[inline(always)]
fn tuple_key(flow: &Flow) -> SteerKey {
    SteerKey {
        remote: flow.addrs.src,
        local: flow.addrs.dst,
        remote_port_be: flow.sport_be,
        local_port_be: flow.dport_be,
        family: flow.addrs.family(),
        proto: flow.proto,
        _pad: [0; 2],
    }
}

/// Leave `flow`'s tuple for the `sk_lookup` program: the kernel's next listener lookup for it
/// is answered with `service`'s socket.
#[inline(always)]
pub fn remember_steered(flow: &Flow, service: u32) {
    let key = tuple_key(flow);
    let value = SteerValue {
        slot: listener_slot(service, flow.proto, flow.addrs.v6),
        _pad: 0,
        // SAFETY: a helper without arguments.
        stamp_ns: unsafe { bpf_ktime_get_ns() },
    };
    // A full LRU map evicts; an insert can only fail for lack of memory, and then the kernel's
    // lookup finds no entry and the flow is not intercepted — nothing to do about it here.
    let _ = STEERED.insert(key, value, 0);
}

/// `flow`'s SYN was passed around a closing daemon socket: its connection runs directly.
#[inline(always)]
pub fn remember_passed(flow: &Flow) {
    let _ = PASSED.insert(tuple_key(flow), 1, 0);
}

/// Was the latest SYN of `flow`'s tuple passed (so its packets belong to a direct connection)?
#[inline(always)]
pub fn was_passed(flow: &Flow) -> bool {
    PASSED.get_ptr(tuple_key(flow)).is_some()
}

/// A SYN of `flow`'s tuple was steered: the tuple's packets are the daemon's again. (Looked up
/// first: a lookup takes no lock, a delete does, and the entry is almost never there.)
#[inline(always)]
pub fn forget_passed(flow: &Flow) {
    let key = tuple_key(flow);
    if PASSED.get_ptr(key).is_some() {
        let _ = PASSED.remove(key);
    }
}

/// Build a socket lookup tuple. With `listener = Some(port)` the destination becomes the
/// wildcard address and the listener's port.
#[inline(always)]
fn tuple_for(flow: &Flow, listener: Option<u16>) -> (bpf_sock_tuple, u32) {
    // SAFETY: all-zero is a valid value for this plain C union.
    let mut tuple: bpf_sock_tuple = unsafe { mem::zeroed() };
    let a = &flow.addrs;
    if a.v6 {
        let (daddr, dport) = match listener {
            Some(port) => ([0u32; 4], port),
            None => (words(&a.dst), flow.dport_be),
        };
        tuple.__bindgen_anon_1.ipv6 = Tuple6 {
            saddr: words(&a.src),
            daddr,
            sport: flow.sport_be,
            dport,
        };
        (tuple, mem::size_of::<Tuple6>() as u32)
    } else {
        let (daddr, dport) = match listener {
            Some(port) => (0, port),
            None => (u32::from_ne_bytes(a.dst4()), flow.dport_be),
        };
        tuple.__bindgen_anon_1.ipv4 = Tuple4 {
            saddr: u32::from_ne_bytes(a.src4()),
            daddr,
            sport: flow.sport_be,
            dport,
        };
        (tuple, mem::size_of::<Tuple4>() as u32)
    }
}

/// An IPv6 address as the four network-order words the kernel's structures use.
#[inline(always)]
pub fn words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}
