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
//! - `tcp`: [`TcpSplice`], [`splice_to_origin`], [`splice_streams`] (both ends already open).
//! - `udp`: [`UdpRelay`], the one UDP session table.
//! - `zerocopy`: `splice(2)` between two TCP sockets, used when both ends are plain TCP.
//! - `kernel_relay`: the two sockets joined in the kernel (sockmap, `sk_skb` verdict), for the
//!   handlers that have loaded it (spliced TLS); `splice(2)` is the fallback.

mod kernel_relay;
mod tcp;
mod udp;
mod zerocopy;

pub use kernel_relay::{KernelRelay, RelayError, Relayed};
pub use tcp::{SpliceEnd, TcpSplice, splice_streams, splice_to_origin, splice_to_origin_with};
pub use udp::{DatagramTap, End, Session, Tapped, UdpRelay, Untouched};
