//! The plugins' `sip` hook: every message the observer parses is shown to them, and an INVITE
//! they reject is answered by the gateway itself.
//!
//! Data enters as a parsed message with its raw bytes and its hop; it leaves as a [`Screened`]
//! verdict for the observer: the fields to add to the call's record, and — for an INVITE a
//! plugin rejected — the response to send back to the caller instead of forwarding anything.
//! The response is built as RFC 3261 §8.2.6 says a UAS builds one: every `Via` (in order),
//! `From`, `Call-ID` and `CSeq` copied, `To` copied with a tag added when the request had none,
//! `Content-Length: 0`. The INVITE transaction is then the gateway's: a retransmission of that
//! INVITE gets the same response again (the plugins are not asked twice) and the ACK the caller
//! sends for it is absorbed, both for [`ABSORB_FOR`] (Timer H's 64·T1).
//!
//! A reject on any other message, or with a status that is not a final failure (300–699), is
//! logged and ignored. The plugin runtime sits behind [`SipHook`], so the observer is tested with
//! hooks written in Rust.
use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Mutex,
    time::{Duration, Instant},
};

use tracing::{info, warn};

use super::{
    message::{self, SipMessage, StartLine},
    observer::Hop,
};

/// How long the gateway answers retransmissions of an INVITE it rejected, and absorbs their
/// ACKs: Timer H (64·T1, RFC 3261 §17.2.1).
pub const ABSORB_FOR: Duration = Duration::from_secs(32);

/// Rejected INVITE transactions remembered at once. Past it a retransmission is screened again
/// (and answered the same way by a plugin that decides by the request) and its ACK forwarded:
/// a flood of rejected calls cannot grow the daemon without bound.
const MAX_REJECTED: usize = 4096;

/// One message as the plugins see it (the WIT record `sip.message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookMessage {
    /// `Call-ID` (empty when missing).
    pub call_id: String,
    /// The method of a request.
    pub method: Option<String>,
    /// The status of a response.
    pub status: Option<u16>,
    /// The Request-URI of a request.
    pub request_uri: Option<String>,
    /// The From URI.
    pub from: String,
    /// The To URI.
    pub to: String,
    /// Sender, `addr:port`.
    pub src: String,
    /// Receiver, `addr:port`.
    pub dst: String,
    /// `udp` or `tcp`.
    pub transport: String,
    /// Every header as sent (folded lines joined, compact names expanded), in order.
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy).
    pub body: String,
}

/// A plugin's rejection of an INVITE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookReject {
    /// The status to answer with.
    pub status: u16,
    /// Its reason phrase.
    pub reason: String,
    /// Which plugin rejected.
    pub plugin: String,
}

/// What the plugins made of one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookOutcome {
    /// Fields for the call's record (every plugin's, in order).
    pub tags: Vec<(String, String)>,
    /// The first rejection, if a plugin rejected.
    pub reject: Option<HookReject>,
}

/// The plugins with the `sip` hook (`crate::plugins::Plugins` in the daemon). A plugin that
/// fails is the runtime's business: it is disabled and simply contributes nothing.
pub trait SipHook: Send + Sync + 'static {
    /// Whether any plugin has the hook now: when none has, messages are not even converted
    /// for it (a reload may change the answer at any time).
    fn active(&self) -> bool {
        true
    }

    /// Show one message to the plugins (given away: the runtime moves its fields into the
    /// guest's record without copying them again).
    fn on_message(&self, msg: HookMessage) -> HookOutcome;
}

/// What the screen decided for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screened {
    /// Go on; add these fields to the call's record.
    Observe(Vec<(String, String)>),
    /// A new INVITE a plugin rejected: answer the sender with `response`, forward nothing, and
    /// record the call as rejected.
    Reject {
        /// The tags the plugins gave too.
        tags: Vec<(String, String)>,
        /// Status and reason.
        status: u16,
        /// Reason phrase.
        reason: String,
        /// The plugin.
        plugin: String,
        /// The response, ready to send.
        response: Vec<u8>,
    },
    /// A retransmission of a rejected INVITE: answer with the same response again.
    Again(Vec<u8>),
    /// The ACK of a rejected INVITE's response: it ends at the gateway.
    Absorb,
}

/// The response the gateway sent to a rejected INVITE, and when.
type Answered = (Vec<u8>, Instant);

/// The hook, and the INVITE transactions it ended.
pub struct Screen {
    hook: std::sync::Arc<dyn SipHook>,
    /// (Call-ID, CSeq number) of rejected INVITEs → the response and when it was sent.
    rejected: Mutex<HashMap<(String, u32), Answered>>,
}

impl Screen {
    /// A screen over `hook`.
    pub fn new(hook: std::sync::Arc<dyn SipHook>) -> Self {
        Screen {
            hook,
            rejected: Mutex::new(HashMap::new()),
        }
    }

    /// Screen one parsed message (`raw` is its bytes as received).
    pub fn screen(&self, msg: &SipMessage, raw: &[u8], hop: &Hop) -> Screened {
        let method = msg.method();
        let request = matches!(msg.start, StartLine::Request { .. });
        if request
            && matches!(method, Some("INVITE" | "ACK"))
            && let (Some(call_id), Some((cseq, _))) = (&msg.call_id, &msg.cseq)
            && let Ok(map) = self.rejected.lock()
            && let Some((response, _)) = map.get(&(call_id.clone(), *cseq))
        {
            return if method == Some("ACK") {
                Screened::Absorb
            } else {
                Screened::Again(response.clone())
            };
        }
        if !self.hook.active() {
            return Screened::Observe(Vec::new());
        }
        let out = self.hook.on_message(hook_message(msg, raw, hop));
        let Some(reject) = out.reject else {
            return Screened::Observe(out.tags);
        };
        let call_id = msg.call_id.as_deref().unwrap_or("");
        if !request || method != Some("INVITE") {
            warn!(service = "sip", call_id, plugin = %reject.plugin, status = reject.status,
                "a plugin rejected a message that is not an INVITE; ignored");
            return Screened::Observe(out.tags);
        }
        if !(300..700).contains(&reject.status) {
            warn!(service = "sip", call_id, plugin = %reject.plugin, status = reject.status,
                "a plugin rejected an INVITE with a status that is not a final failure; ignored");
            return Screened::Observe(out.tags);
        }
        let reason = phrase(&reject.reason);
        let Some(response) = response(raw, reject.status, &reason) else {
            warn!(service = "sip", call_id, plugin = %reject.plugin,
                "the rejected INVITE has no head to answer; forwarded");
            return Screened::Observe(out.tags);
        };
        if let Some((cseq, _)) = &msg.cseq
            && let Ok(mut map) = self.rejected.lock()
            && map.len() < MAX_REJECTED
        {
            map.insert(
                (call_id.to_string(), *cseq),
                (response.clone(), Instant::now()),
            );
        }
        info!(service = "sip", call_id, plugin = %reject.plugin, status = reject.status,
            reason = %reason, src = %hop.src(), dst = %hop.dst(), transport = hop.transport,
            "INVITE rejected by a plugin; answered by the gateway");
        Screened::Reject {
            tags: out.tags,
            status: reject.status,
            reason,
            plugin: reject.plugin,
            response,
        }
    }

    /// Forget rejected INVITEs older than [`ABSORB_FOR`].
    pub fn expire(&self, now: Instant) {
        if let Ok(mut map) = self.rejected.lock() {
            map.retain(|_, (_, at)| now.duration_since(*at) <= ABSORB_FOR);
        }
    }
}

/// A reason phrase safe on a status line: no control characters, not empty.
fn phrase(reason: &str) -> String {
    let clean: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let clean = clean.trim();
    if clean.is_empty() {
        "Rejected".into()
    } else {
        clean.chars().take(200).collect()
    }
}

/// The message's head: folded lines joined, compact names expanded.
fn head(raw: &[u8]) -> Option<String> {
    let bytes = &raw[message::leading_crlf(raw)..];
    let (len, _) = message::head_end(bytes)?;
    let text = std::str::from_utf8(&bytes[..len]).ok()?;
    let unfolded = message::unfold(text);
    Some(message::normalize_compact(&unfolded).into_owned())
}

/// The head's headers, in order.
fn headers(head: &str) -> Vec<(String, String)> {
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The first header called `name` (any case).
fn first<'a>(all: &'a [(String, String)], name: &str) -> Option<&'a str> {
    all.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `msg` as the plugins see it.
fn hook_message(msg: &SipMessage, raw: &[u8], hop: &Hop) -> HookMessage {
    let (method, status, request_uri) = match &msg.start {
        StartLine::Request { method, uri } => (Some(method.clone()), None, Some(uri.clone())),
        StartLine::Response { code, .. } => (None, Some(*code), None),
    };
    HookMessage {
        call_id: msg.call_id.clone().unwrap_or_default(),
        method,
        status,
        request_uri,
        from: msg.from.as_ref().map(|p| p.uri.clone()).unwrap_or_default(),
        to: msg.to.as_ref().map(|p| p.uri.clone()).unwrap_or_default(),
        src: hop.src().to_string(),
        dst: hop.dst().to_string(),
        transport: hop.transport.to_string(),
        headers: head(raw).as_deref().map(headers).unwrap_or_default(),
        body: String::from_utf8_lossy(&msg.body).into_owned(),
    }
}

/// The response a UAS sends to `request` with `status` (RFC 3261 §8.2.6): `None` when the
/// request has no head or lacks a header a response must copy.
pub fn response(request: &[u8], status: u16, reason: &str) -> Option<Vec<u8>> {
    let head = head(request)?;
    let all = headers(&head);
    let one = |name| first(&all, name);
    let (from, to, call_id, cseq) = (one("From")?, one("To")?, one("Call-ID")?, one("CSeq")?);
    let mut out = format!("SIP/2.0 {status} {reason}\r\n");
    let mut vias = 0;
    for (_, v) in all.iter().filter(|(n, _)| n.eq_ignore_ascii_case("Via")) {
        out.push_str(&format!("Via: {v}\r\n"));
        vias += 1;
    }
    if vias == 0 {
        return None;
    }
    out.push_str(&format!("From: {from}\r\n"));
    let has_tag = to
        .split(';')
        .skip(1)
        .any(|p| p.trim().to_ascii_lowercase().starts_with("tag="));
    if has_tag {
        out.push_str(&format!("To: {to}\r\n"));
    } else {
        // The same tag for every retransmission of the request.
        let mut h = DefaultHasher::new();
        (call_id, cseq, from).hash(&mut h);
        out.push_str(&format!(
            "To: {to};tag=vc{:012x}\r\n",
            h.finish() & 0xffff_ffff_ffff
        ));
    }
    out.push_str(&format!(
        "Call-ID: {call_id}\r\nCSeq: {cseq}\r\nServer: velocache\r\nContent-Length: 0\r\n\r\n"
    ));
    Some(out.into_bytes())
}

#[cfg(test)]
#[path = "hook_tests.rs"]
mod tests;
