//! Call ladders: every SIP message of a call, in order, for `velocache calls show` and the web
//! page's sngrep-like view.
//!
//! The observer hands each message of a call to [`Ladders::record`] as it passes (time,
//! direction, addresses, transport, method or status, CSeq, size). A call's ladder is bounded
//! ([`MAX_MESSAGES`]: a looping call keeps its latest messages and counts the rest); when the
//! call ends ([`Ladders::end`]) the ladder moves, with the call's final state and media figures,
//! to a list of the last [`MAX_ENDED`] ended calls, where late messages (the 200 OK to a BYE)
//! still join it. [`Ladders::get`] reads one back.
//!
//! While a call is in progress its first messages' bytes are kept too (up to [`RAW_BUDGET`]), so
//! that a capture started in mid-call still opens with the INVITE and its answer.
use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
};

use crate::admin::calls_api::{LadderMessage, StreamFigures};

/// Messages kept per call.
pub const MAX_MESSAGES: usize = 200;
/// Ended calls kept.
pub const MAX_ENDED: usize = 100;
/// Bytes of a call's first messages kept while it is in progress (INVITE, 1xx, 200, ACK fit).
pub const RAW_BUDGET: usize = 8 << 10;
/// Calls in progress tracked at most (the call table has its own, usually lower, bound).
const MAX_ACTIVE: usize = 100_000;

/// One call's ladder.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ladder {
    /// From URI.
    pub from: String,
    /// To URI.
    pub to: String,
    /// Messages, oldest first.
    pub messages: VecDeque<LadderMessage>,
    /// Older messages dropped at the bound.
    pub omitted: u64,
    /// Once ended: how (`completed`, `failed`…).
    pub outcome: Option<String>,
    /// Once ended: the media figures at the end.
    pub streams: Vec<StreamFigures>,
    /// While in progress: the first messages as received (within [`RAW_BUDGET`]).
    pub raw: Vec<RawMessage>,
    raw_bytes: usize,
}

/// One message's bytes as received, for a capture started later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    /// Unix microseconds.
    pub ts_us: u64,
    /// Sender.
    pub src: SocketAddr,
    /// Destination.
    pub dst: SocketAddr,
    /// The message.
    pub bytes: Vec<u8>,
}

impl Ladder {
    fn keep_raw(&mut self, raw: RawMessage) {
        if self.outcome.is_none() && self.raw_bytes + raw.bytes.len() <= RAW_BUDGET {
            self.raw_bytes += raw.bytes.len();
            self.raw.push(raw);
        }
    }

    fn push(&mut self, m: LadderMessage) {
        if self.messages.len() == MAX_MESSAGES {
            self.messages.pop_front();
            self.omitted += 1;
        }
        self.messages.push_back(m);
    }
}

/// Ladders of calls in progress and of the last ended ones, by Call-ID.
#[derive(Debug, Default)]
pub struct Ladders {
    active: HashMap<String, Ladder>,
    /// Newest last.
    ended: VecDeque<(String, Ladder)>,
}

impl Ladders {
    /// Add a message to `call_id`'s ladder. `new_call`: the message started the call (a ladder
    /// is opened); otherwise a message of an unknown Call-ID (a REGISTER, an OPTIONS) is not
    /// kept.
    pub fn record(
        &mut self,
        call_id: &str,
        new_call: bool,
        from: &str,
        to: &str,
        m: LadderMessage,
        raw: RawMessage,
    ) {
        if let Some(l) = self.active.get_mut(call_id) {
            l.push(m);
            l.keep_raw(raw);
            return;
        }
        if !new_call && let Some((_, l)) = self.ended.iter_mut().rev().find(|(c, _)| c == call_id) {
            l.push(m);
            return;
        }
        if new_call && self.active.len() < MAX_ACTIVE {
            let mut l = Ladder {
                from: from.to_string(),
                to: to.to_string(),
                ..Ladder::default()
            };
            l.push(m);
            l.keep_raw(raw);
            self.active.insert(call_id.to_string(), l);
        }
    }

    /// Whether a message of `call_id` would be kept (`new_call`: it starts the call).
    pub fn wants(&self, call_id: &str, new_call: bool) -> bool {
        new_call
            || self.active.contains_key(call_id)
            || self.ended.iter().any(|(c, _)| c == call_id)
    }

    /// The call ended: keep its ladder with how it ended and its media figures.
    pub fn end(&mut self, call_id: &str, outcome: &str, streams: Vec<StreamFigures>) {
        let Some(mut l) = self.active.remove(call_id) else {
            return;
        };
        l.outcome = Some(outcome.to_string());
        l.streams = streams;
        l.raw = Vec::new();
        l.raw_bytes = 0;
        if self.ended.len() == MAX_ENDED {
            self.ended.pop_front();
        }
        self.ended.push_back((call_id.to_string(), l));
    }

    /// A call's ladder, in progress or recently ended (the newest of that Call-ID).
    pub fn get(&self, call_id: &str) -> Option<&Ladder> {
        self.active.get(call_id).or_else(|| {
            self.ended
                .iter()
                .rev()
                .find(|(c, _)| c == call_id)
                .map(|(_, l)| l)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(cseq: u32) -> RawMessage {
        RawMessage {
            ts_us: u64::from(cseq),
            src: "10.0.0.1:5060".parse().unwrap(),
            dst: "10.0.0.2:5060".parse().unwrap(),
            bytes: vec![b'x'; 1000],
        }
    }

    fn msg(label: &str, cseq: u32) -> LadderMessage {
        LadderMessage {
            ts_ms: u64::from(cseq),
            direction: "client->far".into(),
            label: label.into(),
            cseq: format!("{cseq} {label}"),
            ..LadderMessage::default()
        }
    }

    #[test]
    fn a_looping_call_keeps_its_latest_messages_and_counts_the_rest() {
        let mut l = Ladders::default();
        l.record("c", true, "a", "b", msg("INVITE", 0), raw(0));
        for i in 1..=(MAX_MESSAGES as u32 + 49) {
            l.record("c", false, "", "", msg("OPTIONS", i), raw(i));
        }
        let c = l.get("c").unwrap();
        assert_eq!(c.messages.len(), MAX_MESSAGES);
        assert_eq!(c.omitted, 50);
        assert_eq!(c.messages.front().unwrap().ts_ms, 50);
        assert_eq!(c.messages.back().unwrap().ts_ms, MAX_MESSAGES as u64 + 49);
        assert_eq!((c.from.as_str(), c.to.as_str()), ("a", "b"));
        assert_eq!(
            c.raw.len(),
            RAW_BUDGET / 1000,
            "the first messages' bytes, within the budget"
        );
        assert_eq!(c.raw[0].ts_us, 0);
    }

    #[test]
    fn messages_of_unknown_calls_are_not_kept() {
        let mut l = Ladders::default();
        l.record("reg", false, "", "", msg("REGISTER", 1), raw(1));
        assert!(l.get("reg").is_none());
    }

    #[test]
    fn an_ended_call_stays_readable_and_takes_late_messages() {
        let mut l = Ladders::default();
        l.record("c", true, "a", "b", msg("INVITE", 1), raw(1));
        l.record("c", false, "", "", msg("BYE", 2), raw(2));
        l.end("c", "completed", vec![StreamFigures::default()]);
        l.record("c", false, "", "", msg("200 OK", 2), raw(2));
        let c = l.get("c").unwrap();
        assert_eq!(c.outcome.as_deref(), Some("completed"));
        assert_eq!(c.messages.len(), 3);
        assert_eq!(c.streams.len(), 1);
        assert!(c.raw.is_empty(), "an ended call keeps no bytes");
    }

    #[test]
    fn only_the_last_ended_calls_are_kept() {
        let mut l = Ladders::default();
        for i in 0..=MAX_ENDED {
            let id = format!("c{i}");
            l.record(&id, true, "", "", msg("INVITE", 1), raw(1));
            l.end(&id, "completed", Vec::new());
        }
        assert!(l.get("c0").is_none());
        assert!(l.get("c1").is_some());
        assert!(l.get(&format!("c{MAX_ENDED}")).is_some());
    }
}
