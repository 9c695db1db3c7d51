//! The observer's per-call views: each message goes on its call's ladder, into the call's
//! capture when one runs, and into the live feed ([`Observer::note`]); frames the kernel copies
//! for captured flows arrive through [`Observer::on_frames`]. The admin API reads a call back
//! (`show`), starts and stops its capture and takes its pcap through [`CallsAdmin`].
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use super::{Observer, State};
use crate::{
    admin::{
        AdminError, CallsAdmin,
        api::CallsReport,
        calls_api::{CallShow, CaptureStatus, LadderMessage, StreamFigures},
    },
    live::{Record, kind},
    rtp::{FlowSpec, FlowStats, capture::Frame, report},
    sip::{
        dialog::{CallKey, Side},
        hop::Hop,
        ladder::RawMessage,
        media::PlannedFlow,
        message::{SipMessage, StartLine},
    },
};

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The ladder's and the API's spelling of a direction.
fn direction(client_to_far: bool) -> &'static str {
    if client_to_far {
        "client->far"
    } else {
        "far->client"
    }
}

/// Per-direction figures of a call's RTP flows (RTCP is not media).
pub(super) fn figures(flows: &[(PlannedFlow, FlowStats)]) -> Vec<StreamFigures> {
    flows
        .iter()
        .filter(|(f, _)| !f.spec.rtcp)
        .map(|(f, s)| {
            let r = report::direction(&[(*s, f.spec.clock_rate, f.codec.as_deref())]);
            StreamFigures {
                direction: direction(f.up).into(),
                src: f.spec.from.to_string(),
                dst: f.spec.to.to_string(),
                kind: f.kind.clone(),
                codec: f.codec.clone(),
                packets: r.packets,
                fast_path_packets: r.fast_path_packets,
                bytes: r.bytes,
                lost: r.lost,
                loss_pct: r.loss_pct,
                jitter_ms: r.jitter_ms,
                mos: r.mos,
            }
        })
        .collect()
}

impl Observer {
    /// One message of a call: onto its ladder, into its capture, into the live feed.
    pub(super) fn note(
        &self,
        st: &mut State,
        msg: &SipMessage,
        bytes: &[u8],
        hop: &Hop,
        new_call: bool,
    ) {
        let Some(call_id) = msg.call_id.as_deref() else {
            return;
        };
        // A REGISTER or OPTIONS with the dashboard off: nothing to keep.
        if self.live.is_none()
            && !st.ladders.wants(call_id, new_call)
            && !st.captures.is_active(call_id)
        {
            return;
        }
        let ts_us = unix_us();
        let (label, status) = match &msg.start {
            StartLine::Request { method, .. } => (method.to_string(), method.to_string()),
            StartLine::Response { code, reason } => (format!("{code} {reason}"), code.to_string()),
        };
        let cseq = msg
            .cseq
            .as_ref()
            .map(|(n, m)| format!("{n} {m}"))
            .unwrap_or_default();
        let up = hop.from == Side::Client;
        let party = |p: &Option<super::message::Party>| {
            p.as_ref().map(|p| p.uri.clone()).unwrap_or_default()
        };
        let m = LadderMessage {
            ts_ms: ts_us / 1_000,
            direction: direction(up).into(),
            src: hop.src().to_string(),
            dst: hop.dst().to_string(),
            transport: hop.transport.into(),
            label: label.clone(),
            cseq: cseq.clone(),
            bytes: bytes.len() as u64,
        };
        let raw = RawMessage {
            ts_us,
            src: hop.src(),
            dst: hop.dst(),
            bytes: bytes.to_vec(),
        };
        st.ladders.record(
            call_id,
            new_call,
            &party(&msg.from),
            &party(&msg.to),
            m,
            raw,
        );
        if !st.captures.sip(call_id, ts_us, hop.src(), hop.dst(), bytes) {
            self.capture_full(st, call_id);
        }
        if let Some(live) = &self.live {
            live.publish(Record {
                ts_ms: ts_us / 1_000,
                service: kind::SIP.into(),
                client: hop.client.to_string(),
                host: call_id.into(),
                what: label,
                status,
                bytes: bytes.len() as u64,
                id: call_id.into(),
                direction: if up { "client->far" } else { "far->client" }.into(),
                detail: vec![
                    ("src".into(), hop.src().to_string()),
                    ("dst".into(), hop.dst().to_string()),
                    ("cseq".into(), cseq),
                    ("transport".into(), hop.transport.into()),
                ],
                ..Record::default()
            });
        }
    }

    /// The kernel flows of every call leg with this Call-ID.
    fn flows_of(st: &State, call_id: &str) -> Vec<PlannedFlow> {
        st.media
            .iter()
            .filter(|(k, _)| k.call_id == call_id)
            .flat_map(|(_, m)| m.flows.iter().cloned())
            .collect()
    }

    /// After a (re-)negotiation: a captured call's new flows are captured too.
    pub(super) fn recapture(&self, st: &mut State, key: &CallKey) {
        if !st.captures.is_active(&key.call_id) {
            return;
        }
        let flows = Self::flows_of(st, &key.call_id);
        self.mark(&flows, true, &key.call_id);
        st.captures
            .add_flows(&key.call_id, flows.iter().map(|f| (f.spec.from, f.spec.to)));
    }

    fn mark(&self, flows: &[PlannedFlow], on: bool, call_id: &str) {
        let specs: Vec<FlowSpec> = flows.iter().map(|f| f.spec).collect();
        if let Err(e) = self.plane.capture(&specs, on) {
            warn!(service = "sip", call_id, error = %e, "capture flag not set on the media flows");
        }
    }

    /// A capture reached its bound: the kernel stops copying its flows.
    fn capture_full(&self, st: &mut State, call_id: &str) {
        let flows = Self::flows_of(st, call_id);
        self.mark(&flows, false, call_id);
        if let Some(s) = st.captures.stop(call_id, "") {
            warn!(service = "sip", call_id, packets = s.packets, bytes = s.bytes,
                reason = %s.stopped, "call capture stopped at its bound");
        }
    }

    /// Frames the kernel copied for captured flows.
    pub fn on_frames(&self, frames: Vec<Frame>) {
        let Ok(mut guard) = self.state.lock() else {
            return;
        };
        let st = &mut *guard;
        for f in frames {
            if let Some(full) = st.captures.rtp(f.ts_us, &f.data, f.len) {
                self.capture_full(st, &full);
            }
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, AdminError> {
        self.state
            .lock()
            .map_err(|_| AdminError::Failed("the call table is unavailable".into()))
    }
}

/// `velocache calls` and one call's page through the admin API.
impl CallsAdmin for Observer {
    fn calls(&self) -> futures::future::BoxFuture<'_, Result<CallsReport, AdminError>> {
        let report = self.report();
        Box::pin(async move { report })
    }

    fn show(&self, call_id: &str) -> Result<CallShow, AdminError> {
        let st = self.lock()?;
        let ladder = st.ladders.get(call_id);
        let call = st.table.calls().find(|c| c.call_id == call_id);
        if ladder.is_none() && call.is_none() {
            return Err(AdminError::NotFound(format!(
                "no call {call_id} in progress or among the recently ended"
            )));
        }
        let streams = match call {
            Some(_) => {
                let flows: Vec<(PlannedFlow, FlowStats)> = Self::flows_of(&st, call_id)
                    .into_iter()
                    .map(|f| {
                        let s = self.plane.stats(&f.spec).unwrap_or_default();
                        (f, s)
                    })
                    .collect();
                figures(&flows)
            }
            None => ladder.map(|l| l.streams.clone()).unwrap_or_default(),
        };
        let state = match (call, ladder.and_then(|l| l.outcome.clone())) {
            (Some(c), _) => super::calls::record(c, None, Instant::now(), Vec::new()).state,
            (None, Some(outcome)) => outcome,
            (None, None) => String::new(),
        };
        Ok(CallShow {
            call_id: call_id.to_string(),
            state,
            from: call
                .map(|c| c.from.clone())
                .or_else(|| ladder.map(|l| l.from.clone()))
                .unwrap_or_default(),
            to: call
                .map(|c| c.to.clone())
                .or_else(|| ladder.map(|l| l.to.clone()))
                .unwrap_or_default(),
            messages: ladder
                .map(|l| l.messages.iter().cloned().collect())
                .unwrap_or_default(),
            omitted: ladder.map_or(0, |l| l.omitted),
            streams,
            capture: st.captures.status(call_id),
        })
    }

    fn capture_start(&self, call_id: &str) -> Result<CaptureStatus, AdminError> {
        let mut guard = self.lock()?;
        let st = &mut *guard;
        if !st.table.calls().any(|c| c.call_id == call_id) {
            return Err(AdminError::NotFound(format!(
                "no call {call_id} in progress (only calls in progress can be captured)"
            )));
        }
        let fresh = st.captures.status(call_id).is_none();
        st.captures
            .start(call_id)
            .map_err(|e| AdminError::BadRequest(e.to_string()))?;
        if fresh {
            // A capture started in mid-call opens with the call's setup, as it was received.
            let setup = st
                .ladders
                .get(call_id)
                .map(|l| l.raw.clone())
                .unwrap_or_default();
            for m in setup {
                st.captures.sip(call_id, m.ts_us, m.src, m.dst, &m.bytes);
            }
        }
        let flows = Self::flows_of(st, call_id);
        self.mark(&flows, true, call_id);
        st.captures
            .add_flows(call_id, flows.iter().map(|f| (f.spec.from, f.spec.to)));
        info!(
            service = "sip",
            call_id,
            flows = flows.len(),
            "call capture started"
        );
        st.captures
            .status(call_id)
            .ok_or_else(|| AdminError::Failed("the capture vanished".into()))
    }

    fn capture_stop(&self, call_id: &str) -> Result<CaptureStatus, AdminError> {
        let mut guard = self.lock()?;
        let st = &mut *guard;
        let flows = Self::flows_of(st, call_id);
        self.mark(&flows, false, call_id);
        let status = st
            .captures
            .stop(call_id, "stopped")
            .ok_or_else(|| AdminError::NotFound(format!("no capture of {call_id}")))?;
        info!(
            service = "sip",
            call_id,
            packets = status.packets,
            rtp_packets = status.rtp_packets,
            bytes = status.bytes,
            "call capture stopped"
        );
        Ok(status)
    }

    fn pcap(&self, call_id: &str) -> Result<Vec<u8>, AdminError> {
        self.lock()?
            .captures
            .pcap(call_id)
            .ok_or_else(|| AdminError::NotFound(format!("no capture of {call_id}")))
    }
}

#[cfg(test)]
#[path = "observer_calls_tests.rs"]
mod tests;
