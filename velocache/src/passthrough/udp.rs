//! The one UDP session relay: datagrams to the original destination, answers back from its
//! address, optionally shown to a [`DatagramTap`] on their way (the SIP observer).
//!
//! A session is one (client, original destination) pair. Its first datagram opens a gateway
//! socket connected to the destination; datagrams from the client go out through it, answers
//! come back through [`UdpReplier`] from the destination's own address, so the far end sees the
//! gateway and the client sees the address it asked. A session with no traffic for the idle
//! timeout closes — unless its tap still needs the path — and its flow line is written (bytes
//! and datagrams each way).
use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use bytes::Bytes;
use tokio::{net::UdpSocket, sync::mpsc};
use tracing::{debug, warn};
use velocache_common::Service;

use crate::{
    flow::{Counts, FlowGuard, FlowTracker},
    net::{ClientAddr, Datagram, OrigDstAddr, UdpHandler, UdpReplier},
};

/// Datagrams queued per session before new ones are dropped (UDP semantics: no back-pressure).
const SESSION_QUEUE: usize = 256;
/// Sessions open at once; beyond, new sessions' datagrams are dropped (and logged).
const MAX_SESSIONS: usize = 16_384;

type SessionKey = (ClientAddr, OrigDstAddr);

/// Which end of a session a datagram came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The LAN client.
    Client,
    /// The original destination.
    Far,
}

/// One session, as a tap sees it.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    /// The LAN client.
    pub client: ClientAddr,
    /// Where it sends.
    pub orig_dst: OrigDstAddr,
    /// The gateway's own socket toward the original destination (where the far end answers).
    pub relay: Option<SocketAddr>,
}

/// What a tap makes of one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tapped {
    /// Forward it unchanged.
    Forward,
    /// Forward these bytes instead.
    Replace(Vec<u8>),
    /// Forward nothing; send these bytes back to the end it came from (the tap answered it).
    Answer(Vec<u8>),
    /// Forward nothing.
    Drop,
}

/// Sees every datagram of a relay's sessions on its way.
pub trait DatagramTap: Send + Sync + 'static {
    /// A datagram from one end of `session`, and what to do with it.
    fn on_datagram(&self, from: End, data: &[u8], session: &Session) -> Tapped;

    /// Whether an idle session must stay open (a call or a registration still needs the path
    /// back to the client).
    fn keep_idle(&self, _session: &Session) -> bool {
        false
    }
}

/// Forwards datagrams untouched.
pub struct Untouched;

impl DatagramTap for Untouched {
    fn on_datagram(&self, _from: End, _data: &[u8], _session: &Session) -> Tapped {
        Tapped::Forward
    }
}

/// Relays the datagrams of one service.
pub struct UdpRelay<T: DatagramTap = Untouched> {
    service: Service,
    idle: Duration,
    flows: FlowTracker,
    tap: Arc<T>,
    sessions: Arc<Mutex<HashMap<SessionKey, mpsc::Sender<Bytes>>>>,
}

impl UdpRelay<Untouched> {
    /// A plain relay for `service` whose sessions close after `idle` without traffic.
    pub fn new(service: Service, idle: Duration, flows: FlowTracker) -> Self {
        UdpRelay::with_tap(service, idle, flows, Arc::new(Untouched))
    }
}

impl<T: DatagramTap> UdpRelay<T> {
    /// A relay that shows every datagram to `tap`.
    pub fn with_tap(service: Service, idle: Duration, flows: FlowTracker, tap: Arc<T>) -> Self {
        UdpRelay {
            service,
            idle,
            flows,
            tap,
            sessions: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Sessions open now.
    pub fn sessions(&self) -> usize {
        self.sessions.lock().map(|m| m.len()).unwrap_or(0)
    }

    fn open(
        &self,
        sessions: &mut HashMap<SessionKey, mpsc::Sender<Bytes>>,
        key: SessionKey,
        first: Bytes,
        replier: &Arc<UdpReplier>,
    ) {
        if sessions.len() >= MAX_SESSIONS {
            warn!(service = self.service.name(), client = %key.0, "too many UDP sessions; datagram dropped");
            return;
        }
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        if tx.try_send(first).is_err() {
            return;
        }
        sessions.insert(key, tx);
        let guard = self.flows.open(self.service, key.0, key.1, "udp");
        let registry = self.sessions.clone();
        let (tap, replier, idle) = (self.tap.clone(), replier.clone(), self.idle);
        let service = self.service;
        tokio::spawn(async move {
            run(service, &guard, key, idle, replier, tap, rx).await;
            if let Ok(mut map) = registry.lock() {
                map.remove(&key);
            }
            drop(guard);
        });
    }
}

impl<T: DatagramTap> UdpHandler for UdpRelay<T> {
    fn on_datagram(&self, dgram: Datagram, replier: &Arc<UdpReplier>) {
        let key = (dgram.client, dgram.orig_dst);
        let Ok(mut sessions) = self.sessions.lock() else {
            return;
        };
        if let Some(tx) = sessions.get(&key) {
            match tx.try_send(dgram.data) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    debug!(service = self.service.name(), client = %dgram.client, "session queue full; datagram dropped");
                    return;
                }
                // The session task is ending; start a new one below.
                Err(mpsc::error::TrySendError::Closed(d)) => {
                    sessions.remove(&key);
                    return self.open(&mut sessions, key, d, replier);
                }
            }
        }
        self.open(&mut sessions, key, dgram.data, replier);
    }
}

async fn run<T: DatagramTap>(
    service: Service,
    flow: &FlowGuard,
    (client, orig_dst): SessionKey,
    idle: Duration,
    replier: Arc<UdpReplier>,
    tap: Arc<T>,
    mut rx: mpsc::Receiver<Bytes>,
) {
    let counts = flow.counts();
    let bind: SocketAddr = if orig_dst.0.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let upstream = match UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(e) => {
            warn!(service = service.name(), %client, error = %e, "cannot open an upstream UDP socket");
            flow.fail(&e);
            return;
        }
    };
    if let Err(e) = upstream.connect(orig_dst.0).await {
        warn!(service = service.name(), %client, %orig_dst, error = %e, "cannot reach the original destination");
        flow.fail(&e);
        return;
    }
    let session = Session {
        client,
        orig_dst,
        relay: upstream.local_addr().ok(),
    };
    let mut buf = vec![0u8; 65_535];
    let mut deadline = tokio::time::Instant::now() + idle;
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(data) = msg else { break };
                deadline = tokio::time::Instant::now() + idle;
                match tap.on_datagram(End::Client, &data, &session) {
                    Tapped::Forward => send_up(service, &upstream, &data, &counts).await,
                    Tapped::Replace(b) => send_up(service, &upstream, &b, &counts).await,
                    // Answered by the tap: back to the client, from the address it sent to.
                    Tapped::Answer(b) => {
                        counts.add_up(data.len() as u64);
                        counts.datagrams_up.fetch_add(1, Ordering::Relaxed);
                        send_down(&replier, orig_dst, client, &b, &counts).await;
                    }
                    Tapped::Drop => {
                        counts.add_up(data.len() as u64);
                        counts.datagrams_up.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            got = upstream.recv(&mut buf) => {
                deadline = tokio::time::Instant::now() + idle;
                match got {
                    Ok(n) => {
                        let data = &buf[..n];
                        match tap.on_datagram(End::Far, data, &session) {
                            Tapped::Forward => send_down(&replier, orig_dst, client, data, &counts).await,
                            Tapped::Replace(b) => send_down(&replier, orig_dst, client, &b, &counts).await,
                            Tapped::Answer(b) => send_up(service, &upstream, &b, &counts).await,
                            Tapped::Drop => {}
                        }
                    }
                    // ICMP port unreachable and the like surface here; the session stays
                    // until idle, as a NAT would keep its mapping.
                    Err(e) => debug!(error = %e, "upstream receive failed"),
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                if tap.keep_idle(&session) {
                    deadline = tokio::time::Instant::now() + idle;
                } else {
                    break;
                }
            }
        }
    }
}

/// A datagram toward the original destination.
async fn send_up(service: Service, upstream: &UdpSocket, data: &[u8], counts: &Counts) {
    match upstream.send(data).await {
        Ok(n) => {
            counts.add_up(n as u64);
            counts.datagrams_up.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => debug!(service = service.name(), error = %e, "upstream send failed"),
    }
}

/// A datagram toward the client, from the original destination's address.
async fn send_down(
    replier: &UdpReplier,
    orig_dst: OrigDstAddr,
    client: ClientAddr,
    data: &[u8],
    counts: &Counts,
) {
    match replier.send(orig_dst, client, data).await {
        Ok(()) => {
            counts.add_down(data.len() as u64);
            counts.datagrams_down.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => debug!(error = %e, "reply to client failed"),
    }
}
