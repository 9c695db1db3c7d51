//! One message's way through the gateway: the [`Hop`] it travels (which side sent it, the two
//! signalling endpoints, the transport) and the [`Relay`] decision the observer hands back to
//! the UDP and TCP relays that carry it.
use std::net::SocketAddr;

use super::dialog::Side;

/// One hop of one message: which side sent it, and the two signalling endpoints.
#[derive(Debug, Clone, Copy)]
pub struct Hop {
    /// The sender's side.
    pub from: Side,
    /// The LAN client's address.
    pub client: SocketAddr,
    /// The original destination.
    pub far: SocketAddr,
    /// `udp` or `tcp`.
    pub transport: &'static str,
    /// The gateway's own address on the far end's side of this signalling path (the relay
    /// socket): where the far end answers and sends in-dialog requests.
    pub relay: Option<SocketAddr>,
}

impl Hop {
    /// Who sent the message.
    pub fn src(&self) -> SocketAddr {
        match self.from {
            Side::Client => self.client,
            Side::Far => self.far,
        }
    }
    /// Where it goes.
    pub fn dst(&self) -> SocketAddr {
        match self.from {
            Side::Client => self.far,
            Side::Far => self.client,
        }
    }
}

/// What the relay does with a message once the observer has seen it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relay {
    /// Forward it unchanged.
    Forward,
    /// Forward these bytes instead (anchoring rewrote the SDP or the signalling addresses).
    Rewritten(Vec<u8>),
    /// Forward nothing; send these bytes back to the sender (the gateway answered it).
    Answer(Vec<u8>),
    /// Forward nothing (the ACK of a response the gateway sent).
    Absorb,
}
