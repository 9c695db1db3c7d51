//! VeloCache kernel programs.
//!
//! # Layout
//! - `maps`: every map, declared once; their key/value types come from `velocache-common`.
//! - `parse`: bounds-checked header access (`ptr_at`) and the L3/L4 parse of one frame,
//!   fragments included.
//! - `ingress`: the LAN ingress classifier — decides per packet whether it belongs to a service
//!   the daemon handles and, if a daemon socket exists for it, assigns the packet to that socket.
//! - `sockets`: the classifier's socket lookups and the assign-and-mark step.
//! - `fragments`: later fragments follow the decision taken for their first fragment.
//! - `lookup`: the `sk_lookup` program, which answers the kernel's own listener lookups for the
//!   tuples the classifier steered (a reused port, a reassembled datagram).
//! - `observe`: TLS flows no rule could act on — forwarded, counted both ways (its LAN egress
//!   program), their ClientHello read and reported, `deny` rules enforced by SNI.
//!
//! The programs hold no policy: which ports, which bypassed prefixes and which mark are all in
//! maps the daemon fills. When no daemon socket exists the packet is passed untouched, which is
//! what makes VeloCache fail open.
#![no_std]
#![no_main]
// The atomic add of counters two programs share (`observe`); the kernel crate builds on nightly.
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "core::intrinsics::atomic_xadd, see `observe::add`"
)]

mod fragments;
mod ingress;
mod lookup;
mod maps;
mod observe;
mod parse;
mod sockets;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier proves every program terminates; a panic cannot be reached from verified code.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
