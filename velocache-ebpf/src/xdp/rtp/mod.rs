//! The RTP fast path: slot [`XdpSlot::Rtp`] of the XDP dispatcher, on the interfaces media
//! crosses.
//!
//! The daemon learns media flows from SIP/SDP and writes them into `RTP_FLOWS` (keyed by the
//! UDP 5-tuple). For a packet of a learned flow the program updates the flow's counters and
//! RTP quality state, asks the kernel's FIB where the packet goes (`bpf_fib_lookup`), rewrites
//! the Ethernet header (and, for anchored media, the addresses, ports and checksums) and
//! redirects the frame out of the egress interface itself, bypassing the stack. Anything not
//! learned, not IPv4/UDP, or not forwardable right now (no neighbour entry yet, TTL expiring,
//! too big) leaves unmodified through the dispatcher's `next()`: the next enabled slot, else the
//! stack.
//!
//! A flow whose call is being captured (`FLOW_CAPTURE`) also has each frame copied, as it
//! arrived, into the `RTP_CAPTURE` ring buffer before anything else happens to it.
//!
//! # Layout
//! - `maps`: the maps the daemon fills and reads.
//! - `capture`: the copy of a captured flow's frame into `RTP_CAPTURE`.
//! - `packet`: bounds-checked access to the frame and the IPv4/UDP/RTP parse.
//! - `forward`: the program: look up, account, route, rewrite, redirect.
//!
//! The RTP arithmetic (RFC 3550 sequence and jitter tracking) and the checksum updates live in
//! `velocache_common::rtp`, where host unit tests exercise the same code the kernel runs.
//!
//! [`XdpSlot::Rtp`]: velocache_common::xdp::XdpSlot::Rtp

mod capture;
mod forward;
mod maps;
pub(crate) mod packet;
