//! The dispatcher: the one XDP program the daemon attaches to an interface, and [`next`], which
//! every slot program calls where it would pass a frame.
//!
//! A frame enters at [`velocache_xdp`], which hands it to the first slot enabled on the frame's
//! interface (`XDP_INTERFACES`, a bit per slot) by a tail call into `XDP_SLOTS`. A slot program
//! that keeps the frame (redirect, `XDP_TX`, drop) returns its action and the chain ends there;
//! one that would pass calls [`next`] instead, which tail-calls the next enabled slot. A failed
//! tail call means the slot is empty (not loaded), so the search goes on; when no slot is left
//! the frame goes to the stack (`XDP_PASS`). Nothing here decides anything about a packet.
use aya_ebpf::{
    bindings::xdp_action::XDP_PASS,
    macros::{map, xdp},
    maps::{HashMap, ProgramArray},
    programs::XdpContext,
};
use velocache_common::xdp::{MAX_XDP_INTERFACES, XDP_SLOT_COUNT, XdpSlot};

/// Slot number → program. Filled by the daemon; never pinned, so it dies with the daemon.
#[map]
pub static XDP_SLOTS: ProgramArray = ProgramArray::with_max_entries(XDP_SLOT_COUNT, 0);

/// Interface index → mask of the slots enabled on that interface (bit `n`: slot `n`).
#[map]
pub static XDP_INTERFACES: HashMap<u32, u32> = HashMap::with_max_entries(MAX_XDP_INTERFACES, 0);

#[xdp]
pub fn velocache_xdp(ctx: XdpContext) -> u32 {
    hand_on(&ctx, 0)
}

/// Hand the frame to the first slot after `slot` enabled on its interface; `XDP_PASS` when none
/// is left. Returns only if no tail call happened.
#[inline(always)]
pub fn next(ctx: &XdpContext, slot: XdpSlot) -> u32 {
    hand_on(ctx, slot as u32 + 1)
}

/// Tail-call the first slot numbered `first` or higher enabled on the frame's interface;
/// `XDP_PASS` when there is none. ([`next`] for programs without an [`XdpSlot`] of their own: the
/// test object's probes.)
#[inline(always)]
pub fn hand_on(ctx: &XdpContext, first: u32) -> u32 {
    let ifindex = ctx.ingress_ifindex() as u32;
    // SAFETY: a plain `u32` value, copied out at once.
    let Some(mask) = (unsafe { XDP_INTERFACES.get(ifindex) }).copied() else {
        return XDP_PASS;
    };
    // A fixed bound the verifier sees; `first` is a constant at every (inlined) call site.
    for slot in first..XDP_SLOT_COUNT {
        if mask & (1 << slot) != 0 {
            // SAFETY: on success control never comes back; on failure (empty slot, tail-call
            // limit) it does, and the next slot is tried.
            unsafe { XDP_SLOTS.tail_call(ctx, slot) };
        }
    }
    XDP_PASS
}
