//! SIP: observe every call's signalling, learn its media, and hand the media to the kernel.
//!
//! SIP over UDP and TCP is intercepted by the classifier and relayed to its original
//! destination unchanged (observation mode): no caching, no rewriting — except SDP bodies when
//! `[sip] anchor_media` is on (then, like the kernel's SIP NAT helper, the client's Via
//! and Contact are pointed at the gateway too). Every message passes the [`Observer`], which logs one JSON line
//! per message (`call_id`, `method` or `status`, `cseq`, `from`, `to`, `src`, `dst`,
//! `transport`), keeps a record per call (setup time, post-dial delay, duration, final failure
//! code and reason, who hung up) and per REGISTER transaction, and installs the media flows the
//! offer/answer negotiated into the RTP fast path (`crate::rtp`, slot `Rtp` of the datapath's
//! XDP dispatcher, claimed while the service is built) when the call is answered. When
//! the call ends (BYE, CANCEL, failure, RTP idle timeout) the flows are removed and the record
//! is logged with per-direction media statistics (packets, loss %, jitter ms, MOS).
//!
//! Malformed SIP or SDP is logged and forwarded untouched: observation must never break a call.
//!
//! With plugins loaded, every parsed message (requests and responses) is also shown to the
//! plugins with the `sip` hook: the fields they return go on the call's record (`velocache
//! calls`, the `call` line's `tags`), and an INVITE one of them rejects is answered by the
//! gateway itself, over the transport it came on, and never forwarded (the call is recorded as
//! `rejected`, ended by that plugin).
//!
//! # Layout
//! - `message`: rsip parsing with unfolding and compact-form normalisation, a header-scan
//!   fallback, `Content-Length`.
//! - `stream`: SIP over TCP cut into messages, resynchronising after bytes that are not SIP.
//! - `sdp`: media streams of an SDP body; line-level rewriting for anchoring.
//! - `dialog`: the call and REGISTER state machine (pure).
//! - `media`: offer/answer → kernel flows; anchors and SDP replacements.
//! - `nat`: Via/Contact/Request-URI rewriting for anchored (NAT'd) clients.
//! - `observer`: the per-message pipeline, timeouts, call records; `hop`: one message's way and
//!   what the relay does with it ([`Relay`]).
//! - `hook`: the plugins' `sip` hook ([`SipHook`]) and the responses to INVITEs they reject;
//!   `plugins`: the plugin runtime as that hook.
//! - `calls`: calls in progress and recently ended, for `velocache calls`.
//! - `ladder`: every message of a call (bounded), for `velocache calls show` and the web page.
//! - `capture`, `pcap`: on-demand capture of one call (its SIP messages and the RTP frames the
//!   kernel copies for it) and the pcap file it becomes.
//! - `udp`, `tcp`: the relays that carry the messages past the observer.
//! - `metrics`: `velocache_sip_*`.

mod calls;
mod capture;
pub mod dialog;
pub mod hook;
mod hop;
mod ladder;
mod media;
pub mod message;
mod metrics;
pub mod nat;
mod observer;
mod pcap;
mod plugins;
pub mod sdp;
pub mod stream;
mod tcp;
mod udp;

use std::{sync::Arc, time::Duration};

use prometheus_client::registry::Registry;
use tracing::{error, info, warn};
use velocache_common::xdp::XdpSlot;

pub use hook::SipHook;
pub use metrics::Metrics;
pub use observer::{Hop, Observer, Relay, Settings};
pub use tcp::SipTcp;
pub use udp::SipTap;

use crate::{
    rtp::{FastPath, MediaPlane, NoMediaPlane, PortPool, RtpError},
    service::{Handlers, ServiceContext, ServiceError, ServiceFactory},
};

/// How often timeouts are checked.
const TICK: Duration = Duration::from_secs(1);

/// The SIP service, for the wiring; `hook` shows every message to the plugins (none: no
/// plugins loaded).
pub fn factory(hook: Option<Arc<dyn SipHook>>) -> Box<dyn ServiceFactory> {
    Box::new(SipFactory(hook))
}

struct SipFactory(Option<Arc<dyn SipHook>>);

impl ServiceFactory for SipFactory {
    fn service(&self) -> velocache_common::Service {
        velocache_common::Service::Sip
    }

    fn build(
        self: Box<Self>,
        ctx: &ServiceContext,
        registry: &mut Registry,
    ) -> Result<Handlers, ServiceError> {
        Ok(handlers(ctx, registry, self.0))
    }
}

/// The SIP service's handlers: observation relays for UDP and TCP, the RTP fast path (the
/// [`XdpSlot::Rtp`] slot claimed on the media interfaces), and the periodic timeout task.
/// Everything is torn down (records of calls in progress logged, kernel flows removed) when the
/// daemon drops the handlers at shutdown; the XDP owner detaches the slot and removes the pins.
pub fn handlers(
    ctx: &ServiceContext,
    registry: &mut Registry,
    hook: Option<Arc<dyn SipHook>>,
) -> Handlers {
    let cfg = &ctx.config.sip;
    let metrics = metrics::Metrics::register(registry);
    let mut ring = None;
    let plane: Arc<dyn MediaPlane> = if cfg.media_fast_path {
        let interfaces = if cfg.media_interfaces.is_empty() {
            ctx.config.datapath.lan_interfaces.clone()
        } else {
            cfg.media_interfaces.clone()
        };
        if interfaces.is_empty() {
            warn!(
                service = "sip",
                "no media interfaces: RTP follows the stack, calls carry no media statistics"
            );
            Arc::new(NoMediaPlane)
        } else {
            // The slot is attached when the kernel side starts; its maps are ours from now on.
            let fast_path = ctx
                .xdp
                .claim(XdpSlot::Rtp, &interfaces)
                .map_err(RtpError::from)
                .and_then(FastPath::new);
            match fast_path {
                Ok(fp) => {
                    ring = fp.take_capture();
                    Arc::new(fp)
                }
                Err(e) => {
                    // Observation still works; media simply follows the stack.
                    error!(service = "sip", error = %e, "RTP fast path unavailable; media follows the stack");
                    Arc::new(NoMediaPlane)
                }
            }
        }
    } else {
        info!(service = "sip", "RTP fast path off by configuration");
        Arc::new(NoMediaPlane)
    };
    let ports = cfg
        .anchor_media
        .then(|| PortPool::new(cfg.anchor_port_min, cfg.anchor_port_max));
    let mut observer = Observer::new(
        Settings {
            anchor: cfg.anchor_media,
            rtp_idle: cfg.rtp_idle_timeout_secs.get(),
            setup_timeout: cfg.setup_timeout_secs.get(),
            max_calls: cfg.max_calls,
        },
        plane,
        ports,
        metrics,
    )
    .with_live(ctx.admin.live());
    if let Some(hook) = hook {
        observer = observer.with_hook(hook);
    }
    let observer = Arc::new(observer);
    // The task holds only a weak reference: it ends when the daemon drops the handlers.
    ctx.admin.register_calls(observer.clone());
    match ring {
        Some(Ok(ring)) => spawn_capture(ring, Arc::downgrade(&observer)),
        Some(Err(e)) => {
            warn!(service = "sip", error = %e, "call capture cannot copy RTP from the kernel")
        }
        None => {}
    }
    let weak = Arc::downgrade(&observer);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tick.tick().await;
            match weak.upgrade() {
                Some(o) => o.tick(),
                None => return,
            }
        }
    });
    let idle = ctx.config.datapath.udp_idle_timeout_secs.get();
    Handlers {
        tcp: Arc::new(SipTcp::new(
            observer.clone(),
            ctx.config.datapath.connect_timeout_ms.get(),
            ctx.flows.clone(),
        )),
        udp: Arc::new(udp::relay(observer, idle, ctx.flows.clone())),
    }
}

/// The task that hands the frames the kernel copies for captured calls to the observer; it ends
/// with the observer.
fn spawn_capture(mut ring: crate::rtp::capture::CaptureRing, weak: std::sync::Weak<Observer>) {
    tokio::spawn(async move {
        loop {
            let mut frames = Vec::new();
            if let Err(e) = ring.drain(|f| frames.push(f)).await {
                warn!(service = "sip", error = %e, "call capture: the kernel's copies cannot be read");
                return;
            }
            match weak.upgrade() {
                Some(o) => o.on_frames(frames),
                None => return,
            }
        }
    });
}
