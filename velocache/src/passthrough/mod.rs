//! Pass-through: intercepted flows forwarded unchanged to where the client meant them to go.
//!
//! TCP is spliced (the gateway connects to the original destination and copies both ways);
//! UDP is relayed per (client, original destination) session through a gateway socket, and
//! answers go back from the original destination's address. Each flow ends with one log line:
//! `service`, `client`, `orig_dst`, `transport`, `bytes_up` (client → origin), `bytes_down`,
//! `duration_ms`. Services that are not (yet) handled otherwise use these, and later handlers
//! fall back to them for flows they choose not to touch.
//!
//! # Layout
//! - `counted`: a byte-counting stream wrapper, so counts survive an error mid-copy.
//! - `tcp`: [`TcpSplice`].
//! - `udp`: [`UdpRelay`].
//! - `zerocopy`: `splice(2)` between two TCP sockets, used when both ends are plain TCP.
//! - `kernel_relay`: the two sockets joined in the kernel (sockmap, `sk_skb` verdict), for the
//!   handlers that have loaded it (spliced TLS); `splice(2)` is the fallback.

mod counted;
mod kernel_relay;
mod tcp;
mod udp;
mod zerocopy;

pub use counted::Counted;
pub use kernel_relay::{KernelRelay, RelayError, Relayed};
pub use tcp::{SpliceEnd, TcpSplice, splice_to_origin, splice_to_origin_with};
pub use udp::UdpRelay;
