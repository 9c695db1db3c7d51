//! SIP over UDP: a relay per (client, original destination) that shows every datagram to the
//! observer on its way.
//!
//! The relay sends from the gateway's own address (like the pass-through relay), so the far
//! end answers the gateway: responses and in-dialog requests it sends back to the source of
//! what it received (RFC 3581 `rport`, symmetric signalling — every current UA and proxy)
//! reach this relay and are observed, then go to the client from the original destination's
//! address. Datagrams are forwarded byte for byte, except SDP bodies when anchoring is on.
use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use tokio::{net::UdpSocket, sync::mpsc};
use tracing::{debug, warn};

use super::{
    dialog::Side,
    observer::{Hop, Observer},
};
use crate::{
    flow::FlowTracker,
    net::{ClientAddr, Datagram, OrigDstAddr, UdpHandler, UdpReplier},
};

const SESSION_QUEUE: usize = 256;
const MAX_SESSIONS: usize = 16_384;

type Key = (ClientAddr, OrigDstAddr);

/// The UDP side of the SIP service.
pub struct SipUdp {
    observer: Arc<Observer>,
    idle: Duration,
    flows: FlowTracker,
    sessions: Arc<Mutex<HashMap<Key, mpsc::Sender<Bytes>>>>,
}

impl SipUdp {
    /// A relay whose sessions close after `idle` without a datagram.
    pub fn new(observer: Arc<Observer>, idle: Duration, flows: FlowTracker) -> Self {
        SipUdp {
            observer,
            idle,
            flows,
            sessions: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl UdpHandler for SipUdp {
    fn on_datagram(&self, dgram: Datagram, replier: &Arc<UdpReplier>) {
        // Observation happens in the session task, which knows the relay's own address (the
        // anchoring rewrites need it) and keeps the order of each session's messages.
        let data = dgram.data;
        let key = (dgram.client, dgram.orig_dst);
        let Ok(mut sessions) = self.sessions.lock() else {
            return;
        };
        if let Some(tx) = sessions.get(&key) {
            match tx.try_send(data) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    debug!(service = "sip", client = %key.0, "session queue full; datagram dropped");
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(d)) => {
                    sessions.remove(&key);
                    return self.open(&mut sessions, key, d, replier);
                }
            }
        }
        self.open(&mut sessions, key, data, replier);
    }
}

impl SipUdp {
    fn open(
        &self,
        sessions: &mut HashMap<Key, mpsc::Sender<Bytes>>,
        key: Key,
        first: Bytes,
        replier: &Arc<UdpReplier>,
    ) {
        if sessions.len() >= MAX_SESSIONS {
            warn!(service = "sip", client = %key.0, "too many SIP sessions; datagram dropped");
            return;
        }
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        if tx.try_send(first).is_err() {
            return;
        }
        sessions.insert(key, tx);
        let registry = self.sessions.clone();
        let guard = self.flows.start();
        let observer = self.observer.clone();
        let replier = replier.clone();
        let idle = self.idle;
        tokio::spawn(async move {
            session(observer, key, idle, replier, rx).await;
            if let Ok(mut map) = registry.lock() {
                map.remove(&key);
            }
            drop(guard);
        });
    }
}

async fn session(
    observer: Arc<Observer>,
    (client, orig_dst): Key,
    idle: Duration,
    replier: Arc<UdpReplier>,
    mut rx: mpsc::Receiver<Bytes>,
) {
    let bind: SocketAddr = if orig_dst.0.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let upstream = match UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(e) => {
            warn!(service = "sip", error = %e, "cannot open an upstream UDP socket");
            return;
        }
    };
    if let Err(e) = upstream.connect(orig_dst.0).await {
        warn!(service = "sip", %orig_dst, error = %e, "cannot reach the original destination");
        return;
    }
    let relay = upstream.local_addr().ok();
    let hop = |from| Hop {
        from,
        client: client.0,
        far: orig_dst.0,
        transport: "udp",
        relay,
    };
    let mut buf = vec![0u8; 65_535];
    let mut deadline = tokio::time::Instant::now() + idle;
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(data) = msg else { break };
                deadline = tokio::time::Instant::now() + idle;
                let out = observer.on_message(&data, hop(Side::Client));
                let data = out.as_deref().unwrap_or(&data);
                if let Err(e) = upstream.send(data).await {
                    debug!(service = "sip", error = %e, "upstream send failed");
                }
            }
            got = upstream.recv(&mut buf) => {
                deadline = tokio::time::Instant::now() + idle;
                match got {
                    Ok(n) => {
                        let data = &buf[..n];
                        let out = observer.on_message(data, hop(Side::Far));
                        let data = out.as_deref().unwrap_or(data);
                        if let Err(e) = replier.send(orig_dst, client, data).await {
                            debug!(service = "sip", error = %e, "reply to client failed");
                        }
                    }
                    Err(e) => debug!(service = "sip", error = %e, "upstream receive failed"),
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                // A call or a registration still needs this path back to the client (the far
                // end sends in-dialog requests and incoming calls to this very socket).
                if observer.keeps(client.0, orig_dst.0) {
                    deadline = tokio::time::Instant::now() + idle;
                } else {
                    break;
                }
            }
        }
    }
}
