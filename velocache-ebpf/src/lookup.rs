//! The `sk_lookup` program, attached to the gateway's network namespace: it answers the kernel's
//! listener lookups for the tuples the classifier left in `STEERED` — a SYN handed to a closing
//! daemon socket (`TCP_TW_SYN`), a datagram reassembled after the classifier ran — with the
//! daemon's socket from `LISTENERS`.
//!
//! Every other lookup (the gateway's own services, the classifier's own socket lookups) is left
//! alone (`SK_PASS` without assigning). A steered tuple whose daemon socket is gone is dropped
//! (`SK_DROP`) rather than handed to whatever else listens on that port on the gateway.
use core::ptr::read_volatile;

use aya_ebpf::{
    bindings::{sk_action::SK_DROP, sk_action::SK_PASS},
    helpers::generated::bpf_ktime_get_ns,
    macros::sk_lookup,
    programs::SkLookupContext,
};
use velocache_common::{
    Verdict, counter_index,
    steer::{FAMILY_V4, FAMILY_V6, STEERED_TTL_NS, SteerKey},
};

use crate::maps::{COUNTERS, LISTENERS, STEERED};

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

#[sk_lookup]
pub fn velocache_sk_lookup(ctx: SkLookupContext) -> u32 {
    match try_lookup(&ctx) {
        Some(Verdict::LookupDropped) => SK_DROP,
        _ => SK_PASS,
    }
}

/// `None`: not a steered tuple. `Some`: what was done (and counted).
#[inline(always)]
fn try_lookup(ctx: &SkLookupContext) -> Option<Verdict> {
    let l = ctx.lookup;
    // Every field is read once, up front, each with its own constant offset from the context:
    // the verifier refuses a load through a context pointer the compiler moved (as merging the
    // IPv4 and IPv6 paths would).
    // SAFETY: the context pointer is valid for the program's run; the verifier checks each
    // field access.
    let (family, protocol, remote_port_be, local_port) = unsafe {
        (
            read_volatile(&(*l).family),
            read_volatile(&(*l).protocol),
            read_volatile(&(*l).remote_port),
            read_volatile(&(*l).local_port),
        )
    };
    let mut key = SteerKey {
        proto: protocol as u8,
        remote_port_be,
        local_port_be: (local_port as u16).to_be(),
        ..SteerKey::default()
    };
    match family {
        AF_INET => {
            key.family = FAMILY_V4;
            // SAFETY: as above.
            let (remote, local) = unsafe {
                (
                    read_volatile(&(*l).remote_ip4),
                    read_volatile(&(*l).local_ip4),
                )
            };
            key.remote[..4].copy_from_slice(&remote.to_ne_bytes());
            key.local[..4].copy_from_slice(&local.to_ne_bytes());
        }
        AF_INET6 => {
            key.family = FAMILY_V6;
            // SAFETY: as above.
            let (remote, local) = unsafe {
                (
                    [
                        read_volatile(&(*l).remote_ip6[0]),
                        read_volatile(&(*l).remote_ip6[1]),
                        read_volatile(&(*l).remote_ip6[2]),
                        read_volatile(&(*l).remote_ip6[3]),
                    ],
                    [
                        read_volatile(&(*l).local_ip6[0]),
                        read_volatile(&(*l).local_ip6[1]),
                        read_volatile(&(*l).local_ip6[2]),
                        read_volatile(&(*l).local_ip6[3]),
                    ],
                )
            };
            key.remote = bytes16(remote);
            key.local = bytes16(local);
        }
        _ => return None,
    }
    // SAFETY: a map lookup result stays valid for the program's run (RCU); copied out at once.
    let value = unsafe { *STEERED.get(key)? };
    // SAFETY: a helper without arguments.
    if unsafe { bpf_ktime_get_ns() }.wrapping_sub(value.stamp_ns) >= STEERED_TTL_NS {
        return None;
    }
    let verdict = match LISTENERS.redirect_sk_lookup(ctx, value.slot, 0) {
        Ok(()) => Verdict::LookupAssigned,
        Err(_) => Verdict::LookupDropped,
    };
    // Slots are laid out four per service (`listener_slot`).
    count(value.slot / 4, verdict);
    Some(verdict)
}

/// Four network-order words as the 16 bytes of an address.
#[inline(always)]
fn bytes16(w: [u32; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&w[0].to_ne_bytes());
    out[4..8].copy_from_slice(&w[1].to_ne_bytes());
    out[8..12].copy_from_slice(&w[2].to_ne_bytes());
    out[12..].copy_from_slice(&w[3].to_ne_bytes());
    out
}

#[inline(always)]
fn count(service: u32, verdict: Verdict) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter_index(service, verdict)) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *slot += 1 };
    }
}
