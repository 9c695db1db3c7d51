//! VeloCache's RTP fast path: an XDP program on the interfaces media crosses.
//!
//! The daemon learns media flows from SIP/SDP and writes them into `RTP_FLOWS` (keyed by the
//! UDP 5-tuple). For a packet of a learned flow the program updates the flow's counters and
//! RTP quality state, asks the kernel's FIB where the packet goes (`bpf_fib_lookup`), rewrites
//! the Ethernet header (and, for anchored media, the addresses, ports and checksums) and
//! redirects the frame out of the egress interface itself, bypassing the stack. Anything not
//! learned, not IPv4/UDP, or not forwardable right now (no neighbour entry yet, TTL expiring,
//! too big) is passed to the stack unmodified.
//!
//! # Layout
//! - `maps`: the three maps the daemon fills and reads.
//! - `packet`: bounds-checked access to the frame and the IPv4/UDP/RTP parse.
//! - `forward`: the program: look up, account, route, rewrite, redirect.
//!
//! The RTP arithmetic (RFC 3550 sequence and jitter tracking) and the checksum updates live in
//! `velocache_common::rtp`, where host unit tests exercise the same code the kernel runs.
#![no_std]
#![no_main]

mod forward;
mod maps;
mod packet;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier proves every program terminates; a panic cannot be reached from verified code.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
