//! Types of TLS observation (the classifier's ClientHello reader, the LAN egress counter) and of
//! the kernel relay (`velocache-relay`, an `sk_skb` program on a SOCKHASH).
//!
//! # Observation
//! A new TLS flow whose destination no rule could act on is not steered: the classifier creates
//! one [`ObservedFlow`] in the LRU map `TLS_FLOWS` at its SYN, keyed by the client → server
//! 5-tuple ([`TlsFlowKey`]), counts its packets there in both directions (LAN ingress: up, LAN
//! egress: down), reads its ClientHello as it passes and reports what it found ([`TlsEvent`])
//! and the flow's end ([`TlsEventHead`]) through the `TLS_EVENTS` ring buffer. Which
//! destinations *are* steered comes from the daemon: addresses learned from DNS answers
//! (`TLS_STEER_V4`/`_V6`, with an expiry in [`SteerEntry`]) and operator prefixes
//! (`TLS_STEER_PREFIX_V4`/`_V6`).
//!
//! `deny` rules are enforced on the ClientHello in the kernel: `TLS_SNI_POLICY` maps a
//! [`SniKey`] — the hash of a whole name (exact patterns) or of a suffix starting at a dot
//! (`*.example.org` → `.example.org`) — to the first rule of the rules file that names it
//! ([`SniPolicy`]). The kernel looks up the whole SNI and each of its dot suffixes (bounded:
//! one pass over at most [`SNI_MAX`] bytes) and obeys the entry with the lowest rule index, which
//! is what first-match evaluation of the rules file gives. [`sni_hash_step`] is the one hash
//! both sides use.
//!
//! # Kernel relay
//! Two connected sockets the daemon decided to splice are put into `RELAY_SOCKS` (SOCKHASH keyed
//! by socket cookie) with each other's cookie in `RELAY_PEERS`; the stream verdict program
//! redirects every byte received on one to the other and counts them in `RELAY_BYTES`.
//!
//! Addresses are 16 bytes in network byte order (IPv4 in the first four, the rest zero) and
//! ports are in network byte order, as on the wire, so the kernel builds keys without
//! conversions.

/// Name of the LAN egress program (counts the server → client direction of observed flows).
pub const EGRESS_PROGRAM: &str = "velocache_lan_egress";
/// Name of the ClientHello reader the classifier tail-calls (through `TLS_PROGS[0]`).
pub const HELLO_PROGRAM: &str = "velocache_tls_hello";
/// Name of the stream verdict program in the `velocache-relay` object.
pub const RELAY_PROGRAM: &str = "velocache_relay";

/// Size of the observed-flow LRU map (concurrent TLS flows forwarded by the kernel).
pub const MAX_OBSERVED_FLOWS: u32 = 65_536;
/// Size of each learned-destination map (IPv4, IPv6).
pub const MAX_STEERED_ADDRS: u32 = 65_536;
/// Size of each operator prefix trie (`[tls] steer_prefixes`).
pub const MAX_STEER_PREFIXES: u32 = 1_024;
/// Size of the SNI policy map (host patterns of TLS-relevant rules).
pub const MAX_SNI_POLICIES: u32 = 16_384;
/// Size of the relay's socket map (two sockets per relayed connection).
pub const MAX_RELAYED_SOCKETS: u32 = 65_536;

/// Longest SNI host name read (RFC 6066: a DNS name, at most 255 bytes).
pub const SNI_MAX: usize = 255;
/// ALPN protocol list bytes kept (wire format: length-prefixed names); longer lists are cut.
pub const ALPN_MAX: usize = 64;

/// [`TlsFlowKey::family`] for IPv4.
pub const FAMILY_V4: u32 = 4;
/// [`TlsFlowKey::family`] for IPv6.
pub const FAMILY_V6: u32 = 6;

/// [`ObservedFlow::up_flags`] / [`ObservedFlow::down_flags`]: a FIN went that way.
pub const DIR_FIN: u32 = 1;
/// A RST went that way.
pub const DIR_RST: u32 = 2;
/// [`ObservedFlow::up_flags`]: the SNI is denied; every later client packet is answered with a
/// reset by the gateway's stack.
pub const UP_DENIED: u32 = 4;
/// [`ObservedFlow::up_flags`]: the classifier has sent this flow's end event.
pub const UP_END_SENT: u32 = 8;
/// [`ObservedFlow::down_flags`]: the egress program has sent this flow's end event.
pub const DOWN_END_SENT: u32 = 8;

/// [`ObservedFlow::hello_state`]: waiting for the ClientHello's first segment.
pub const HELLO_AWAIT: u32 = 0;
/// The ClientHello continues: the next extension header is at `hello_pos` in a later segment.
pub const HELLO_CONTINUE: u32 = 1;
/// Nothing more to read.
pub const HELLO_DONE: u32 = 2;

/// A [`TlsEvent`] describing (part of) a ClientHello.
pub const EVENT_HELLO: u32 = 1;
/// A [`TlsEvent`] saying an observed flow ended (FIN both ways, or a RST).
pub const EVENT_END: u32 = 2;

/// [`TlsEvent::status`] of a hello event: a ClientHello read whole from one segment.
pub const HELLO_PARSED: u32 = 1;
/// The ClientHello spanned segments and was read whole (the walk resumed in later segments).
pub const HELLO_SPLIT: u32 = 2;
/// The ClientHello spans segments and continues beyond this one: more events may follow.
pub const HELLO_PENDING: u32 = 3;
/// The ClientHello spanned segments and a field straddled a boundary (or a segment came out of
/// order): reading stopped; what this event carries is all there will be.
pub const HELLO_SPLIT_PARTIAL: u32 = 4;
/// The first bytes are not a TLS handshake record carrying a ClientHello.
pub const HELLO_NOT_TLS: u32 = 5;
/// Lengths inside the ClientHello contradict each other.
pub const HELLO_MALFORMED: u32 = 6;
/// A shape the bounded reader does not follow (a hello spread over several TLS records, more
/// extensions than the bound): nothing guessed.
pub const HELLO_UNSUPPORTED: u32 = 7;

/// [`TlsEvent::status`] of an end event: FIN in both directions.
pub const END_FIN: u32 = 1;
/// A RST in either direction.
pub const END_RST: u32 = 2;
/// The client opened a new connection on the same tuple (a SYN with another sequence number).
pub const END_REUSED: u32 = 3;

/// [`SniPolicy::action`]: the rule lets the connection through (passthrough, or a rule that would
/// decrypt if the flow were steered).
pub const SNI_PASS: u32 = 0;
/// The rule denies the host: the kernel resets the connection.
pub const SNI_DENY: u32 = 1;
/// The rule's host glob is more than an exact name or a `*.suffix`: the kernel cannot decide,
/// the daemon evaluates the real rules from the hello event and, for a deny, resets the flow.
pub const SNI_PUNT: u32 = 2;
/// [`TlsEvent::policy_rule`] when no policy entry matched.
pub const NO_RULE: u32 = u32::MAX;

/// FNV-1a 64 offset basis: the hash of the empty suffix.
pub const SNI_HASH_SEED: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// One step of the SNI hash: names are hashed **from their last byte backwards**, ASCII letters
/// lower-cased, so that the hash of every dot suffix falls out of one pass over the name.
#[inline(always)]
pub const fn sni_hash_step(hash: u64, byte: u8) -> u64 {
    let b = if byte >= b'A' && byte <= b'Z' {
        byte + 32
    } else {
        byte
    };
    (hash ^ b as u64).wrapping_mul(FNV_PRIME)
}

/// The [`SniKey`] of a whole string (a host name, or a suffix starting with `.`).
pub fn sni_key(text: &[u8]) -> SniKey {
    let mut hash = SNI_HASH_SEED;
    let mut i = text.len();
    while i > 0 {
        i -= 1;
        hash = sni_hash_step(hash, text[i]);
    }
    SniKey {
        hash,
        len: text.len() as u32,
        _pad: 0,
    }
}

/// Key of `TLS_FLOWS`: a TCP flow in its client → server direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TlsFlowKey {
    /// Client address, network order; IPv4 in `client[..4]`.
    pub client: [u8; 16],
    /// Server (original destination) address, network order.
    pub server: [u8; 16],
    /// Client port, network order.
    pub client_port_be: u16,
    /// Server port, network order.
    pub server_port_be: u16,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u32,
}

/// Value of `TLS_FLOWS`: one observed flow. Counters are added atomically (both directions may
/// run on different CPUs); each flag word is written by one program only.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ObservedFlow {
    /// TCP payload bytes client → server.
    pub bytes_up: u64,
    /// TCP payload bytes server → client.
    pub bytes_down: u64,
    /// Packets (segments) client → server.
    pub packets_up: u64,
    /// Packets (segments) server → client.
    pub packets_down: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the SYN.
    pub started_ns: u64,
    /// `bpf_ktime_get_ns()` of the last packet either way.
    pub last_ns: u64,
    /// The SYN's sequence number: a SYN with another one is a new connection on a reused tuple.
    pub syn_seq: u32,
    /// `DIR_*`, `UP_*` bits; written by the LAN ingress classifier only.
    pub up_flags: u32,
    /// `DIR_*`, `DOWN_*` bits; written by the LAN egress program only.
    pub down_flags: u32,
    /// `HELLO_AWAIT`, `HELLO_CONTINUE` or `HELLO_DONE`.
    pub hello_state: u32,
    /// With `HELLO_CONTINUE`: offset of the next extension header from the record's start.
    pub hello_pos: u32,
    /// With `HELLO_CONTINUE`: offset of the end of the extensions from the record's start.
    pub hello_ext_end: u32,
}

/// The start of every record of the `TLS_EVENTS` ring buffer, and the whole of an end event.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TlsEventHead {
    /// [`EVENT_HELLO`] or [`EVENT_END`].
    pub kind: u32,
    /// `HELLO_*` for a hello event, `END_*` for an end event.
    pub status: u32,
    /// The flow.
    pub key: TlsFlowKey,
    /// The flow's entry when the event was sent.
    pub flow: ObservedFlow,
}

/// A hello event: what one segment of a ClientHello said.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsEvent {
    /// Kind, status, flow.
    pub head: TlsEventHead,
    /// The position of the rule the kernel's SNI policy matched, or [`NO_RULE`].
    pub policy_rule: u32,
    /// That rule's `SNI_*` action (`SNI_PASS` when none matched).
    pub policy_action: u32,
    /// Bytes of `sni` used (0: no SNI in this segment).
    pub sni_len: u32,
    /// Bytes of `alpn` used (0: no ALPN in this segment).
    pub alpn_len: u32,
    /// The server name as sent (not lower-cased), **right-aligned**: its `sni_len` bytes end at
    /// the array's last byte (the kernel's backwards pass over it then reads fixed offsets).
    pub sni: [u8; SNI_MAX + 1],
    /// The ALPN protocol list in wire format (one length byte before each name), cut at
    /// [`ALPN_MAX`] - 1 bytes.
    pub alpn: [u8; ALPN_MAX],
}

/// Key of `TLS_SNI_POLICY`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SniKey {
    /// [`sni_hash_step`] over the text, last byte first.
    pub hash: u64,
    /// Length of the text (a second check against hash collisions).
    pub len: u32,
    /// Always zero.
    pub _pad: u32,
}

/// Value of `TLS_SNI_POLICY`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SniPolicy {
    /// Position of the rule in the rules file (lower wins, as first-match evaluation does).
    pub rule: u32,
    /// `SNI_PASS`, `SNI_DENY` or `SNI_PUNT`.
    pub action: u32,
}

/// Value of `TLS_STEER_V4` / `TLS_STEER_V6` (keyed by the address, network order).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SteerEntry {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) after which the address is no longer steered.
    pub expires_ns: u64,
}

/// The single entry of the `TLS_OBSERVE` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ObserveConfig {
    /// Non-zero: TLS flows to destinations that are not steered are forwarded by the kernel and
    /// observed. Zero (an object nobody configured): every TLS flow is steered, as before.
    pub enabled: u32,
    /// Always zero.
    pub _reserved: u32,
}

const _: () = assert!(core::mem::size_of::<TlsFlowKey>() == 40);
const _: () = assert!(core::mem::size_of::<ObservedFlow>() == 72);
const _: () = assert!(core::mem::size_of::<TlsEventHead>() == 8 + 40 + 72);
const _: () = assert!(core::mem::size_of::<TlsEvent>() == 120 + 16 + 256 + 64);
const _: () = assert!(core::mem::size_of::<SniKey>() == 16);
const _: () = assert!(core::mem::size_of::<SniPolicy>() == 8);
const _: () = assert!(core::mem::size_of::<SteerEntry>() == 8);
const _: () = assert!(core::mem::size_of::<ObserveConfig>() == 8);

#[cfg(feature = "user")]
mod user {
    // SAFETY (for all impls below): `#[repr(C)]`, only integer fields and integer arrays, no
    // implicit padding (checked by the size assertions above), so every bit pattern is valid.
    unsafe impl aya::Pod for super::TlsFlowKey {}
    unsafe impl aya::Pod for super::ObservedFlow {}
    unsafe impl aya::Pod for super::SniKey {}
    unsafe impl aya::Pod for super::SniPolicy {}
    unsafe impl aya::Pod for super::SteerEntry {}
    unsafe impl aya::Pod for super::ObserveConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_backwards_pass_hashes_every_dot_suffix() {
        // What the kernel does: walk the name from its end, look up at every dot.
        let name = b"Www.Example.ORG";
        let mut hash = SNI_HASH_SEED;
        let mut at_dots = [SniKey::default(); 2];
        let mut dots = 0;
        for (k, &b) in name.iter().rev().enumerate() {
            hash = sni_hash_step(hash, b);
            if b == b'.' {
                at_dots[dots] = SniKey {
                    hash,
                    len: k as u32 + 1,
                    _pad: 0,
                };
                dots += 1;
            }
        }
        assert_eq!(at_dots[0], sni_key(b".org"));
        assert_eq!(at_dots[1], sni_key(b".example.org"));
        assert_eq!(
            SniKey {
                hash,
                len: name.len() as u32,
                _pad: 0
            },
            sni_key(b"www.example.org"),
            "case-insensitive"
        );
        assert_eq!(sni_key(b"").hash, SNI_HASH_SEED);
        assert_ne!(sni_key(b"example.org"), sni_key(b".example.org"));
    }
}
