//! Socket lookups: is the daemon's listener there (observation and kernel denies act only while
//! it is: the fail-open), does a daemon socket own this very tuple, and the reset of a denied
//! flow by the listener.
//!
//! These duplicate a few lines of the classifier's own lookups on purpose: observation asks
//! different questions (yes/no, never a socket to assign) and must not depend on how the
//! classifier finds its sockets.
use core::mem;

use aya_ebpf::{
    EbpfContext,
    bindings::{
        bpf_sock_tuple, bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 as Tuple4,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2 as Tuple6,
    },
    helpers::generated::{bpf_sk_assign, bpf_sk_lookup_tcp, bpf_sk_release, bpf_skc_lookup_tcp},
    programs::TcContext,
};
use velocache_common::tls::{FAMILY_V4, TlsFlowKey};

/// `BPF_F_CURRENT_NETNS`.
const CURRENT_NETNS: u64 = u64::MAX;
/// `struct bpf_sock::state` of a listener.
const BPF_TCP_LISTEN: u32 = 10;

/// Whether the daemon's TLS listener (bound to the wildcard address on `listen_port`) exists,
/// for the flow `key` (the packet's own, client → server).
#[inline(always)]
pub fn daemon_listening_for(ctx: &TcContext, key: &TlsFlowKey, listen_port: u16) -> bool {
    let (mut tuple, size) = tuple(key, Some(listen_port.to_be()));
    // SAFETY: `tuple` is an initialised stack buffer of `size` bytes.
    let sk =
        unsafe { bpf_sk_lookup_tcp(ctx.as_ptr() as *mut _, &mut tuple, size, CURRENT_NETNS, 0) };
    if sk.is_null() {
        return false;
    }
    // SAFETY: releasing the reference the lookup returned, once.
    unsafe { bpf_sk_release(sk as *mut _) };
    true
}

/// Reset a denied flow: give this packet (not a SYN) to the daemon's listener and mark it for
/// local delivery. A listener answers such a packet with a reset, and since ours is transparent
/// the reset leaves from the original destination's address — the client sees the server reset
/// the connection. (A mark alone is not enough: the stack finds no socket and would answer, but
/// refuses to send from an address that is not the gateway's own.) Returns false when the
/// listener is gone or refuses the packet; the packet is then marked anyway, and goes to the
/// local stack to be dropped: denied either way, the client then gives up on its own.
#[inline(always)]
pub fn reset_by_listener(ctx: &TcContext, key: &TlsFlowKey, listen_port: u16, mark: u32) -> bool {
    let (mut tuple, size) = tuple(key, Some(listen_port.to_be()));
    // SAFETY: as above.
    let sk =
        unsafe { bpf_sk_lookup_tcp(ctx.as_ptr() as *mut _, &mut tuple, size, CURRENT_NETNS, 0) };
    let mut assigned = false;
    if !sk.is_null() {
        // SAFETY: a non-null reference from the lookup, released exactly once.
        unsafe {
            assigned = bpf_sk_assign(ctx.as_ptr() as *mut _, sk as *mut _, 0) == 0;
            bpf_sk_release(sk as *mut _);
        }
    }
    ctx.set_mark(mark);
    assigned
}

/// Whether a daemon socket other than a listener holds this packet's own tuple (a flow the
/// daemon accepted, or its TIME_WAIT remains).
#[inline(always)]
pub fn daemon_owns(ctx: &TcContext, key: &TlsFlowKey) -> bool {
    let (mut tuple, size) = tuple(key, None);
    // SAFETY: as above.
    let sk =
        unsafe { bpf_skc_lookup_tcp(ctx.as_ptr() as *mut _, &mut tuple, size, CURRENT_NETNS, 0) };
    if sk.is_null() {
        return false;
    }
    // SAFETY: a non-null socket from the helper; `state` is readable on sock_common.
    let state = unsafe { (*sk).state };
    // SAFETY: releasing the reference, once.
    unsafe { bpf_sk_release(sk as *mut _) };
    state != BPF_TCP_LISTEN
}

/// A lookup tuple for `key`; with `listener = Some(port)` the destination is the wildcard
/// address and that port (network order).
#[inline(always)]
fn tuple(key: &TlsFlowKey, listener: Option<u16>) -> (bpf_sock_tuple, u32) {
    // SAFETY: all-zero is a valid value for this plain C union.
    let mut t: bpf_sock_tuple = unsafe { mem::zeroed() };
    if key.family == FAMILY_V4 {
        let (daddr, dport) = match listener {
            Some(port) => (0, port),
            None => (word(&key.server, 0), key.server_port_be),
        };
        t.__bindgen_anon_1.ipv4 = Tuple4 {
            saddr: word(&key.client, 0),
            daddr,
            sport: key.client_port_be,
            dport,
        };
        (t, mem::size_of::<Tuple4>() as u32)
    } else {
        let (daddr, dport) = match listener {
            Some(port) => ([0u32; 4], port),
            None => (words(&key.server), key.server_port_be),
        };
        t.__bindgen_anon_1.ipv6 = Tuple6 {
            saddr: words(&key.client),
            daddr,
            sport: key.client_port_be,
            dport,
        };
        (t, mem::size_of::<Tuple6>() as u32)
    }
}

#[inline(always)]
fn word(a: &[u8; 16], i: usize) -> u32 {
    u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]])
}

#[inline(always)]
fn words(a: &[u8; 16]) -> [u32; 4] {
    [word(a, 0), word(a, 4), word(a, 8), word(a, 12)]
}
