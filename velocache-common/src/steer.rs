//! Types of the steering state the kernel keeps for the moments when the kernel's own socket
//! lookup, not the classifier, has the last word.
//!
//! Two cases need it:
//! - **A SYN that reuses a tuple a closing daemon socket still holds** (TIME_WAIT or an orphaned
//!   FIN_WAIT2, both a timewait minisocket). The classifier hands the SYN to that socket; the
//!   kernel then looks for a *listener* on the original destination (`tcp_v4_rcv`'s
//!   `TCP_TW_SYN` path), which only the `sk_lookup` program can answer with the daemon's.
//! - **A fragmented datagram** is reassembled after the classifier ran, and reassembly drops the
//!   socket the classifier assigned; the datagram then goes through the ordinary UDP lookup,
//!   which also asks the `sk_lookup` program.
//!
//! So the classifier writes the tuple it steered into `STEERED` ([`SteerKey`] →
//! [`SteerValue`]) and the `sk_lookup` program answers lookups for exactly those tuples with the
//! daemon socket in the `LISTENERS` sockmap slot the value names ([`listener_slot`]) — never for
//! anything else, so the gateway's own services are untouched.
//!
//! Fragments: the classifier remembers, per datagram ([`FragKey`]: addresses, IP ID, protocol),
//! what it did with the first fragment ([`FragValue`]), so later fragments (which carry no ports)
//! follow it.
//!
//! Addresses are 16 bytes in network byte order (IPv4 in the first four, the rest zero), ports in
//! network byte order, as on the wire.

pub use crate::rtp::{FAMILY_V4, FAMILY_V6};
use crate::{IPPROTO_UDP, SERVICE_COUNT};

/// Name of the `sk_lookup` program in the object file.
pub const SK_LOOKUP_PROGRAM: &str = "velocache_sk_lookup";

/// Slots in the `LISTENERS` sockmap: per service, TCP/UDP × IPv4/IPv6.
pub const LISTENER_SLOTS: u32 = SERVICE_COUNT * 4;

/// The `LISTENERS` slot of `service`'s socket for `proto` and family (`v6`).
pub const fn listener_slot(service: u32, proto: u8, v6: bool) -> u32 {
    service * 4 + if proto == IPPROTO_UDP { 2 } else { 0 } + if v6 { 1 } else { 0 }
}

/// How long a `STEERED` entry answers lookups. A SYN reaches the kernel's lookup microseconds
/// after the classifier saw it; a fragmented datagram is complete within the reassembly timeout
/// (`net.ipv4.ipfrag_time`, 30 s by default). Older entries are ignored.
pub const STEERED_TTL_NS: u64 = 30_000_000_000;

/// Key of the `STEERED` LRU hash: one connection or datagram flow, seen from the gateway's
/// sockets (remote = the client, local = the original destination).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SteerKey {
    /// The client's address.
    pub remote: [u8; 16],
    /// The original destination's address.
    pub local: [u8; 16],
    /// The client's port, network order.
    pub remote_port_be: u16,
    /// The original destination's port, network order.
    pub local_port_be: u16,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// IP protocol (TCP or UDP).
    pub proto: u8,
    /// Always zero.
    pub _pad: [u8; 2],
}

/// Value of the `STEERED` LRU hash.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SteerValue {
    /// The `LISTENERS` slot whose socket takes the flow ([`listener_slot`]).
    pub slot: u32,
    /// Always zero.
    pub _pad: u32,
    /// `bpf_ktime_get_ns()` when the classifier wrote the entry.
    pub stamp_ns: u64,
}

/// Key of the `FRAGMENTS` LRU hash: one IP datagram in flight (RFC 791 / RFC 8200 identify a
/// datagram's fragments by source, destination, protocol and identification).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FragKey {
    /// Source address.
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    /// Identification: IPv4's 16-bit ID or IPv6's 32-bit fragment header ID, as on the wire.
    pub id: u32,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// The transport protocol the fragments carry.
    pub proto: u8,
    /// Always zero.
    pub _pad: [u8; 2],
}

/// [`FragValue::decision`]: the first fragment was steered; later ones follow it.
pub const FRAG_STEERED: u32 = 1;
/// [`FragValue::decision`]: later fragments went past before the first one; the whole datagram
/// is forwarded.
pub const FRAG_FORWARDED: u32 = 2;

/// Value of the `FRAGMENTS` LRU hash: what was done with the datagram, and the ports its first
/// fragment carried (later fragments have none).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FragValue {
    /// [`FRAG_STEERED`] or [`FRAG_FORWARDED`].
    pub decision: u32,
    /// The [`crate::Service`] number the first fragment was steered to.
    pub service: u32,
    /// The source port, network order.
    pub sport_be: u16,
    /// The destination port, network order.
    pub dport_be: u16,
    /// The service's listener port, host order.
    pub listen_port: u32,
    /// `bpf_ktime_get_ns()` when the entry was written; entries older than
    /// [`STEERED_TTL_NS`] (the reassembly timeout) are stale (IP IDs wrap) and ignored.
    pub stamp_ns: u64,
}

const _: () = assert!(core::mem::size_of::<SteerKey>() == 40);
const _: () = assert!(core::mem::size_of::<SteerValue>() == 16);
const _: () = assert!(core::mem::size_of::<FragKey>() == 40);
const _: () = assert!(core::mem::size_of::<FragValue>() == 24);

#[cfg(feature = "user")]
mod user {
    // SAFETY (for all impls below): `#[repr(C)]`, only integer fields and arrays of them, no
    // implicit padding (checked by the size assertions above).
    unsafe impl aya::Pod for super::SteerKey {}
    unsafe impl aya::Pod for super::SteerValue {}
    unsafe impl aya::Pod for super::FragKey {}
    unsafe impl aya::Pod for super::FragValue {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{IPPROTO_TCP, Service};

    #[test]
    fn listener_slots_are_dense_and_unique() {
        let mut seen = [false; LISTENER_SLOTS as usize];
        for s in Service::ALL {
            for proto in [IPPROTO_TCP, IPPROTO_UDP] {
                for v6 in [false, true] {
                    let i = listener_slot(s as u32, proto, v6) as usize;
                    assert!(!seen[i], "slot {i} used twice");
                    seen[i] = true;
                }
            }
        }
        assert!(seen.iter().all(|s| *s));
    }
}
