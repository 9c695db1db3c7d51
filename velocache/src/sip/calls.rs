//! Call records: the `rtp stream` and `call` log lines `Observer::finish` writes when a call
//! ends, and the SIP observer as the admin API sees it (`velocache calls`) — calls in progress,
//! read from the call table with the kernel's live media counters, and the most recent ended
//! calls, whose records `finish` keeps here as it logs them.
use std::{
    collections::VecDeque,
    net::SocketAddr,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tracing::info;

use super::{
    dialog::{Call, CallState, Outcome},
    media::PlannedFlow,
    message::{SipMessage, StartLine},
};
use crate::{
    admin::api::{CallRecord, MediaStats},
    rtp::{FlowStats, report},
};

/// Ended calls kept for `velocache calls`.
const RECENT: usize = 100;

/// The most recent ended calls, newest first.
#[derive(Debug, Default)]
pub struct Recent(VecDeque<CallRecord>);

impl Recent {
    /// Remember an ended call (forgetting the oldest beyond [`RECENT`]).
    pub fn push(&mut self, record: CallRecord) {
        self.0.push_front(record);
        self.0.truncate(RECENT);
    }

    /// Newest first.
    pub fn to_vec(&self) -> Vec<CallRecord> {
        self.0.iter().cloned().collect()
    }
}

fn state_name(state: CallState) -> &'static str {
    match state {
        CallState::Calling => "calling",
        CallState::Proceeding => "proceeding",
        CallState::Early => "ringing",
        CallState::Answered => "answered",
        CallState::Confirmed => "confirmed",
    }
}

/// The media figures of a call's RTP flows (RTCP is not media), one entry per flow.
pub fn media_stats(flows: &[(PlannedFlow, FlowStats)]) -> Vec<MediaStats> {
    flows
        .iter()
        .filter(|(f, _)| !f.spec.rtcp)
        .map(|(f, s)| {
            let r = report::direction(&[(*s, f.spec.clock_rate, f.codec.as_deref())]);
            MediaStats {
                direction: if f.up { "client->far" } else { "far->client" }.into(),
                kind: f.kind.clone(),
                codec: f.codec.clone(),
                packets: r.packets,
                loss_pct: Some(r.loss_pct),
                jitter_ms: Some(r.jitter_ms),
                mos: r.mos,
            }
        })
        .collect()
}

/// A call as `velocache calls` shows it; `ended` is its outcome once over.
pub fn record(
    call: &Call,
    ended: Option<&str>,
    now: Instant,
    media: Vec<MediaStats>,
) -> CallRecord {
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, ms);
    CallRecord {
        call_id: call.call_id.clone(),
        from: call.from.clone(),
        to: call.to.clone(),
        client: call.client.to_string(),
        far: call.far.to_string(),
        transport: call.transport.to_string(),
        state: ended.unwrap_or(state_name(call.state)).to_string(),
        started_at_ms: Some(unix_ms.saturating_sub(ms(now.duration_since(call.invited_at)))),
        setup_ms: call
            .answered_at
            .map(|t| ms(t.duration_since(call.invited_at))),
        pdd_ms: call
            .early_at
            .or(call.answered_at)
            .map(|t| ms(t.duration_since(call.invited_at))),
        duration_ms: call.answered_at.map(|a| ms(now.duration_since(a))),
        final_status: call.final_status.as_ref().map(|(c, _)| *c),
        reason: call.final_status.as_ref().map(|(_, r)| r.clone()),
        ended_by: call.ended_by.clone(),
        media,
        tags: call.tags.iter().cloned().collect(),
    }
}

/// A call's plugin tags as one JSON object (the `call` line's `tags`, which the JSON log
/// layer writes as an object); `None` when there are none.
fn tags_field(call: &Call) -> Option<String> {
    if call.tags.is_empty() {
        return None;
    }
    let object: serde_json::Map<String, serde_json::Value> = call
        .tags
        .iter()
        .map(|(n, v)| (n.clone(), serde_json::Value::from(v.as_str())))
        .collect();
    Some(serde_json::Value::Object(object).to_string())
}

/// The `rtp stream` line of one flow at the end of its call.
pub fn log_stream(call: &Call, f: &PlannedFlow, s: &FlowStats) {
    let q = &s.quality;
    let r = report::direction(&[(*s, f.spec.clock_rate, f.codec.as_deref())]);
    info!(service = "sip", call_id = %call.call_id,
        direction = if f.up { "up" } else { "down" },
        kind = if f.spec.rtcp { "rtcp" } else { "rtp" },
        media = %f.kind, index = f.index as u64,
        src = %f.spec.from, dst = %f.spec.to,
        rewritten_to = f.spec.rewrite.map(|r| r.to.to_string()),
        codec = f.codec.as_deref(),
        packets = s.counters.packets, bytes = s.counters.bytes,
        fast_path_packets = s.counters.redirected, passed_to_stack = s.counters.passed,
        expected = q.expected(), lost = q.lost(), loss_pct = r.loss_pct,
        jitter_ms = r.jitter_ms, max_jitter_ms = r.max_jitter_ms,
        ssrc = format!("0x{:08x}", q.ssrc), ssrc_changes = q.ssrc_changes,
        duplicates = q.duplicates, late = q.late, srtp = f.spec.srtp,
        "rtp stream");
}

/// The `call` record, as one log line.
pub fn log_call(
    call: &Call,
    outcome: Outcome,
    now: Instant,
    has_media: bool,
    up: &report::DirectionReport,
    down: &report::DirectionReport,
) {
    let ms = |d: Duration| d.as_millis() as u64;
    let setup_ms = call.answered_at.map(|a| ms(a - call.invited_at));
    let pdd_ms = call.early_at.map(|a| ms(a - call.invited_at));
    let duration_ms = call.answered_at.map(|a| ms(now.duration_since(a)));
    let (status, reason) = match &call.final_status {
        Some((c, r)) => (Some(*c), Some(r.as_str())),
        None => (None, None),
    };
    let (up, down) = if has_media {
        (Some(up), Some(down))
    } else {
        (None, None)
    };
    info!(service = "sip", call_id = %call.call_id, from = %call.from, to = %call.to,
        caller = call.caller.name(), client = %call.client, far = %call.far,
        transport = call.transport, outcome = outcome.name(), status, reason,
        ended_by = call.ended_by.as_deref(), setup_ms, pdd_ms, duration_ms,
        total_ms = ms(now.duration_since(call.invited_at)), reinvites = call.reinvites,
        up_packets = up.map(|r| r.packets), up_lost = up.map(|r| r.lost),
        up_loss_pct = up.map(|r| r.loss_pct), up_jitter_ms = up.map(|r| r.jitter_ms),
        up_mos = up.and_then(|r| r.mos), up_fast_path_packets = up.map(|r| r.fast_path_packets),
        up_ssrc_changes = up.map(|r| r.ssrc_changes),
        down_packets = down.map(|r| r.packets), down_lost = down.map(|r| r.lost),
        down_loss_pct = down.map(|r| r.loss_pct), down_jitter_ms = down.map(|r| r.jitter_ms),
        down_mos = down.and_then(|r| r.mos),
        down_fast_path_packets = down.map(|r| r.fast_path_packets),
        down_ssrc_changes = down.map(|r| r.ssrc_changes),
        tags = tags_field(call).as_deref(),
        "call");
}

/// The `sip` line every observed message gets.
pub fn log_message(msg: &SipMessage, src: SocketAddr, dst: SocketAddr, transport: &str) {
    let call_id = msg.call_id.as_deref().unwrap_or("");
    let cseq = msg
        .cseq
        .as_ref()
        .map(|(n, m)| format!("{n} {m}"))
        .unwrap_or_default();
    let from = msg.from.as_ref().map(|p| p.uri.as_str()).unwrap_or("");
    let to = msg.to.as_ref().map(|p| p.uri.as_str()).unwrap_or("");
    match &msg.start {
        StartLine::Request { method, uri } => {
            info!(service = "sip", call_id, method = %method, uri = %uri, cseq = %cseq,
                from, to, src = %src, dst = %dst, transport,
                parser = msg.parser, "sip");
        }
        StartLine::Response { code, reason } => {
            info!(service = "sip", call_id, status = *code, reason = %reason, cseq = %cseq,
                from, to, src = %src, dst = %dst, transport,
                parser = msg.parser, "sip");
        }
    }
}
