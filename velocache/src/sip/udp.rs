//! SIP over UDP: the pass-through UDP relay (`passthrough::UdpRelay`), with the observer as its
//! tap so that every datagram is shown to it on its way.
//!
//! The relay sends from the gateway's own address, so the far end answers the gateway:
//! responses and in-dialog requests it sends back to the source of what it received (RFC 3581
//! `rport`, symmetric signalling — every current UA and proxy) reach the relay and are
//! observed, then go to the client from the original destination's address. Datagrams are
//! forwarded byte for byte, except SDP bodies when anchoring is on; an INVITE a plugin rejected
//! is answered from the address the caller sent it to, and forwarded not at all. A session stays open past
//! the idle time while a call or a registration still uses its path.
use std::{sync::Arc, time::Duration};

use super::{
    dialog::Side,
    observer::{Hop, Observer, Relay},
};
use crate::{
    flow::FlowTracker,
    passthrough::{DatagramTap, End, Session, Tapped, UdpRelay},
};

/// The observer, seeing a relay's datagrams.
pub struct SipTap(Arc<Observer>);

impl DatagramTap for SipTap {
    fn on_datagram(&self, from: End, data: &[u8], s: &Session) -> Tapped {
        let from = match from {
            End::Client => Side::Client,
            End::Far => Side::Far,
        };
        let hop = Hop {
            from,
            client: s.client.0,
            far: s.orig_dst.0,
            transport: "udp",
            relay: s.relay,
        };
        match self.0.on_message(data, hop) {
            Relay::Forward => Tapped::Forward,
            Relay::Rewritten(b) => Tapped::Replace(b),
            // A response the gateway made (an INVITE a plugin rejected) goes back from the
            // address the caller sent the request to.
            Relay::Answer(b) => Tapped::Answer(b),
            Relay::Absorb => Tapped::Drop,
        }
    }

    fn keep_idle(&self, s: &Session) -> bool {
        self.0.keeps(s.client.0, s.orig_dst.0)
    }
}

/// The UDP side of the SIP service: sessions close after `idle` without a datagram.
pub fn relay(observer: Arc<Observer>, idle: Duration, flows: FlowTracker) -> UdpRelay<SipTap> {
    UdpRelay::with_tap(
        velocache_common::Service::Sip,
        idle,
        flows,
        Arc::new(SipTap(observer)),
    )
}
