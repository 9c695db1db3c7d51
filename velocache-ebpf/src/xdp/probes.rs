//! A test-only object, `velocache-xdp-probes`: the dispatcher and the RTP program exactly as the
//! `velocache-xdp` object builds them (the same source files), plus one probe program per slot
//! number, which the daemon's unit tests (`datapath/xdp/tests.rs`) put in the slots to watch a
//! frame's way through the dispatcher with `BPF_PROG_TEST_RUN`. The daemon never loads it.
//!
//! A probe appends its slot number to `PROBE_TRACE` (entry 0 counts, entries 1.. are the slots
//! in the order they ran), then returns what `PROBE_ACTIONS` holds for its slot: 0 hands the
//! frame on with the dispatcher's `hand_on`, as a slot program that passes does; `action + 1`
//! returns `action`, as one that keeps the frame does.
#![no_std]
#![no_main]

mod dispatch;
mod rtp;

use aya_ebpf::{
    macros::{map, xdp},
    maps::Array,
    programs::XdpContext,
};
use velocache_common::xdp::XDP_SLOT_COUNT;

const TRACE_LEN: u32 = 16;

/// Entry 0: how many probes ran; entries 1..: their slots, in order.
#[map]
static PROBE_TRACE: Array<u32> = Array::with_max_entries(TRACE_LEN, 0);

/// Per slot: 0 hands the frame on; `action + 1` returns `action`.
#[map]
static PROBE_ACTIONS: Array<u32> = Array::with_max_entries(XDP_SLOT_COUNT, 0);

#[inline(always)]
fn probe(ctx: &XdpContext, slot: u32) -> u32 {
    if let Some(count) = PROBE_TRACE.get_ptr_mut(0) {
        // SAFETY: a valid value pointer for this run; test runs are single-threaded.
        let n = unsafe { *count };
        if n + 1 < TRACE_LEN
            && let Some(entry) = PROBE_TRACE.get_ptr_mut(n + 1)
        {
            // SAFETY: as above.
            unsafe {
                *entry = slot;
                *count = n + 1;
            }
        }
    }
    match PROBE_ACTIONS.get(slot) {
        Some(&action) if action != 0 => action - 1,
        _ => dispatch::hand_on(ctx, slot + 1),
    }
}

macro_rules! probes {
    ($($name:ident = $slot:literal),* $(,)?) => {
        $(
            #[xdp]
            pub fn $name(ctx: XdpContext) -> u32 {
                probe(&ctx, $slot)
            }
        )*
    };
}

probes!(
    velocache_probe0 = 0,
    velocache_probe1 = 1,
    velocache_probe2 = 2,
    velocache_probe3 = 3,
    velocache_probe4 = 4,
    velocache_probe5 = 5,
    velocache_probe6 = 6,
    velocache_probe7 = 7,
);

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier proves every program terminates; a panic cannot be reached from verified code.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
