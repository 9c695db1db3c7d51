//! VeloCache's kernel relay: joins two TCP sockets the daemon decided to splice, so the bytes
//! of a spliced connection never reach userspace.
//!
//! The daemon puts both sockets of a relayed connection into `RELAY_SOCKS` (a SOCKHASH keyed by
//! socket cookie) and then each one's peer cookie into `RELAY_PEERS`. This stream verdict
//! program runs for every chunk received on a socket of that map: it counts the bytes under the
//! receiving socket's cookie in `RELAY_BYTES` and redirects them to the peer's send queue
//! (`bpf_sk_redirect_hash`). A socket without a peer entry keeps its bytes (`SK_PASS`): they
//! stay readable by the daemon, which is how a relay starts and ends safely. End of stream is
//! not something a verdict sees: the daemon watches for it and passes the half-close on.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext,
    bindings::sk_action::SK_PASS,
    helpers::generated::bpf_get_socket_cookie,
    macros::{map, stream_verdict},
    maps::{HashMap, SockHash},
    programs::SkBuffContext,
};
use velocache_common::tls::MAX_RELAYED_SOCKETS;

/// The relayed sockets, by socket cookie.
#[map]
static RELAY_SOCKS: SockHash<u64> = SockHash::with_max_entries(MAX_RELAYED_SOCKETS, 0);

/// Socket cookie → the cookie of the socket its bytes go to.
#[map]
static RELAY_PEERS: HashMap<u64, u64> = HashMap::with_max_entries(MAX_RELAYED_SOCKETS, 0);

/// Socket cookie → bytes received on it and redirected. Only the receiving socket's verdict
/// writes its entry, and a socket's receive path runs on one CPU at a time.
#[map]
static RELAY_BYTES: HashMap<u64, u64> = HashMap::with_max_entries(MAX_RELAYED_SOCKETS, 0);

#[stream_verdict]
pub fn velocache_relay(ctx: SkBuffContext) -> u32 {
    // SAFETY: the helper reads the socket the skb belongs to (the receiving one).
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: map values are valid for this run and copied out at once.
    let Some(&peer) = (unsafe { RELAY_PEERS.get(cookie) }) else {
        return SK_PASS;
    };
    if let Some(n) = RELAY_BYTES.get_ptr_mut(cookie) {
        // SAFETY: see `RELAY_BYTES`: one writer at a time.
        unsafe { *n += u64::from(ctx.len()) };
    }
    // SK_PASS once queued on the peer, SK_DROP if the peer is gone (the relay is ending).
    RELAY_SOCKS.redirect_skb(&ctx, peer, 0) as u32
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier proves every program terminates; a panic cannot be reached from verified code.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
