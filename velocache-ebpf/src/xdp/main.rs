//! VeloCache's XDP object: the dispatcher and the programs in its slots.
//!
//! The daemon attaches only the dispatcher (`velocache_xdp`) to an interface. Frames enter
//! there and visit the slot programs enabled on that interface in slot order
//! (`velocache_common::xdp`); the first that keeps a frame (redirect, `XDP_TX`, drop) ends the
//! chain, and a frame no slot keeps goes to the stack unmodified. All programs share one object
//! so that they share the dispatcher's two maps without pinning them: those die with the daemon.
//!
//! # Layout
//! - `dispatch`: the dispatcher, its maps (`XDP_SLOTS`, `XDP_INTERFACES`) and `next()`.
//! - `rtp`: slot `Rtp`, the RTP fast path (its `packet` module is shared: frame access).
//! - `dns`: slot `Dns`, DNS answers from the kernel's copy of the daemon's hottest entries.
#![no_std]
#![no_main]
// The DNS slot's per-entry hit counter needs an atomic add, which `AtomicU64` lacks on the BPF
// target (the object is built with nightly anyway: `-Z build-std`).
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod dispatch;
mod dns;
mod rtp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier proves every program terminates; a panic cannot be reached from verified code.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
