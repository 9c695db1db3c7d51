//! Types shared by VeloCache's kernel programs (`velocache-ebpf`) and its daemon.
//!
//! Every value that crosses the kernel/user boundary through a BPF map is declared here, once:
//! `#[repr(C)]`, `Copy`, explicitly padded so that no byte is left uninitialised (the verifier
//! and `aya::Pod` both require that), and checked by `const` size assertions so that a change on
//! one side cannot silently desynchronise the other. Flags are `u32`, never `bool`; nothing is an
//! `Option`.
//!
//! # Layout
//! - [`Service`]: the numbered services the classifier steers (HTTP, HTTPS, DNS, SIP, and the TCP
//!   ports plugins claim).
//! - [`PortKey`] → [`ServiceEntry`]: the `SERVICE_PORTS` map the daemon fills — which
//!   `(protocol, destination port)` belongs to which service and which local port its listener
//!   is bound to.
//! - [`Verdict`]: the one numbered list of classifier outcomes; the per-CPU `COUNTERS` array is
//!   indexed by `service * VERDICT_COUNT + verdict` (see [`counter_index`]).
//! - [`ClassifierConfig`]: the single-entry `CONFIG` array (mark, switches).
//! - [`steer`]: what the classifier leaves for the kernel's own socket lookup (tuples handed
//!   to the `sk_lookup` program, the daemon's sockets by slot) and the per-datagram fragment
//!   decisions.
//! - [`dns`]: DNS answers the XDP program sends from the kernel (key, answer, flag arithmetic).
//! - [`rtp`]: the RTP fast path's flow keys, actions, counters and RTP quality state.
//! - [`tls`]: TLS observation without steering (flows, ClientHello events, SNI policy, steered
//!   destinations) and the kernel relay of spliced connections.
//! - [`xdp`]: the XDP dispatcher's numbered slots (one per program an interface can chain).
#![no_std]
#![deny(missing_docs)]

pub mod dns;
pub mod rtp;
pub mod steer;
pub mod tls;
pub mod xdp;

/// IP protocol number of TCP, as it appears in [`PortKey::proto`].
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP, as it appears in [`PortKey::proto`].
pub const IPPROTO_UDP: u8 = 17;

/// Name of the TC ingress classifier program in the object file.
pub const CLASSIFIER_PROGRAM: &str = "velocache_lan_ingress";

/// The services the classifier can steer to the daemon. The value indexes the counter array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    /// Plain HTTP (TCP 80 by default).
    Http = 0,
    /// TLS, usually HTTPS (TCP 443 by default).
    Https = 1,
    /// DNS over UDP and TCP (53 by default).
    Dns = 2,
    /// SIP over UDP and TCP (5060 by default).
    Sip = 3,
    /// TCP ports a plugin claims (`ports = [...]` in its manifest): the plugin reads and writes
    /// the client's stream. The ports come from the plugins, not from a configured default.
    Plugin = 4,
}

/// Number of [`Service`] values; the counter array has `SERVICE_COUNT * VERDICT_COUNT` slots.
pub const SERVICE_COUNT: u32 = 5;

impl Service {
    /// Every service, in numeric order.
    pub const ALL: [Service; SERVICE_COUNT as usize] = [
        Service::Http,
        Service::Https,
        Service::Dns,
        Service::Sip,
        Service::Plugin,
    ];

    /// The service with this number, if any.
    pub const fn from_u32(v: u32) -> Option<Service> {
        match v {
            0 => Some(Service::Http),
            1 => Some(Service::Https),
            2 => Some(Service::Dns),
            3 => Some(Service::Sip),
            4 => Some(Service::Plugin),
            _ => None,
        }
    }

    /// Lower-case name used in logs, metrics and configuration.
    pub const fn name(self) -> &'static str {
        match self {
            Service::Http => "http",
            Service::Https => "https",
            Service::Dns => "dns",
            Service::Sip => "sip",
            Service::Plugin => "plugin",
        }
    }
}

/// What the classifier decided for one packet of a configured service port. Shared by both sides
/// so that a counter means the same thing in the kernel, in `velocache stats` and in metrics.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// Assigned to an established daemon socket (a later packet of an intercepted flow).
    SteeredEstablished = 0,
    /// Assigned to the daemon's listener (a new flow).
    SteeredListener = 1,
    /// No daemon socket found: passed to the stack untouched. This is the fail-open path.
    PassedNoListener = 2,
    /// Source address is in the client bypass list.
    BypassedClient = 3,
    /// Destination address is in the destination bypass list.
    BypassedDestination = 4,
    /// The gateway would not forward this packet: its destination is one of the gateway's own
    /// addresses (or broadcast, multicast, unroutable). Left to the gateway's own stack.
    GatewayLocal = 5,
    /// `bpf_sk_assign` refused the socket; packet passed untouched.
    AssignFailed = 6,
    /// Interception is switched off in [`ClassifierConfig`]; packet passed untouched.
    Disabled = 7,
    /// A SYN for a tuple that a closing daemon socket (TIME_WAIT or orphaned FIN_WAIT2) still
    /// holds, while the daemon has no listener for the service (it is stopping, or gone with
    /// the classifier left attached), and the later packets of that connection: passed
    /// untouched, so the connection runs directly to its destination.
    PassedTimeWait = 8,
    /// A packet of an intercepted connection whose daemon socket is closing (a TIME_WAIT or
    /// orphaned FIN_WAIT2 minisocket): delivered to it, so the client's FIN, ACK or RST complete
    /// the close as TCP intends instead of being forwarded to the origin.
    SteeredTimeWait = 9,
    /// A SYN that reuses a tuple a closing daemon socket still holds: handed to that socket,
    /// which makes way for the daemon's listener (found by the `sk_lookup` program), so the new
    /// connection is intercepted at once.
    SteeredReusedPort = 10,
    /// A later fragment of a datagram whose first fragment was steered: steered with it.
    SteeredFragment = 11,
    /// A first fragment that arrived after later fragments of its datagram had been forwarded:
    /// forwarded too, so the datagram stays whole (it is not intercepted).
    PassedFragmentsAhead = 12,
    /// Counted by the `sk_lookup` program: the kernel's listener lookup for a tuple the
    /// classifier steered (a reused port, a reassembled datagram) was answered with the daemon's
    /// socket.
    LookupAssigned = 13,
    /// Counted by the `sk_lookup` program: as [`Verdict::LookupAssigned`], but the daemon's socket
    /// was gone, so the packet was dropped rather than handed to a service of the gateway's own.
    LookupDropped = 14,
    /// TLS: the SYN of a flow no rule could act on; forwarded by the kernel and observed (its
    /// ClientHello read, its bytes counted), never steered.
    ObservedNew = 15,
    /// TLS: a later packet of an observed flow, forwarded by the kernel and counted.
    Observed = 16,
    /// TLS: a packet of an observed flow whose SNI a `deny` rule names: delivered to the
    /// gateway's own stack without a socket, which answers with a reset.
    DeniedSni = 17,
    /// TLS: a packet of a flow that is neither steered nor observed (it began before the daemon,
    /// or its entry was evicted): forwarded untouched. Never given to a listener.
    PassedUntracked = 18,
}

/// Number of [`Verdict`] values.
pub const VERDICT_COUNT: u32 = 19;

impl Verdict {
    /// Every verdict, in numeric order.
    pub const ALL: [Verdict; VERDICT_COUNT as usize] = [
        Verdict::SteeredEstablished,
        Verdict::SteeredListener,
        Verdict::PassedNoListener,
        Verdict::BypassedClient,
        Verdict::BypassedDestination,
        Verdict::GatewayLocal,
        Verdict::AssignFailed,
        Verdict::Disabled,
        Verdict::PassedTimeWait,
        Verdict::SteeredTimeWait,
        Verdict::SteeredReusedPort,
        Verdict::SteeredFragment,
        Verdict::PassedFragmentsAhead,
        Verdict::LookupAssigned,
        Verdict::LookupDropped,
        Verdict::ObservedNew,
        Verdict::Observed,
        Verdict::DeniedSni,
        Verdict::PassedUntracked,
    ];

    /// Lower-case name used in logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::SteeredEstablished => "steered_established",
            Verdict::SteeredListener => "steered_listener",
            Verdict::PassedNoListener => "passed_no_listener",
            Verdict::BypassedClient => "bypassed_client",
            Verdict::BypassedDestination => "bypassed_destination",
            Verdict::GatewayLocal => "gateway_local",
            Verdict::AssignFailed => "assign_failed",
            Verdict::Disabled => "disabled",
            Verdict::PassedTimeWait => "passed_time_wait",
            Verdict::SteeredTimeWait => "steered_time_wait",
            Verdict::SteeredReusedPort => "steered_reused_port",
            Verdict::SteeredFragment => "steered_fragment",
            Verdict::PassedFragmentsAhead => "passed_fragments_ahead",
            Verdict::LookupAssigned => "lookup_assigned",
            Verdict::LookupDropped => "lookup_dropped",
            Verdict::ObservedNew => "observed_new",
            Verdict::Observed => "observed",
            Verdict::DeniedSni => "denied_sni",
            Verdict::PassedUntracked => "passed_untracked",
        }
    }
}

/// Index into the per-CPU `COUNTERS` array for one (service, verdict) pair.
pub const fn counter_index(service: u32, verdict: Verdict) -> u32 {
    service * VERDICT_COUNT + verdict as u32
}

/// Size of the per-CPU `COUNTERS` array.
pub const COUNTER_SLOTS: u32 = SERVICE_COUNT * VERDICT_COUNT;

/// Key of the `SERVICE_PORTS` hash map: a destination port and an IP protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortKey {
    /// Destination port, host byte order.
    pub port: u16,
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub proto: u8,
    /// Always zero; makes the padding explicit so the key hashes identically on both sides.
    pub _pad: u8,
}

impl PortKey {
    /// A key for `proto`/`port`.
    pub const fn new(proto: u8, port: u16) -> Self {
        PortKey {
            port,
            proto,
            _pad: 0,
        }
    }
}

/// Value of the `SERVICE_PORTS` map: where packets for that port go.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    /// A [`Service`] number.
    pub service: u32,
    /// Port of the daemon's transparent listener for this service and protocol (host order).
    pub listen_port: u32,
}

/// The single entry of the `CONFIG` array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ClassifierConfig {
    /// Mark set on steered packets; policy routing sends marked packets to the local table.
    pub mark: u32,
    /// Non-zero: interception on. Zero: every packet passes untouched (used while reloading).
    pub enabled: u32,
    /// Non-zero: also steer packets addressed to the gateway's own addresses.
    pub intercept_gateway: u32,
    /// Always zero.
    pub _reserved: u32,
}

/// LPM-trie key data for IPv4 prefixes (network byte order).
pub type Ipv4Prefix = [u8; 4];
/// LPM-trie key data for IPv6 prefixes (network byte order).
pub type Ipv6Prefix = [u8; 16];

const _: () = assert!(core::mem::size_of::<PortKey>() == 4);
const _: () = assert!(core::mem::size_of::<ServiceEntry>() == 8);
const _: () = assert!(core::mem::size_of::<ClassifierConfig>() == 16);

#[cfg(feature = "user")]
mod user {
    // SAFETY (for all impls below): `#[repr(C)]`, only integer fields, no implicit padding
    // (checked by the size assertions above), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::PortKey {}
    unsafe impl aya::Pod for super::ServiceEntry {}
    unsafe impl aya::Pod for super::ClassifierConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_indices_are_dense_and_unique() {
        let mut seen = [false; COUNTER_SLOTS as usize];
        for s in Service::ALL {
            for v in Verdict::ALL {
                let i = counter_index(s as u32, v) as usize;
                assert!(!seen[i], "index {i} used twice");
                seen[i] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn service_numbers_round_trip() {
        for s in Service::ALL {
            assert_eq!(Service::from_u32(s as u32), Some(s));
        }
        assert_eq!(Service::from_u32(SERVICE_COUNT), None);
    }
}
