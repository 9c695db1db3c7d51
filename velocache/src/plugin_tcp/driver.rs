//! One stream on a claimed port, driven by its plugin session.
//!
//! The driver owns the client's socket and, once the plugin asks for it, one upstream
//! connection. Everything that happens is an [`Event`] for the plugin — the stream opening,
//! bytes from either side, the upstream connecting or failing, either side closing — and the
//! commands it answers with run in order: bytes queued for the client or the upstream (upstream
//! bytes wait until it is connected), the one `connect`, `tag`s on the flow line, `splice`
//! (once both queues are written, the two sockets go to `crate::passthrough` and the plugin is
//! not called again) and `close` (the queues are written, within the connect timeout, and both
//! sides closed).
//!
//! Queues are bounded by back-pressure rather than by dropping: while either holds
//! [`QUEUE_LIMIT`] bytes or more, neither side is read, so a plugin (or a peer) that does not
//! keep up makes the sender wait, as TCP would, and the daemon holds at most the limit plus one
//! event's output per queue. Bytes queued for an upstream that was never asked for cannot drain,
//! so a plugin that piles them past the limit ends its stream.
//!
//! A side's end is passed on as a half-close once its queue is written. The stream ends when the
//! client has closed and the upstream (if any) has too, or at `close` or `splice`. A plugin that
//! fails is out of the stream for good, and the stream goes on as if it had never been there:
//! spliced to its upstream if one is open or opening, else to the original destination, with the
//! client's bytes so far replayed (kept while the plugin had opened nothing, up to
//! [`REPLAY_LIMIT`]).
use std::{future::Future, io, net::SocketAddr, pin::Pin, time::Duration};

use bytes::{Buf, BytesMut};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    time::Instant,
};
use tracing::{debug, info, warn};

use super::session::{Command, Event, StreamSession, Target};
use crate::{flow::FlowGuard, net::InterceptedTcp, passthrough::splice_streams};

/// Bytes read from a side at once (one event).
const READ_CHUNK: usize = 16 * 1024;
/// Bytes either queue may hold before the driver stops reading both sides.
pub(super) const QUEUE_LIMIT: usize = 256 * 1024;
/// Client bytes kept for a replay to the original destination, while the plugin has opened no
/// upstream of its own.
pub(super) const REPLAY_LIMIT: usize = 64 * 1024;

/// How a stream ended (the `end` label of `velocache_plugin_streams_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Closed by the plugin, or by both sides.
    Closed,
    /// Handed to the splice at the plugin's word.
    Spliced,
    /// The plugin failed; the stream went on without it.
    Fallback,
    /// No plugin claimed the port any more.
    NoPlugin,
    /// Broke off: a side failed, or the plugin asked for what cannot be done.
    Error,
}

impl End {
    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Spliced => "spliced",
            End::Fallback => "fallback",
            End::NoPlugin => "no_plugin",
            End::Error => "error",
        }
    }
}

type Connecting = Pin<Box<dyn Future<Output = Result<TcpStream, String>> + Send>>;

/// What the plugin asked for so far, and the bytes waiting for each side.
#[derive(Default)]
struct Plan {
    to_client: BytesMut,
    to_upstream: BytesMut,
    /// The connection to open now (the plugin's one).
    connect: Option<Target>,
    /// An upstream was asked for already: a second `connect` is ignored.
    upstream_asked: bool,
    splice: bool,
    close: bool,
    /// The plugin is out of the stream: why.
    failed: Option<String>,
    /// The client's bytes so far, while no upstream was asked for and they fit.
    replay: Option<Vec<u8>>,
}

impl Plan {
    /// Tell the plugin `ev` and take its commands. Nothing is told once the plugin failed or
    /// asked for a splice or a close: its part in the stream is over.
    fn feed(&mut self, session: &mut dyn StreamSession, flow: &FlowGuard, ev: Event) {
        if self.failed.is_some() || self.splice || self.close {
            return;
        }
        match session.event(ev) {
            Ok(commands) => {
                for c in commands {
                    self.apply(c, flow);
                }
            }
            Err(e) => {
                warn!(error = %e, "the plugin is out of the stream; it goes on without it");
                self.failed = Some(e.to_string());
            }
        }
    }

    fn apply(&mut self, command: Command, flow: &FlowGuard) {
        match command {
            Command::ToClient(b) => self.to_client.extend_from_slice(&b),
            Command::ToUpstream(b) => self.to_upstream.extend_from_slice(&b),
            Command::Connect(t) if self.upstream_asked => {
                debug!(host = %t.host, port = t.port, "a second upstream connection asked for: ignored");
            }
            Command::Connect(t) => {
                self.upstream_asked = true;
                // From now on the plugin speaks to the upstream itself.
                self.replay = None;
                self.connect = Some(t);
            }
            Command::Splice => self.splice = true,
            Command::Tag(name, value) => flow.tag(&name, &value),
            Command::Close => self.close = true,
        }
    }

    fn full(&self) -> bool {
        self.to_client.len() >= QUEUE_LIMIT || self.to_upstream.len() >= QUEUE_LIMIT
    }
}

/// The stream's sockets and where each side is.
struct Sides {
    cr: OwnedReadHalf,
    cw: OwnedWriteHalf,
    up_r: Option<OwnedReadHalf>,
    up_w: Option<OwnedWriteHalf>,
    connecting: Option<Connecting>,
    client_eof: bool,
    upstream_eof: bool,
    client_shut: bool,
    upstream_shut: bool,
}

impl Sides {
    /// No upstream is open or opening.
    fn no_upstream(&self) -> bool {
        self.up_w.is_none() && self.connecting.is_none()
    }
}

/// Run one stream with `session` until it ends; the flow line gets the plugin's name and tags,
/// the bytes each way, and what went wrong.
pub(super) async fn drive(
    mut session: Box<dyn StreamSession>,
    conn: InterceptedTcp,
    flow: &FlowGuard,
    connect_timeout: Duration,
) -> End {
    let InterceptedTcp {
        stream,
        client,
        orig_dst,
    } = conn;
    flow.record("plugin", session.plugin());
    flow.record("action", "plugin");
    let counts = flow.counts();
    let (cr, cw) = stream.into_split();
    let mut s = Sides {
        cr,
        cw,
        up_r: None,
        up_w: None,
        connecting: None,
        client_eof: false,
        upstream_eof: false,
        client_shut: false,
        upstream_shut: false,
    };
    let mut plan = Plan {
        replay: Some(Vec::new()),
        ..Plan::default()
    };
    let mut close_by: Option<Instant> = None;
    let mut cbuf = vec![0u8; READ_CHUNK];
    let mut ubuf = vec![0u8; READ_CHUNK];
    plan.feed(
        session.as_mut(),
        flow,
        Event::Opened {
            client: client.to_string(),
            orig_dst: orig_dst.to_string(),
        },
    );
    loop {
        if let Some(target) = plan.connect.take() {
            s.connecting = Some(Box::pin(connect(target, connect_timeout)));
        }
        if plan.failed.is_some() {
            break;
        }
        if plan.splice && !plan.upstream_asked {
            // A splice before any upstream: to where the client was going.
            plan.upstream_asked = true;
            let target = Target {
                host: orig_dst.0.ip().to_string(),
                port: orig_dst.0.port(),
            };
            s.connecting = Some(Box::pin(connect(target, connect_timeout)));
        }
        let upstream_written = s.up_w.is_none() || plan.to_upstream.is_empty();
        if plan.splice {
            if s.up_w.is_some() && plan.to_client.is_empty() && plan.to_upstream.is_empty() {
                return splice(s, flow).await;
            }
            if s.no_upstream() {
                flow.record(
                    "error",
                    "splice asked for, but the upstream connection failed",
                );
                return End::Error;
            }
        }
        if plan.close {
            let deadline = *close_by.get_or_insert_with(|| Instant::now() + connect_timeout);
            let written = (plan.to_client.is_empty() || s.client_shut) && upstream_written;
            if written || Instant::now() >= deadline {
                let _ = s.cw.shutdown().await;
                if let Some(w) = s.up_w.as_mut() {
                    let _ = w.shutdown().await;
                }
                return End::Closed;
            }
        }
        // Half-closes follow the queues.
        if s.client_eof
            && !s.upstream_shut
            && plan.to_upstream.is_empty()
            && let Some(w) = s.up_w.as_mut()
        {
            let _ = w.shutdown().await;
            s.upstream_shut = true;
        }
        if s.upstream_eof && !s.client_shut && plan.to_client.is_empty() {
            let _ = s.cw.shutdown().await;
            s.client_shut = true;
        }
        let client_done = plan.to_client.is_empty() || s.client_shut;
        if s.client_eof && (s.no_upstream() || s.upstream_eof) && client_done {
            return End::Closed;
        }
        if s.no_upstream() && plan.to_upstream.len() >= QUEUE_LIMIT {
            flow.record(
                "error",
                "the plugin queued more bytes than the limit for an upstream it never opened",
            );
            return End::Error;
        }

        let reading = !plan.full() && !plan.splice && !plan.close;
        tokio::select! {
            r = s.cr.read(&mut cbuf), if reading && !s.client_eof => match r {
                Ok(n) if n > 0 => {
                    counts.add_up(n as u64);
                    let data = &cbuf[..n];
                    if let Some(replay) = plan.replay.as_mut() {
                        if replay.len() + n <= REPLAY_LIMIT {
                            replay.extend_from_slice(data);
                        } else {
                            plan.replay = None;
                        }
                    }
                    plan.feed(session.as_mut(), flow, Event::ClientData(data.to_vec()));
                }
                other => {
                    if let Err(e) = other {
                        flow.fail(&e);
                    }
                    s.client_eof = true;
                    plan.feed(session.as_mut(), flow, Event::ClientClosed);
                }
            },
            r = read_opt(s.up_r.as_mut(), &mut ubuf), if reading && s.up_r.is_some() && !s.upstream_eof => match r {
                Ok(n) if n > 0 => {
                    plan.feed(session.as_mut(), flow, Event::UpstreamData(ubuf[..n].to_vec()));
                }
                other => {
                    if let Err(e) = other {
                        debug!(error = %e, "upstream read failed");
                    }
                    s.upstream_eof = true;
                    plan.feed(session.as_mut(), flow, Event::UpstreamClosed);
                }
            },
            r = s.cw.write(&plan.to_client[..]), if !plan.to_client.is_empty() && !s.client_shut => match r {
                Ok(n) => {
                    plan.to_client.advance(n);
                    counts.add_down(n as u64);
                }
                Err(e) => {
                    // The client is gone: nothing left to do for it.
                    flow.fail(&e);
                    return End::Error;
                }
            },
            r = write_opt(s.up_w.as_mut(), &plan.to_upstream[..]), if s.up_w.is_some() && !plan.to_upstream.is_empty() && !s.upstream_shut => match r {
                Ok(n) => plan.to_upstream.advance(n),
                Err(e) => {
                    debug!(error = %e, "upstream write failed");
                    plan.to_upstream.clear();
                    s.upstream_shut = true;
                    if !s.upstream_eof {
                        s.upstream_eof = true;
                        plan.feed(session.as_mut(), flow, Event::UpstreamClosed);
                    }
                }
            },
            r = connect_opt(s.connecting.as_mut()), if s.connecting.is_some() => {
                s.connecting = None;
                match r {
                    Ok(up) => {
                        let _ = up.set_nodelay(true);
                        let (r, w) = up.into_split();
                        s.up_r = Some(r);
                        s.up_w = Some(w);
                        plan.feed(session.as_mut(), flow, Event::UpstreamConnected);
                    }
                    Err(why) => {
                        info!(reason = %why, "the plugin's upstream connection failed");
                        plan.to_upstream.clear();
                        plan.feed(session.as_mut(), flow, Event::UpstreamFailed(why));
                    }
                }
            },
            _ = sleep_opt(close_by), if close_by.is_some() => {}
            else => {
                // Nothing can move (every side closed or blocked for good).
                flow.record("error", "the stream stalled");
                return End::Error;
            }
        }
    }
    fall_back(plan, s, flow, orig_dst.0, connect_timeout).await
}

/// Both queues written, the upstream open: hand the two sockets to the splice.
async fn splice(s: Sides, flow: &FlowGuard) -> End {
    let (Some(r), Some(w)) = (s.up_r, s.up_w) else {
        return End::Error;
    };
    let (Ok(client), Ok(upstream)) = (s.cr.reunite(s.cw), r.reunite(w)) else {
        flow.record("error", "the stream's sockets could not be joined again");
        return End::Error;
    };
    splice_streams(None, flow, client, upstream, &[]).await;
    End::Spliced
}

/// The plugin failed: go on as if it were absent.
async fn fall_back(
    mut plan: Plan,
    mut s: Sides,
    flow: &FlowGuard,
    orig_dst: SocketAddr,
    connect_timeout: Duration,
) -> End {
    let reason = plan.failed.take().unwrap_or_default();
    flow.record("action", "passthrough");
    flow.record("reason", &format!("plugin failed: {reason}"));
    if let Some(pending) = s.connecting.take() {
        match pending.await {
            Ok(up) => {
                let (r, w) = up.into_split();
                s.up_r = Some(r);
                s.up_w = Some(w);
            }
            Err(why) => {
                flow.record("error", &why);
                return End::Fallback;
            }
        }
    }
    let (upstream, prefix) = match (s.up_r.take(), s.up_w.take()) {
        // The plugin's own upstream: what it queued for either side is its conversation, which
        // goes out before the splice.
        (Some(r), Some(w)) => match r.reunite(w) {
            Ok(up) => (up, std::mem::take(&mut plan.to_upstream)),
            Err(_) => return End::Error,
        },
        _ => {
            // Nothing was opened: to the original destination, with the client's bytes the
            // plugin had not passed on. Its unsent output goes nowhere, as if never written.
            let Some(replay) = plan.replay.take() else {
                flow.record(
                    "error",
                    "the plugin failed after taking client bytes that cannot be replayed",
                );
                return End::Error;
            };
            plan.to_client.clear();
            let target = Target {
                host: orig_dst.ip().to_string(),
                port: orig_dst.port(),
            };
            match connect(target, connect_timeout).await {
                Ok(up) => (up, BytesMut::from(&replay[..])),
                Err(why) => {
                    warn!(%orig_dst, reason = %why, "connecting to the original destination failed");
                    flow.record("error", &why);
                    return End::Fallback;
                }
            }
        }
    };
    if !plan.to_client.is_empty() {
        if let Err(e) = s.cw.write_all(&plan.to_client).await {
            flow.fail(&e);
            return End::Fallback;
        }
        flow.counts().add_down(plan.to_client.len() as u64);
    }
    let Ok(client) = s.cr.reunite(s.cw) else {
        return End::Error;
    };
    // The splice counts `prefix` as sent up, but those bytes were counted as they came from the
    // client (the replay) or stem from them (the plugin's own output).
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    let sent = prefix.len() as u64;
    let _ = flow
        .counts()
        .up
        .fetch_update(relaxed, relaxed, |v| Some(v.saturating_sub(sent)));
    splice_streams(None, flow, client, upstream, &prefix).await;
    End::Fallback
}

/// Open a connection to `target` (an address, bracketed or not, or a name resolved by the
/// system resolver), trying each address in turn, all within `timeout`.
async fn connect(target: Target, timeout: Duration) -> Result<TcpStream, String> {
    let host = target
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = target.port;
    let attempt = async {
        let addrs = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("resolving {host}: {e}"))?;
        let mut last = format!("{host} has no address");
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => return Ok(s),
                Err(e) => last = format!("connecting to {addr}: {e}"),
            }
        }
        Err(last)
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("connecting to {host}:{port} timed out")))
}

async fn read_opt(r: Option<&mut OwnedReadHalf>, buf: &mut [u8]) -> io::Result<usize> {
    match r {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn write_opt(w: Option<&mut OwnedWriteHalf>, data: &[u8]) -> io::Result<usize> {
    match w {
        Some(w) => w.write(data).await,
        None => std::future::pending().await,
    }
}

async fn connect_opt(c: Option<&mut Connecting>) -> Result<TcpStream, String> {
    match c {
        Some(c) => c.await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt(until: Option<Instant>) {
    match until {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
