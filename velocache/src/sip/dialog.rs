//! Calls and REGISTER transactions, as a pure state machine: messages in, changes out.
//!
//! A call is keyed by its Call-ID *and* its signalling path — the client's address, the far
//! end, the transport ([`CallKey`]): a Call-ID is only unique per user agent, so a BYE that
//! reuses one from another client or over another transport must not end someone else's
//! call. Forked early dialogs of one INVITE share the record (the answer that wins is the one
//! that counts). It moves Calling → Proceeding (1xx) → Early
//! (first 18x: post-dial delay) → Answered (2xx: setup time) → Confirmed (ACK), takes
//! re-INVITEs (a higher CSeq) in its stride, and ends on BYE, on a final failure of the initial
//! INVITE (the code and reason are kept; 487 after a CANCEL is "cancelled"), or when the caller
//! of [`CallTable::expire`] says so (RTP idle, no answer). Nothing here does I/O or reads a
//! clock: `now` is passed in, so the tests drive time.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    time::Instant,
};

use super::{
    message::{SipMessage, StartLine},
    sdp::MediaStream,
};

/// Which side of the gateway a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The LAN client the classifier intercepted.
    Client,
    /// The original destination (the far end).
    Far,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Far,
            Side::Far => Side::Client,
        }
    }

    /// `client` or `far`, for logs.
    pub fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Far => "far",
        }
    }

    fn index(self) -> usize {
        match self {
            Side::Client => 0,
            Side::Far => 1,
        }
    }
}

/// What identifies a call: its Call-ID on one signalling path. The client is identified by
/// its address without the port, so a request on a new TCP connection from the same client
/// still belongs to its call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallKey {
    /// `Call-ID`.
    pub call_id: String,
    /// The LAN client's address.
    pub client: IpAddr,
    /// The far end's signalling address (the original destination).
    pub far: SocketAddr,
    /// `udp` or `tcp`.
    pub transport: &'static str,
}

impl CallKey {
    /// The key of `call_id` between `client` and `far` over `transport`.
    pub fn new(
        call_id: &str,
        client: SocketAddr,
        far: SocketAddr,
        transport: &'static str,
    ) -> Self {
        CallKey {
            call_id: call_id.to_string(),
            client: client.ip(),
            far,
            transport,
        }
    }
}

/// Where a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CallState {
    /// INVITE sent, nothing back yet.
    Calling,
    /// 100 Trying.
    Proceeding,
    /// 180/183.
    Early,
    /// 2xx to the initial INVITE.
    Answered,
    /// ACK seen.
    Confirmed,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered, then hung up with BYE.
    Completed,
    /// The INVITE got a final failure (3xx–6xx other than 487-after-CANCEL).
    Failed,
    /// CANCEL before the answer.
    Cancelled,
    /// No media for the idle timeout.
    RtpTimeout,
    /// No final answer within the setup timeout.
    SetupTimeout,
    /// The daemon stopped.
    Shutdown,
    /// A plugin rejected the INVITE; the gateway answered the caller and forwarded nothing.
    Rejected,
}

impl Outcome {
    /// For logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::RtpTimeout => "rtp_timeout",
            Outcome::SetupTimeout => "setup_timeout",
            Outcome::Shutdown => "shutdown",
            Outcome::Rejected => "rejected",
        }
    }
}

/// One call.
#[derive(Debug)]
pub struct Call {
    /// Call-ID.
    pub call_id: String,
    /// From URI of the initial INVITE.
    pub from: String,
    /// To URI of the initial INVITE.
    pub to: String,
    /// Who sent the initial INVITE.
    pub caller: Side,
    /// The LAN client's signalling address.
    pub client: SocketAddr,
    /// The far end's signalling address.
    pub far: SocketAddr,
    /// `udp` or `tcp`.
    pub transport: &'static str,
    /// Where the call is.
    pub state: CallState,
    /// When the initial INVITE was seen.
    pub invited_at: Instant,
    /// First 18x.
    pub early_at: Option<Instant>,
    /// 2xx to the initial INVITE.
    pub answered_at: Option<Instant>,
    /// CSeq of the latest INVITE.
    pub invite_cseq: u32,
    /// Final status of the initial INVITE (2xx or the failure) and its reason phrase.
    pub final_status: Option<(u16, String)>,
    /// Media each side announced (latest SDP), by [`Side`].
    pub media: [Option<Vec<MediaStream>>; 2],
    /// Re-INVITEs seen.
    pub reinvites: u32,
    /// A CANCEL was seen.
    pub cancelled: bool,
    /// Who ended the call (`BYE from client`, `plugin sip-screener`, …).
    pub ended_by: Option<String>,
    /// Fields plugins added to the call's record (names unique, first mention's order).
    pub tags: Vec<(String, String)>,
}

impl Call {
    /// The call's key in the table.
    pub fn key(&self) -> CallKey {
        CallKey::new(&self.call_id, self.client, self.far, self.transport)
    }

    /// The media `side` announced.
    pub fn media_of(&self, side: Side) -> Option<&Vec<MediaStream>> {
        self.media[side.index()].as_ref()
    }
}

/// A REGISTER in progress.
#[derive(Debug)]
pub struct Register {
    /// Address of record (To URI).
    pub aor: String,
    /// Sent at.
    pub at: Instant,
    /// Requested expiry.
    pub expires: Option<u32>,
}

/// What a message changed.
#[derive(Debug, Default)]
pub struct Change {
    /// The call's media (either side's SDP, or the call became answered) changed.
    pub media: bool,
    /// The call ended with this outcome; remove it with [`CallTable::take`].
    pub ended: Option<Outcome>,
    /// A REGISTER transaction completed: (register, status, reason).
    pub registered: Option<(Register, u16, String)>,
    /// The message opened a new call.
    pub new_call: bool,
}

/// Every call and REGISTER transaction in progress.
#[derive(Debug, Default)]
pub struct CallTable {
    calls: HashMap<CallKey, Call>,
    registers: HashMap<(CallKey, u32), Register>,
    max_calls: usize,
}

impl CallTable {
    /// A table holding at most `max_calls` calls.
    pub fn new(max_calls: usize) -> Self {
        CallTable {
            calls: HashMap::new(),
            registers: HashMap::new(),
            max_calls,
        }
    }

    /// Calls in progress.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no call is in progress.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// A call by key.
    pub fn get(&self, key: &CallKey) -> Option<&Call> {
        self.calls.get(key)
    }

    /// Every call.
    pub fn calls(&self) -> impl Iterator<Item = &Call> {
        self.calls.values()
    }

    /// Remove a call (after it ended).
    pub fn take(&mut self, key: &CallKey) -> Option<Call> {
        self.calls.remove(key)
    }

    /// Add fields to a call's record: a name already there takes the new value in place.
    pub fn tag(&mut self, key: &CallKey, tags: Vec<(String, String)>) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        for (name, value) in tags {
            match call.tags.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) => slot.1 = value,
                None => call.tags.push((name, value)),
            }
        }
    }

    /// `plugin` rejected the call's INVITE with `status`: the final answer, and who ended it.
    /// True when that ends the call (an initial INVITE); a rejected re-INVITE leaves an answered
    /// call as it was.
    pub fn reject(&mut self, key: &CallKey, status: u16, reason: &str, plugin: &str) -> bool {
        let Some(call) = self.calls.get_mut(key) else {
            return false;
        };
        if call.state >= CallState::Answered {
            return false;
        }
        call.final_status = Some((status, reason.to_string()));
        call.ended_by = Some(format!("plugin {plugin}"));
        true
    }

    /// Account one message that travelled from `from` (whose peer is `client`/`far`).
    /// `sdp` is the parsed body when it was SDP that parsed.
    #[expect(clippy::too_many_arguments, reason = "the hop's facts, passed flat")]
    pub fn on_message(
        &mut self,
        msg: &SipMessage,
        sdp: Option<Vec<MediaStream>>,
        from: Side,
        client: SocketAddr,
        far: SocketAddr,
        transport: &'static str,
        now: Instant,
    ) -> Change {
        let mut change = Change::default();
        let Some(call_id) = msg.call_id.clone() else {
            return change;
        };
        let key = CallKey::new(&call_id, client, far, transport);
        let Some((cseq, cseq_method)) = msg.cseq.clone() else {
            return change;
        };
        match &msg.start {
            StartLine::Request { method, .. } if method == "REGISTER" => {
                if self.registers.len() < self.max_calls {
                    self.registers.entry((key, cseq)).or_insert(Register {
                        aor: msg.to.as_ref().map(|t| t.uri.clone()).unwrap_or_default(),
                        at: now,
                        expires: msg.expires,
                    });
                }
            }
            StartLine::Response { code, reason } if cseq_method == "REGISTER" => {
                if *code >= 200
                    && let Some(r) = self.registers.remove(&(key, cseq))
                {
                    change.registered = Some((r, *code, reason.clone()));
                }
            }
            StartLine::Request { method, .. } if method == "INVITE" => {
                match self.calls.get_mut(&key) {
                    None => {
                        if self.calls.len() >= self.max_calls {
                            return change;
                        }
                        let mut call = Call {
                            call_id: call_id.clone(),
                            from: msg.from.as_ref().map(|p| p.uri.clone()).unwrap_or_default(),
                            to: msg.to.as_ref().map(|p| p.uri.clone()).unwrap_or_default(),
                            caller: from,
                            client,
                            far,
                            transport,
                            state: CallState::Calling,
                            invited_at: now,
                            early_at: None,
                            answered_at: None,
                            invite_cseq: cseq,
                            final_status: None,
                            media: [None, None],
                            reinvites: 0,
                            cancelled: false,
                            ended_by: None,
                            tags: Vec::new(),
                        };
                        if let Some(s) = sdp {
                            call.media[from.index()] = Some(s);
                        }
                        self.calls.insert(key, call);
                        change.new_call = true;
                    }
                    Some(call) if cseq > call.invite_cseq => {
                        // A re-INVITE (or a new INVITE after an authentication challenge,
                        // which keeps the Call-ID and raises the CSeq).
                        call.invite_cseq = cseq;
                        if call.state >= CallState::Answered {
                            call.reinvites += 1;
                        }
                        if let Some(s) = sdp {
                            call.media[from.index()] = Some(s);
                            change.media = call.state >= CallState::Answered;
                        }
                    }
                    // A retransmission.
                    Some(_) => {}
                }
            }
            StartLine::Request { method, .. } => {
                let Some(call) = self.calls.get_mut(&key) else {
                    return change;
                };
                match method.as_str() {
                    "ACK" => {
                        if call.state == CallState::Answered {
                            call.state = CallState::Confirmed;
                        }
                        // Late offer: the answer comes in the ACK.
                        if let Some(s) = sdp {
                            call.media[from.index()] = Some(s);
                            change.media = true;
                        }
                    }
                    "CANCEL" if call.state < CallState::Answered => {
                        call.cancelled = true;
                        call.ended_by = Some(format!("CANCEL from {}", from.name()));
                    }
                    "BYE" => {
                        call.ended_by = Some(format!("BYE from {}", from.name()));
                        change.ended = Some(if call.state >= CallState::Answered {
                            Outcome::Completed
                        } else {
                            Outcome::Cancelled
                        });
                    }
                    "UPDATE" | "PRACK" => {
                        if let Some(s) = sdp {
                            call.media[from.index()] = Some(s);
                            change.media = call.state >= CallState::Answered;
                        }
                    }
                    _ => {}
                }
            }
            StartLine::Response { code, reason } if cseq_method == "INVITE" => {
                let Some(call) = self.calls.get_mut(&key) else {
                    return change;
                };
                let initial = call.state < CallState::Answered;
                match *code {
                    100..=199 => {
                        if *code == 100 && call.state == CallState::Calling {
                            call.state = CallState::Proceeding;
                        } else if *code >= 180 && initial {
                            call.state = CallState::Early;
                            call.early_at.get_or_insert(now);
                        }
                        if let Some(s) = sdp {
                            call.media[from.index()] = Some(s);
                        }
                    }
                    200..=299 => {
                        if initial {
                            call.state = CallState::Answered;
                            call.answered_at = Some(now);
                            call.final_status = Some((*code, reason.clone()));
                            change.media = true;
                        }
                        if let Some(s) = sdp {
                            call.media[from.index()] = Some(s);
                            change.media = true;
                        }
                    }
                    // 401/407 challenges are answered with a new INVITE (same Call-ID, higher
                    // CSeq); the call goes on.
                    401 | 407 if initial => {}
                    _ if initial && cseq == call.invite_cseq => {
                        call.final_status = Some((*code, reason.clone()));
                        change.ended = Some(if *code == 487 && call.cancelled {
                            Outcome::Cancelled
                        } else {
                            Outcome::Failed
                        });
                    }
                    // A failed re-INVITE leaves the call as it was.
                    _ => {}
                }
            }
            StartLine::Response { .. } => {}
        }
        change
    }

    /// Calls unanswered for longer than `setup` (no final response lost forever) — the caller
    /// ends them with [`Outcome::SetupTimeout`].
    pub fn expire(&self, now: Instant, setup: std::time::Duration) -> Vec<CallKey> {
        self.calls
            .iter()
            .filter(|(_, c)| {
                c.state < CallState::Answered && now.duration_since(c.invited_at) > setup
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Drop REGISTER transactions that never got a final answer.
    pub fn expire_registers(&mut self, now: Instant, limit: std::time::Duration) {
        self.registers
            .retain(|_, r| now.duration_since(r.at) <= limit);
    }
}

#[cfg(test)]
#[path = "dialog_tests.rs"]
mod tests;
