//! The kernel relay: a spliced connection whose two sockets are joined in the kernel, so its
//! bytes never reach the daemon (no copies, no wake-up per chunk to move them).
//!
//! Data enters as the client's socket, the connected origin socket and the bytes already read
//! from the client (the peeked ClientHello); it leaves as the two byte counts of the flow line.
//! [`KernelRelay::load`] loads `velocache-relay` (an `sk_skb` stream verdict program on the
//! `RELAY_SOCKS` SOCKHASH, keyed by socket cookie). For one connection, [`KernelRelay::relay`]:
//! 1. reads (without waiting) anything more the client sent, to go out first with the hello;
//! 2. puts both sockets into the map and each one's peer into `RELAY_PEERS` — from then on the
//!    verdict program redirects every byte either socket receives to the other one's send
//!    queue, counting it in `RELAY_BYTES`. This is done while neither end sends: the client
//!    waits for the origin's answer to a hello the origin has not seen yet;
//! 3. writes the bytes already read to the origin;
//! 4. waits for each side's end of stream (a peek, never a read: bytes the program redirected
//!    are not in the socket's queue). A verdict never sees a FIN, so the half-close is passed on
//!    here — once the other socket has taken every byte redirected to it (its acknowledged plus
//!    queued bytes, from `TCP_INFO` and `SIOCOUTQ`), since a `shutdown` before that would cut
//!    the tail of the stream. Bytes the program left in a queue (its peer was gone) are moved
//!    by the daemon and counted too.
//!
//! Dropping the registration removes the peer and byte entries; closing a socket removes it
//! from the SOCKHASH. If the object cannot be loaded, or a socket cannot be added (not
//! established, map full), the caller splices with `splice(2)` instead.
use std::{
    io,
    net::Shutdown,
    os::fd::{AsFd, AsRawFd},
    sync::Mutex,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{HashMap, MapData, SockHash},
    programs::SkSkb,
};
use thiserror::Error;
use tokio::net::TcpStream;
use tracing::{debug, info};
use velocache_common::tls::RELAY_PROGRAM;

use crate::datapath::{socket_cookie, tcp_bytes_taken};

/// The relay's object, built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/velocache-relay"));

/// A half-close waits this long for the other socket to take its last redirected bytes while
/// they make no progress (a peer that stopped reading).
const DRAIN_STALL: Duration = Duration::from_secs(2);

/// Why the relay is not available, or not for this connection.
#[derive(Debug, Error)]
pub enum RelayError {
    /// Loading or attaching the program failed.
    #[error("loading the kernel relay: {0}")]
    Load(String),
    /// A map operation failed.
    #[error("kernel relay map `{map}`: {reason}")]
    Map {
        /// Which map.
        map: &'static str,
        /// What failed.
        reason: String,
    },
    /// A socket option could not be read.
    #[error("kernel relay: {0}")]
    Socket(#[source] io::Error),
}

struct Maps {
    socks: SockHash<MapData, u64>,
    peers: HashMap<MapData, u64, u64>,
    bytes: HashMap<MapData, u64, u64>,
}

/// The loaded relay, shared by every spliced connection.
pub struct KernelRelay {
    maps: Mutex<Maps>,
    /// Holds the program and its attachment to the map.
    _ebpf: Ebpf,
}

/// What a relayed connection moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Relayed {
    /// Client → origin, the bytes read before the relay included.
    pub up: u64,
    /// Origin → client.
    pub down: u64,
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> RelayError {
    move |e| RelayError::Map {
        map,
        reason: e.to_string(),
    }
}

impl KernelRelay {
    /// Load the program and attach it to its socket map.
    pub fn load() -> Result<Self, RelayError> {
        let load = |e: &dyn std::fmt::Display| RelayError::Load(e.to_string());
        let mut ebpf = Ebpf::load(OBJECT).map_err(|e| load(&e))?;
        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or_else(|| RelayError::Map {
                map: name,
                reason: "missing from the object".into(),
            })
        };
        let socks: SockHash<MapData, u64> =
            SockHash::try_from(take(&mut ebpf, "RELAY_SOCKS")?).map_err(map_err("RELAY_SOCKS"))?;
        let peers =
            HashMap::try_from(take(&mut ebpf, "RELAY_PEERS")?).map_err(map_err("RELAY_PEERS"))?;
        let bytes =
            HashMap::try_from(take(&mut ebpf, "RELAY_BYTES")?).map_err(map_err("RELAY_BYTES"))?;
        let map_fd = socks.fd().try_clone().map_err(|e| load(&e))?;
        let program: &mut SkSkb = ebpf
            .program_mut(RELAY_PROGRAM)
            .ok_or_else(|| RelayError::Load(format!("no program {RELAY_PROGRAM}")))?
            .try_into()
            .map_err(|e| load(&e))?;
        program.load().map_err(|e| load(&e))?;
        program.attach(&map_fd).map_err(|e| load(&e))?;
        info!("kernel relay ready: spliced connections are joined in the kernel (sockmap)");
        Ok(KernelRelay {
            maps: Mutex::new(Maps {
                socks,
                peers,
                bytes,
            }),
            _ebpf: ebpf,
        })
    }

    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Join `client` and `upstream` in the kernel after writing `prefix` (bytes already read
    /// from the client) to `upstream`; return when both directions ended. `Err(RelayError)`
    /// before anything was written means the connection was not taken: splice it otherwise.
    pub async fn relay(
        &self,
        client: &TcpStream,
        upstream: &TcpStream,
        prefix: &[u8],
    ) -> Result<(Relayed, Option<io::Error>), RelayError> {
        let mut first = prefix.to_vec();
        let client_done = drain_ready(client, &mut first).map_err(RelayError::Socket)?;
        let reg = Registration::new(self, client, upstream)?;
        let mut user = Relayed::default();
        let error = reg
            .run(client, upstream, &first, client_done, &mut user)
            .await
            .err();
        Ok((
            Relayed {
                up: user.up + reg.kernel_bytes(reg.client),
                down: user.down + reg.kernel_bytes(reg.upstream),
            },
            error,
        ))
    }
}

/// Read what `s` has queued right now, without waiting; `Ok(true)`: it also reached its end.
fn drain_ready(s: &TcpStream, into: &mut Vec<u8>) -> io::Result<bool> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.try_read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// One relayed connection's entries in the maps; removed on drop.
struct Registration<'a> {
    relay: &'a KernelRelay,
    client: u64,
    upstream: u64,
}

impl<'a> Registration<'a> {
    fn new(
        relay: &'a KernelRelay,
        client: &TcpStream,
        upstream: &TcpStream,
    ) -> Result<Self, RelayError> {
        let c = socket_cookie(client.as_fd()).map_err(RelayError::Socket)?;
        let u = socket_cookie(upstream.as_fd()).map_err(RelayError::Socket)?;
        let reg = Registration {
            relay,
            client: c,
            upstream: u,
        };
        let mut m = relay.maps();
        m.bytes.insert(c, 0, 0).map_err(map_err("RELAY_BYTES"))?;
        m.bytes.insert(u, 0, 0).map_err(map_err("RELAY_BYTES"))?;
        m.socks
            .insert(c, client.as_raw_fd(), 0)
            .map_err(map_err("RELAY_SOCKS"))?;
        m.socks
            .insert(u, upstream.as_raw_fd(), 0)
            .map_err(map_err("RELAY_SOCKS"))?;
        // Peers last: only now does the program redirect anything.
        m.peers.insert(c, u, 0).map_err(map_err("RELAY_PEERS"))?;
        m.peers.insert(u, c, 0).map_err(map_err("RELAY_PEERS"))?;
        drop(m);
        Ok(reg)
    }

    /// Bytes the program redirected from the socket with `cookie`.
    fn kernel_bytes(&self, cookie: u64) -> u64 {
        self.relay.maps().bytes.get(&cookie, 0).unwrap_or(0)
    }

    /// Relay until both directions ended; `user` counts the bytes the daemon moved itself.
    async fn run(
        &self,
        client: &TcpStream,
        upstream: &TcpStream,
        first: &[u8],
        mut client_done: bool,
        user: &mut Relayed,
    ) -> io::Result<()> {
        write_all(upstream, first).await?;
        user.up += first.len() as u64;
        if client_done {
            self.half_close(upstream, user.up, self.client).await?;
        }
        let mut upstream_done = false;
        let (mut pc, mut pu) = ([0u8; 1], [0u8; 1]);
        while !(client_done && upstream_done) {
            tokio::select! {
                r = client.peek(&mut pc), if !client_done => {
                    if r? == 0 {
                        client_done = true;
                        self.half_close(upstream, user.up, self.client).await?;
                    } else {
                        user.up += move_queued(client, upstream).await?;
                    }
                }
                r = upstream.peek(&mut pu), if !upstream_done => {
                    if r? == 0 {
                        upstream_done = true;
                        self.half_close(client, user.down, self.upstream).await?;
                    } else {
                        user.down += move_queued(upstream, client).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// `from` (cookie) reached its end: once `to` has taken everything meant for it — the bytes
    /// the daemon wrote plus those the program redirected — pass the half-close on.
    async fn half_close(&self, to: &TcpStream, user_bytes: u64, from: u64) -> io::Result<()> {
        let mut last = (0u64, Instant::now());
        let mut pause = Duration::from_micros(200);
        loop {
            let want = user_bytes + self.kernel_bytes(from);
            let taken = tcp_bytes_taken(to.as_fd())?;
            if taken >= want {
                break;
            }
            if taken != last.0 {
                last = (taken, Instant::now());
            } else if last.1.elapsed() > DRAIN_STALL {
                debug!(
                    taken,
                    want, "relay: the peer stopped taking bytes; closing anyway"
                );
                break;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        match socket2::SockRef::from(to).shutdown(Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
            _ => Ok(()),
        }
    }
}

/// Bytes the program left in `from`'s queue (its peer entry was gone, or they came before the
/// relay started): moved by the daemon, in order, and counted.
async fn move_queued(from: &TcpStream, to: &TcpStream) -> io::Result<u64> {
    let mut buf = Vec::new();
    drain_ready(from, &mut buf)?;
    write_all(to, &buf).await?;
    Ok(buf.len() as u64)
}

/// Write all of `buf` to a shared socket.
async fn write_all(to: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        to.writable().await?;
        match to.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut m = self.relay.maps();
        for cookie in [self.client, self.upstream] {
            let _ = m.peers.remove(&cookie);
            let _ = m.bytes.remove(&cookie);
            // Closing the socket removes it from the SOCKHASH too; this makes it immediate.
            let _ = m.socks.remove(&cookie);
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    /// A connected pair of TCP sockets over loopback: (the near end we keep, the far end).
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let far = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (near, _) = l.accept().await.unwrap();
        (near, far)
    }

    #[tokio::test]
    async fn bytes_cross_in_the_kernel_both_ways_with_the_prefix_first_and_are_counted() {
        let relay = KernelRelay::load().expect("loading the relay needs root and BPF");
        // client app ↔ [client_side | upstream_side] ↔ origin app
        let (client_side, mut client_app) = pair().await;
        let (upstream_side, mut origin_app) = pair().await;
        let up: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..5_000_000u32).map(|i| (i % 241) as u8).collect();
        let (up2, down2) = (up.clone(), down.clone());
        let origin = tokio::spawn(async move {
            let mut got = Vec::new();
            origin_app.read_to_end(&mut got).await.unwrap();
            origin_app.write_all(&down2).await.unwrap();
            origin_app.shutdown().await.unwrap();
            got
        });
        let client = tokio::spawn(async move {
            client_app.write_all(&up2).await.unwrap();
            client_app.shutdown().await.unwrap();
            let mut back = Vec::new();
            client_app.read_to_end(&mut back).await.unwrap();
            back
        });
        let (relayed, error) = relay
            .relay(&client_side, &upstream_side, b"HELLO")
            .await
            .expect("registered");
        assert!(error.is_none(), "{error:?}");
        let at_origin = origin.await.unwrap();
        assert_eq!(&at_origin[..5], b"HELLO", "the bytes already read go first");
        assert!(at_origin[5..] == up[..], "client bytes intact");
        assert!(client.await.unwrap() == down, "origin bytes intact");
        assert_eq!(
            relayed,
            Relayed {
                up: 5 + up.len() as u64,
                down: down.len() as u64
            }
        );
        let m = relay.maps();
        assert!(m.peers.keys().next().is_none(), "entries removed");
    }
}
