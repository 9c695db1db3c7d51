//! Pass-through: intercepted flows forwarded unchanged to where the client meant them to go.
//!
//! TCP is spliced (the gateway connects to the original destination and copies both ways);
//! UDP is relayed per (client, original destination) session through a gateway socket, and
//! answers go back from the original destination's address. Each flow ends with its `flow`
//! line (`crate::flow`). Services that are not (yet) handled otherwise use these, later handlers
//! fall back to them for flows they choose not to touch, and the SIP service relays UDP through
//! [`UdpRelay`] with its observer as the [`DatagramTap`].
//!
//! # Layout
//! - `tcp`: [`TcpSplice`], [`splice_to_origin`].
//! - `udp`: [`UdpRelay`], the one UDP session table.
//! - `zerocopy`: `splice(2)` between two TCP sockets, used when both ends are plain TCP.

mod tcp;
mod udp;
mod zerocopy;

pub use tcp::{SpliceEnd, TcpSplice, splice_to_origin};
pub use udp::{DatagramTap, End, Session, UdpRelay, Untouched};
