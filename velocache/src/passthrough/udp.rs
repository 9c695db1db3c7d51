//! UDP relay to the original destination.
//!
//! A session is one (client, original destination) pair. Its first datagram opens a gateway
//! socket connected to the destination; datagrams from the client go out through it, answers
//! come back through [`UdpReplier`] from the destination's own address. A session with no
//! traffic for the idle timeout closes and logs its flow line.
use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::{net::UdpSocket, sync::mpsc};
use tracing::{debug, info, warn};
use velocache_common::Service;

use crate::{
    flow::FlowTracker,
    net::{ClientAddr, Datagram, OrigDstAddr, UdpHandler, UdpReplier},
};

/// Datagrams queued per session before new ones are dropped (UDP semantics: no back-pressure).
const SESSION_QUEUE: usize = 256;

type SessionKey = (ClientAddr, OrigDstAddr);

/// Relays datagrams of one service.
pub struct UdpRelay {
    service: Service,
    idle: Duration,
    max_sessions: usize,
    flows: FlowTracker,
    sessions: Arc<Mutex<HashMap<SessionKey, mpsc::Sender<Bytes>>>>,
}

impl UdpRelay {
    /// A relay for `service` whose sessions close after `idle` without traffic.
    pub fn new(service: Service, idle: Duration, flows: FlowTracker) -> Self {
        UdpRelay {
            service,
            idle,
            max_sessions: 16_384,
            flows,
            sessions: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Sessions open now.
    pub fn sessions(&self) -> usize {
        self.sessions.lock().map(|m| m.len()).unwrap_or(0)
    }
}

impl UdpHandler for UdpRelay {
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

impl UdpRelay {
    fn open(
        &self,
        sessions: &mut HashMap<SessionKey, mpsc::Sender<Bytes>>,
        key: SessionKey,
        first: Bytes,
        replier: &Arc<UdpReplier>,
    ) {
        if sessions.len() >= self.max_sessions {
            warn!(service = self.service.name(), client = %key.0, "too many UDP sessions; datagram dropped");
            return;
        }
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        if tx.try_send(first).is_err() {
            return;
        }
        sessions.insert(key, tx);
        let session = Session {
            service: self.service,
            client: key.0,
            orig_dst: key.1,
            idle: self.idle,
            replier: replier.clone(),
        };
        let registry = self.sessions.clone();
        let guard = self.flows.start();
        tokio::spawn(async move {
            session.run(rx).await;
            if let Ok(mut map) = registry.lock() {
                map.remove(&key);
            }
            drop(guard);
        });
    }
}

struct Session {
    service: Service,
    client: ClientAddr,
    orig_dst: OrigDstAddr,
    idle: Duration,
    replier: Arc<UdpReplier>,
}

impl Session {
    async fn run(self, mut rx: mpsc::Receiver<Bytes>) {
        let started = Instant::now();
        let (mut bytes_up, mut bytes_down) = (0u64, 0u64);
        let (mut dgrams_up, mut dgrams_down) = (0u64, 0u64);
        let bind: SocketAddr = if self.orig_dst.0.is_ipv6() {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let upstream = match UdpSocket::bind(bind).await {
            Ok(s) => s,
            Err(e) => {
                warn!(service = self.service.name(), error = %e, "cannot open an upstream UDP socket");
                return;
            }
        };
        if let Err(e) = upstream.connect(self.orig_dst.0).await {
            warn!(service = self.service.name(), orig_dst = %self.orig_dst, error = %e, "cannot reach the original destination");
            return;
        }
        let mut buf = vec![0u8; 65_535];
        let mut deadline = tokio::time::Instant::now() + self.idle;
        loop {
            tokio::select! {
                msg = rx.recv() => {
                    let Some(data) = msg else { break };
                    deadline = tokio::time::Instant::now() + self.idle;
                    match upstream.send(&data).await {
                        Ok(n) => { bytes_up += n as u64; dgrams_up += 1; }
                        Err(e) => debug!(error = %e, "upstream send failed"),
                    }
                }
                got = upstream.recv(&mut buf) => {
                    deadline = tokio::time::Instant::now() + self.idle;
                    match got {
                        Ok(n) => {
                            let data = &buf[..n];
                            match self.replier.send(self.orig_dst, self.client, data).await {
                                Ok(()) => { bytes_down += n as u64; dgrams_down += 1; }
                                Err(e) => debug!(error = %e, "reply to client failed"),
                            }
                        }
                        // ICMP port unreachable and the like surface here; the session stays
                        // until idle, as a NAT would keep its mapping.
                        Err(e) => debug!(error = %e, "upstream receive failed"),
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        info!(
            service = self.service.name(),
            client = %self.client,
            orig_dst = %self.orig_dst,
            transport = "udp",
            bytes_up,
            bytes_down,
            datagrams_up = dgrams_up,
            datagrams_down = dgrams_down,
            duration_ms = started.elapsed().as_millis() as u64,
            "flow"
        );
    }
}
