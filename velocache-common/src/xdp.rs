//! The XDP dispatcher's slots, shared by the `velocache-xdp` object and the daemon's
//! `datapath::xdp`.
//!
//! An interface runs exactly one XDP program of ours, the dispatcher ([`XDP_DISPATCHER`]). It
//! looks up the interface's slot mask in `XDP_INTERFACES` (ifindex → `u32`, bit `n` = slot `n`
//! enabled there) and tail-calls the first enabled slot of the `XDP_SLOTS` program array. A slot
//! program that passes a frame hands it to the next enabled slot the same way (the kernel side's
//! `next()`), so the slots run in [`XdpSlot`] order and the first one that does not pass (it
//! redirected, transmitted or dropped the frame) ends the chain. An empty or disabled slot is
//! skipped; a frame that no slot takes goes to the stack (`XDP_PASS`).
//!
//! Slot numbers live only in the daemon's memory and in maps that die with it (the program array
//! and the masks are never pinned), so renumbering the slots is a code change and nothing else.
//!
//! # Adding a slot
//! A variant here (its number is its place in the chain), its program in the `velocache-xdp`
//! object ending in `next()` where it would pass, and its entry in [`XdpSlot::program`] and
//! [`XdpSlot::maps`]. A service then claims the slot through the daemon's XDP owner, which loads
//! the program, fills the slot and enables it on the interfaces the service names.

/// Name of the dispatcher program in the `velocache-xdp` object (the kernel shows the first 15
/// bytes).
pub const XDP_DISPATCHER: &str = "velocache_xdp";

/// Entries of the `XDP_SLOTS` program array: the most slot programs one interface can chain.
pub const XDP_SLOT_COUNT: u32 = 8;

/// Entries of the `XDP_INTERFACES` map: interfaces with at least one slot enabled.
pub const MAX_XDP_INTERFACES: u32 = 1024;

/// The slots, in the order a frame visits them. The value indexes `XDP_SLOTS` and is the bit of
/// the slot in an interface's mask.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum XdpSlot {
    /// The RTP fast path: learned media flows forwarded in the kernel (`velocache_rtp`).
    Rtp = 0,
    /// DNS answers in the kernel: hot cache entries sent back with `XDP_TX` (`velocache_dns`).
    Dns = 1,
}

impl XdpSlot {
    /// Every slot, in chain order.
    pub const ALL: [XdpSlot; 2] = [XdpSlot::Rtp, XdpSlot::Dns];

    /// The slot with this number, if any.
    pub const fn from_u32(v: u32) -> Option<XdpSlot> {
        match v {
            0 => Some(XdpSlot::Rtp),
            1 => Some(XdpSlot::Dns),
            _ => None,
        }
    }

    /// Lower-case name used in logs and `velocache datapath show`.
    pub const fn name(self) -> &'static str {
        match self {
            XdpSlot::Rtp => "rtp",
            XdpSlot::Dns => "dns",
        }
    }

    /// The slot's bit in an interface's mask.
    pub const fn bit(self) -> u32 {
        1 << self as u32
    }

    /// Name of the slot's program in the `velocache-xdp` object.
    pub const fn program(self) -> &'static str {
        match self {
            XdpSlot::Rtp => crate::rtp::RTP_PROGRAM,
            XdpSlot::Dns => crate::dns::DNS_PROGRAM,
        }
    }

    /// The maps the slot's program shares with the service that claims it: handed to that
    /// service, and pinned where the daemon is told to keep them across restarts.
    pub const fn maps(self) -> &'static [&'static str] {
        match self {
            XdpSlot::Rtp => &["RTP_FLOWS", "RTP_COUNTERS", "RTP_QUALITY", "RTP_CAPTURE"],
            XdpSlot::Dns => &["DNS_ANSWERS", "DNS_COUNTERS", "DNS_REDIRECT"],
        }
    }
}

// A mask is a `u32`: every slot number needs a bit.
const _: () = assert!(XDP_SLOT_COUNT <= 32);

/// The slots set in `mask`, in chain order.
pub fn slots_in(mask: u32) -> impl Iterator<Item = XdpSlot> {
    XdpSlot::ALL
        .into_iter()
        .filter(move |s| mask & s.bit() != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_numbers_round_trip_and_fit_the_program_array() {
        for s in XdpSlot::ALL {
            assert_eq!(XdpSlot::from_u32(s as u32), Some(s));
            assert!((s as u32) < XDP_SLOT_COUNT);
        }
        assert_eq!(XdpSlot::from_u32(XdpSlot::ALL.len() as u32), None);
    }

    #[test]
    fn slots_are_listed_in_chain_order_and_names_are_unique() {
        assert!(
            XdpSlot::ALL
                .windows(2)
                .all(|w| (w[0] as u32) < (w[1] as u32))
        );
        let mask = XdpSlot::ALL.iter().fold(0, |m, s| m | s.bit());
        assert!(slots_in(mask).eq(XdpSlot::ALL));
        assert_eq!(slots_in(0).count(), 0);
        for (i, a) in XdpSlot::ALL.iter().enumerate() {
            for b in &XdpSlot::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
                assert_ne!(a.program(), b.program());
            }
        }
    }
}
