//! The `sk_lookup` program, attached to the gateway's network namespace: it answers the kernel's
//! listener lookups for the tuples the classifier left in `STEERED` — a SYN handed to a closing
//! daemon socket (`TCP_TW_SYN`), a datagram reassembled after the classifier ran — with the
//! daemon's socket from `LISTENERS`.
//!
//! Every other lookup (the gateway's own services, the classifier's own socket lookups) is left
//! alone (`SK_PASS` without assigning). A steered tuple whose daemon socket is gone is dropped
//! (`SK_DROP`) rather than handed to whatever else listens on that port on the gateway.
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
    // SAFETY: the context pointer is valid for the program's run; the verifier checks each
    // field access.
    let l = unsafe { &*ctx.lookup };
    let mut key = SteerKey {
        proto: l.protocol as u8,
        remote_port_be: l.remote_port,
        local_port_be: (l.local_port as u16).to_be(),
        ..SteerKey::default()
    };
    match l.family {
        AF_INET => {
            key.family = FAMILY_V4;
            key.remote[..4].copy_from_slice(&l.remote_ip4.to_ne_bytes());
            key.local[..4].copy_from_slice(&l.local_ip4.to_ne_bytes());
        }
        AF_INET6 => {
            key.family = FAMILY_V6;
            for i in 0..4 {
                key.remote[i * 4..i * 4 + 4].copy_from_slice(&l.remote_ip6[i].to_ne_bytes());
                key.local[i * 4..i * 4 + 4].copy_from_slice(&l.local_ip6[i].to_ne_bytes());
            }
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

#[inline(always)]
fn count(service: u32, verdict: Verdict) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter_index(service, verdict)) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *slot += 1 };
    }
}
