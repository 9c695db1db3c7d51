//! The plugin runtime as the observer's [`SipHook`]: a message's facts become the WIT record
//! `sip.message` (by moving them), and the plugins' combined answer comes back as a
//! [`HookOutcome`].
use super::hook::{HookMessage, HookOutcome, HookReject, SipHook};
use crate::plugins::{Hook, HttpHeader, Plugins, SipMessage};

impl SipHook for Plugins {
    fn active(&self) -> bool {
        self.has(Hook::Sip)
    }

    fn on_message(&self, m: HookMessage) -> HookOutcome {
        let msg = SipMessage {
            call_id: m.call_id,
            method: m.method,
            status: m.status,
            request_uri: m.request_uri,
            from: m.from,
            to: m.to,
            src: m.src,
            dst: m.dst,
            transport: m.transport,
            headers: m
                .headers
                .into_iter()
                .map(|(name, value)| HttpHeader { name, value })
                .collect(),
            body: m.body,
        };
        let out = self.sip_message(&msg);
        HookOutcome {
            tags: out.tags,
            reject: out.reject.map(|(status, reason)| HookReject {
                status,
                reason,
                plugin: out.rejected_by.unwrap_or_else(|| "a plugin".into()),
            }),
        }
    }
}
