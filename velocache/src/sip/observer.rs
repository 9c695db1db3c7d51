//! The observer: every SIP message the relays carry passes through [`Observer::on_message`]
//! on its way, in the order it travels.
//!
//! Per message: parse (a failure is logged and the bytes go on untouched), log one JSON line,
//! show it to the plugins' `sip` hook when there is one (`hook`: their tags go on the call's
//! record; an INVITE they reject is answered by the gateway, see [`Relay`]), feed the call
//! table, and act on what changed — install or update the call's media flows in
//! the kernel when it is answered or re-negotiated, remove them and log the call record with
//! its media statistics when it ends. With anchoring on, a message carrying SDP comes back
//! rewritten (gateway anchor ports instead of the endpoints' own). A periodic [`Observer::tick`]
//! ends calls whose media went silent or whose INVITE was never answered, and removes kernel
//! flows nobody owns (left by a daemon that died).
//!
//! Each message of a call also goes on the call's ladder, into its capture when one runs, and
//! into the live feed when the dashboard is on (`observer_calls`, which also answers the admin
//! API's call endpoints).
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tracing::{debug, info, warn};

pub use super::hop::{Hop, Relay};
use super::{
    calls, capture,
    dialog::{Call, CallKey, CallTable, Outcome, Side},
    hook::{Screen, Screened, SipHook},
    ladder,
    media::{CallMedia, PlannedFlow, local_ip_towards, plan, replacements},
    message::{self, SipMessage, StartLine},
    metrics::Metrics,
    nat,
    sdp::{self, MediaStream},
    stream::Unobserved,
};
use crate::{
    admin::{AdminError, api::CallsReport},
    live::Live,
    rtp::{FlowStats, MediaPlane, PortPool, report},
};

#[path = "observer_calls.rs"]
mod observer_calls;

/// How the observer behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Rewrite SDP to gateway anchor ports.
    pub anchor: bool,
    /// End calls whose media is silent this long.
    pub rtp_idle: Duration,
    /// Forget INVITEs unanswered this long.
    pub setup_timeout: Duration,
    /// Calls tracked at once.
    pub max_calls: usize,
}

struct State {
    table: CallTable,
    media: HashMap<CallKey, CallMedia>,
    /// Registrations by (client, registrar): until when the registrar may send to the client.
    bindings: HashMap<(SocketAddr, SocketAddr), Instant>,
    /// With anchoring: the client's own Via/Contact per signalling path, to restore.
    nat: HashMap<(SocketAddr, SocketAddr), nat::Original>,
    /// Ended calls, for `velocache calls`.
    recent: calls::Recent,
    /// Every call's messages, and those of the last ended calls.
    ladders: ladder::Ladders,
    /// Calls being captured (and finished captures, for their pcap).
    captures: capture::Captures,
    ticks: u64,
}

/// Shared by the UDP and TCP relays of the SIP service.
pub struct Observer {
    settings: Settings,
    state: Mutex<State>,
    plane: Arc<dyn MediaPlane>,
    ports: Option<Arc<PortPool>>,
    metrics: Metrics,
    /// The plugins' `sip` hook, when plugins are loaded.
    screen: Option<Screen>,
    /// The dashboard's live feed, when it is on.
    live: Option<Live>,
}

impl Observer {
    /// An observer that installs media into `plane` and anchors with `ports` (when
    /// `settings.anchor`).
    pub fn new(
        settings: Settings,
        plane: Arc<dyn MediaPlane>,
        ports: Option<Arc<PortPool>>,
        metrics: Metrics,
    ) -> Self {
        Observer {
            state: Mutex::new(State {
                table: CallTable::new(settings.max_calls),
                media: HashMap::new(),
                bindings: HashMap::new(),
                nat: HashMap::new(),
                recent: calls::Recent::default(),
                ladders: ladder::Ladders::default(),
                captures: capture::Captures::default(),
                ticks: 0,
            }),
            settings,
            plane,
            ports,
            metrics,
            screen: None,
            live: None,
        }
    }

    /// Publish one record per message into `live` (the dashboard's feed).
    pub fn with_live(mut self, live: Option<Live>) -> Self {
        self.live = live;
        self
    }

    /// Show every message to `hook` (the plugins' `sip` hook).
    pub fn with_hook(mut self, hook: Arc<dyn SipHook>) -> Self {
        self.screen = Some(Screen::new(hook));
        self
    }

    /// Calls in progress.
    pub fn calls(&self) -> usize {
        self.state.lock().map(|s| s.table.len()).unwrap_or(0)
    }

    /// Whether a call or a live registration between `client` and `far` still needs the
    /// signalling path (the UDP relay keeps its session open while it does).
    pub fn keeps(&self, client: SocketAddr, far: SocketAddr) -> bool {
        let Ok(st) = self.state.lock() else {
            return false;
        };
        st.table.calls().any(|c| c.client == client && c.far == far)
            || st
                .bindings
                .get(&(client, far))
                .is_some_and(|until| *until > Instant::now())
    }

    /// Observe one message; the [`Relay`] says what to do with it.
    pub fn on_message(&self, bytes: &[u8], hop: Hop) -> Relay {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            // RFC 5626 keep-alives.
            return Relay::Forward;
        }
        let msg = match message::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.malformed(bytes, &e, &hop);
                return Relay::Forward;
            }
        };
        self.metrics.messages.inc();
        calls::log_message(&msg, hop.src(), hop.dst(), hop.transport);
        // The plugins are asked before the call table is locked: a slow plugin delays only
        // its own message.
        let (tags, rejected) = match self.screen.as_ref().map(|s| s.screen(&msg, bytes, &hop)) {
            None => (Vec::new(), None),
            Some(Screened::Observe(tags)) => (tags, None),
            Some(Screened::Again(response)) => return Relay::Answer(response),
            Some(Screened::Absorb) => return Relay::Absorb,
            Some(Screened::Reject {
                tags,
                status,
                reason,
                plugin,
                response,
            }) => (tags, Some((status, reason, plugin, response))),
        };
        let streams = if msg.has_sdp() {
            match sdp::parse(&msg.body) {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!(service = "sip", call_id = msg.call_id.as_deref().unwrap_or(""),
                        error = %e, "malformed SDP: media not learned, message forwarded untouched");
                    None
                }
            }
        } else {
            None
        };
        let now = Instant::now();
        let Ok(mut guard) = self.state.lock() else {
            return rejected.map_or(Relay::Forward, |r| Relay::Answer(r.3));
        };
        let st = &mut *guard;
        let change = st.table.on_message(
            &msg,
            streams.clone(),
            hop.from,
            hop.client,
            hop.far,
            hop.transport,
            now,
        );
        if let Some((reg, code, reason)) = change.registered {
            info!(service = "sip", call_id = msg.call_id.as_deref().unwrap_or(""),
                aor = %reg.aor, client = %hop.client, registrar = %hop.far,
                status = code, reason = %reason, expires = reg.expires,
                duration_ms = now.duration_since(reg.at).as_millis() as u64,
                result = if (200..300).contains(&code) { "registered" } else { "rejected" },
                "register");
            if (200..300).contains(&code) {
                let secs = u64::from(reg.expires.unwrap_or(3600));
                if secs == 0 {
                    st.bindings.remove(&(hop.client, hop.far));
                } else {
                    st.bindings
                        .insert((hop.client, hop.far), now + Duration::from_secs(secs));
                }
            }
        }
        let Some(call_id) = msg.call_id.as_deref() else {
            return rejected.map_or(Relay::Forward, |r| Relay::Answer(r.3));
        };
        let key = CallKey::new(call_id, hop.client, hop.far, hop.transport);
        if change.new_call {
            self.metrics.calls_active.inc();
        }
        self.note(st, &msg, bytes, &hop, change.new_call);
        if !tags.is_empty() {
            st.table.tag(&key, tags);
        }
        if let Some((status, reason, plugin, response)) = rejected {
            if st.table.reject(&key, status, &reason, &plugin) {
                self.finish(st, &key, Outcome::Rejected, now);
            }
            return Relay::Answer(response);
        }
        let mut out = None;
        if self.settings.anchor
            && change.ended.is_none()
            && let Some(streams) = &streams
            && st.table.get(&key).is_some()
        {
            out = self.anchor(st, &key, streams, &hop, bytes, &msg);
        }
        if self.settings.anchor
            && let Some(relay) = hop.relay
        {
            out = self
                .nat(st, &hop, relay, out.as_deref().unwrap_or(bytes), &msg)
                .or(out);
        }
        if change.media {
            self.reconcile(st, &key);
            self.recapture(st, &key);
        }
        if let Some(outcome) = change.ended {
            self.finish(st, &key, outcome, now);
        }
        out.map_or(Relay::Forward, Relay::Rewritten)
    }

    /// Bytes of a stream that went on without being observed as a message (see
    /// `sip::stream`): reported like a malformed message, once per run.
    pub fn on_unobserved(&self, bytes: &[u8], why: &Unobserved, hop: Hop) {
        match why {
            Unobserved::KeepAlive | Unobserved::Continued => {}
            Unobserved::Unframable(e) => self.malformed(bytes, e, &hop),
            Unobserved::Junk => self.malformed(bytes, &"not a SIP message", &hop),
            Unobserved::TooLarge(total) => self.malformed(
                bytes,
                &format!(
                    "message of {total} bytes is larger than {} bytes",
                    message::MAX_MESSAGE
                ),
                &hop,
            ),
        }
    }

    fn malformed(&self, bytes: &[u8], error: &dyn std::fmt::Display, hop: &Hop) {
        self.metrics.malformed.inc();
        let start = &bytes[message::leading_crlf(bytes)..];
        let head: String = String::from_utf8_lossy(&start[..start.len().min(60)])
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        warn!(service = "sip", src = %hop.src(), dst = %hop.dst(), transport = hop.transport,
            bytes = bytes.len(), error = %error, start = %head,
            "malformed SIP message forwarded untouched");
    }

    /// Allocate anchors for the sender's streams and rewrite the SDP to announce them.
    fn anchor(
        &self,
        st: &mut State,
        key: &CallKey,
        streams: &[MediaStream],
        hop: &Hop,
        bytes: &[u8],
        msg: &SipMessage,
    ) -> Option<Vec<u8>> {
        let ports = self.ports.as_ref()?;
        let call_id = key.call_id.as_str();
        let media = st.media.entry(key.clone()).or_default();
        if media.gateway_ips.is_none() {
            media.gateway_ips = Some((
                local_ip_towards(hop.client.ip())?,
                local_ip_towards(hop.far.ip())?,
            ));
        }
        for s in streams
            .iter()
            .filter(|s| s.port != 0 && s.addr.is_some_and(|a| a.is_ipv4()))
        {
            if media.anchors.contains_key(&(hop.from, s.index)) {
                continue;
            }
            match ports.allocate() {
                Ok(a) => {
                    media.anchors.insert((hop.from, s.index), a);
                }
                Err(e) => {
                    warn!(service = "sip", call_id, error = %e, "media not anchored");
                    return None;
                }
            }
        }
        let reps = replacements(streams, hop.from, media);
        if reps.is_empty() {
            return None;
        }
        let body = std::str::from_utf8(&msg.body).ok()?;
        let rewritten = sdp::rewrite(body, &reps);
        debug!(service = "sip", call_id, side = hop.from.name(), anchors = ?reps, "SDP anchored");
        message::with_body(bytes, rewritten.as_bytes())
    }

    /// Anchored signalling: the client's Via and Contact point at the relay on the way out
    /// and are restored on the way in (`nat`).
    fn nat(
        &self,
        st: &mut State,
        hop: &Hop,
        relay: SocketAddr,
        bytes: &[u8],
        msg: &SipMessage,
    ) -> Option<Vec<u8>> {
        let is_request = matches!(msg.start, StartLine::Request { .. });
        let relay = relay.to_string();
        match hop.from {
            Side::Client => {
                let (out, orig) = nat::outgoing(bytes, &relay, is_request);
                let saved = st.nat.entry((hop.client, hop.far)).or_default();
                if orig.via.is_some() {
                    saved.via = orig.via;
                }
                if orig.contact.is_some() {
                    saved.contact = orig.contact;
                }
                out
            }
            Side::Far => {
                let saved = st.nat.get(&(hop.client, hop.far))?;
                nat::incoming(bytes, &relay, saved, is_request)
            }
        }
    }

    /// Bring the kernel's flows in line with the call's current offer/answer.
    fn reconcile(&self, st: &mut State, key: &CallKey) {
        let State { table, media, .. } = st;
        let Some(call) = table.get(key) else {
            return;
        };
        let call_id = key.call_id.as_str();
        let m = media.entry(key.clone()).or_default();
        let planned = plan(call, m, self.settings.anchor);
        let (kept, gone): (Vec<PlannedFlow>, Vec<PlannedFlow>) = m
            .flows
            .drain(..)
            .partition(|f| planned.iter().any(|p| p.spec == f.spec));
        drop(kept);
        for f in &gone {
            if let Some(s) = self.plane.stats(&f.spec) {
                m.finished.push((f.clone(), s));
            }
        }
        let gone_specs: Vec<_> = gone.iter().map(|f| f.spec).collect();
        self.plane.remove(&gone_specs);
        let specs: Vec<_> = planned.iter().map(|f| f.spec).collect();
        if let Err(e) = self.plane.install(&specs) {
            warn!(service = "sip", call_id, error = %e, "media flows not installed; media follows the stack");
        }
        if m.installed_at_ns == 0 {
            m.installed_at_ns = self.plane.now_ns();
        }
        let list: Vec<String> = planned
            .iter()
            .map(|f| {
                let kind = if f.spec.rtcp { "rtcp" } else { "rtp" };
                match f.spec.rewrite {
                    Some(r) => format!(
                        "{kind} {}->{} => {}->{}",
                        f.spec.from, f.spec.to, r.from, r.to
                    ),
                    None => format!("{kind} {}->{}", f.spec.from, f.spec.to),
                }
            })
            .collect();
        info!(service = "sip", call_id, flows = planned.len(), anchored = self.settings.anchor,
            learned = %list.join(", "), "media flows installed");
        if self.settings.anchor {
            m.restart_relays(call);
        }
        m.flows = planned;
        self.metrics
            .set_flows(media.values().map(|m| m.flows.len()).sum());
    }

    /// End a call: collect its media statistics, remove its flows, log the record.
    fn finish(&self, st: &mut State, key: &CallKey, outcome: Outcome, now: Instant) {
        let Some(call) = st.table.take(key) else {
            return;
        };
        let mut m = st.media.remove(key).unwrap_or_default();
        self.metrics.calls_active.dec();
        self.metrics.ended(outcome).inc();
        let mut all = std::mem::take(&mut m.finished);
        for f in &m.flows {
            let s = self.plane.stats(&f.spec).unwrap_or_default();
            all.push((f.clone(), s));
        }
        let specs: Vec<_> = m.flows.iter().map(|f| f.spec).collect();
        self.plane.remove(&specs);
        drop(m);
        self.metrics
            .set_flows(st.media.values().map(|m| m.flows.len()).sum());
        for (f, s) in all.iter().filter(|(f, _)| !f.spec.rtcp) {
            self.metrics.stream_ended(f.up, s);
        }
        for (f, s) in &all {
            calls::log_stream(&call, f, s);
        }
        let dir = |up: bool| {
            let v: Vec<(FlowStats, u32, Option<&str>)> = all
                .iter()
                .filter(|(f, _)| f.up == up && !f.spec.rtcp)
                .map(|(f, s)| (*s, f.spec.clock_rate, f.codec.as_deref()))
                .collect();
            report::direction(&v)
        };
        calls::log_call(
            &call,
            outcome,
            now,
            !all.is_empty(),
            &dir(true),
            &dir(false),
        );
        let record = calls::record(&call, Some(outcome.name()), now, calls::media_stats(&all));
        st.recent.push(record);
        st.ladders
            .end(&call.call_id, outcome.name(), observer_calls::figures(&all));
    }

    /// Calls in progress (with live media counters) and recently ended.
    pub fn report(&self) -> Result<CallsReport, AdminError> {
        let st = self
            .state
            .lock()
            .map_err(|_| AdminError::Failed("the call table is unavailable".into()))?;
        let now = Instant::now();
        let active = st
            .table
            .calls()
            .map(|c| {
                let flows: Vec<(PlannedFlow, FlowStats)> = st
                    .media
                    .get(&c.key())
                    .map(|m| {
                        m.flows
                            .iter()
                            .map(|f| (f.clone(), self.plane.stats(&f.spec).unwrap_or_default()))
                            .collect()
                    })
                    .unwrap_or_default();
                calls::record(c, None, now, calls::media_stats(&flows))
            })
            .collect();
        Ok(CallsReport {
            active,
            recent: st.recent.to_vec(),
        })
    }

    /// Periodic work: setup and RTP idle timeouts, orphaned kernel flows.
    pub fn tick(&self) {
        let now = Instant::now();
        if let Some(screen) = &self.screen {
            screen.expire(now);
        }
        let now_ns = self.plane.now_ns();
        let Ok(mut guard) = self.state.lock() else {
            return;
        };
        let st = &mut *guard;
        st.ticks += 1;
        for id in st.table.expire(now, self.settings.setup_timeout) {
            self.finish(st, &id, Outcome::SetupTimeout, now);
        }
        let idle_ns = self.settings.rtp_idle.as_nanos() as u64;
        // Reading every flow's counters is a syscall per flow: with long idle timeouts a
        // coarser check is as good and costs a fifth.
        let every = if self.settings.rtp_idle > Duration::from_secs(10) {
            5
        } else {
            1
        };
        let silent: Vec<CallKey> = if st.ticks % every != 0 {
            Vec::new()
        } else {
            st.media
                .iter()
                .filter(|(_, m)| !m.flows.is_empty())
                .filter(|(_, m)| {
                    let last = m
                        .flows
                        .iter()
                        .filter_map(|f| self.plane.stats(&f.spec))
                        .map(|s| s.counters.last_seen_ns)
                        .max()
                        .unwrap_or(0)
                        .max(m.installed_at_ns);
                    now_ns.saturating_sub(last) > idle_ns
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in silent {
            self.finish(st, &id, Outcome::RtpTimeout, now);
        }
        st.table.expire_registers(now, Duration::from_secs(64));
        st.bindings.retain(|_, until| *until > now);
        let State {
            nat,
            table,
            bindings,
            ..
        } = st;
        nat.retain(|k, _| {
            bindings.contains_key(k) || table.calls().any(|c| (c.client, c.far) == *k)
        });
        if st.ticks % 10 == 0 {
            let known: Vec<_> = st
                .media
                .values()
                .flat_map(|m| m.flows.iter().map(|f| f.spec))
                .collect();
            let n = self.plane.expire_orphans(&known, idle_ns);
            if n > 0 {
                info!(
                    service = "sip",
                    flows = n,
                    "removed idle media flows no call owns (left by an earlier daemon)"
                );
            }
        }
    }

    /// End every call (daemon stopping): records are logged, kernel flows removed.
    pub fn shutdown(&self) {
        let now = Instant::now();
        if let Ok(mut guard) = self.state.lock() {
            let st = &mut *guard;
            let ids: Vec<CallKey> = st.table.calls().map(Call::key).collect();
            for id in ids {
                self.finish(st, &id, Outcome::Shutdown, now);
            }
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.shutdown();
    }
}
