//! Answers the forwarder makes itself, without asking upstream: a `deny` rule's (NXDOMAIN, or
//! 0.0.0.0 / `::` with `[dns] deny_answer = "zero"`), the CA page's name (its A record), and
//! SERVFAIL when too many queries are in flight. Each leaves its `query` line.
use std::time::Instant;

use super::{
    forwarder::{Forwarder, Served, log_query},
    handler::{Request, Response},
    wire::{self, QueryView, rcode},
};
use crate::config::DenyAnswer;

/// TTL of denied answers when the rule sets none.
const DENY_TTL: u32 = 60;
/// TTL of the local name's answers: short, so a changed address is picked up soon.
const LOCAL_NAME_TTL: u32 = 60;

impl Forwarder {
    pub(super) fn local_answer(
        &self,
        req: &Request,
        q: &QueryView,
        ttl: Option<u32>,
        start: Instant,
        rule: Option<&str>,
    ) -> Response {
        let ttl = ttl.unwrap_or(DENY_TTL);
        let (out, code) = match self.inner.settings.deny_answer {
            DenyAnswer::Nxdomain => (
                wire::reply(&req.bytes, q, rcode::NXDOMAIN, |_| 0),
                rcode::NXDOMAIN,
            ),
            DenyAnswer::Zero => (
                wire::reply(&req.bytes, q, rcode::NOERROR, |out| match q.qtype {
                    wire::TYPE_A => {
                        wire::push_answer(out, q.qtype, q.qclass, ttl, &[0; 4]);
                        1
                    }
                    wire::TYPE_AAAA => {
                        wire::push_answer(out, q.qtype, q.qclass, ttl, &[0; 16]);
                        1
                    }
                    _ => 0,
                }),
                rcode::NOERROR,
            ),
        };
        self.inner.stats.denied.inc();
        log_query(
            self.inner.live.get(),
            req,
            q.qtype,
            code,
            Served::None,
            start.elapsed(),
            "",
            rule,
        );
        Response::Ready(out)
    }

    /// The CA page's name: its A record, and NODATA for every other type.
    pub(super) fn local_name_answer(
        &self,
        req: &Request,
        q: &QueryView,
        addr: std::net::Ipv4Addr,
        start: Instant,
    ) -> Response {
        let out = wire::reply(&req.bytes, q, rcode::NOERROR, |out| {
            if q.qtype == wire::TYPE_A {
                wire::push_answer(out, q.qtype, q.qclass, LOCAL_NAME_TTL, &addr.octets());
                1
            } else {
                0
            }
        });
        log_query(
            self.inner.live.get(),
            req,
            q.qtype,
            rcode::NOERROR,
            Served::None,
            start.elapsed(),
            "",
            Some("ca_page"),
        );
        Response::Ready(out)
    }

    pub(super) fn servfail_now(
        &self,
        req: &Request,
        q: &QueryView,
        start: Instant,
        why: &str,
    ) -> Response {
        self.inner.stats.errors.inc();
        tracing::debug!(client = %req.client, reason = why, "query not forwarded");
        log_query(
            self.inner.live.get(),
            req,
            q.qtype,
            rcode::SERVFAIL,
            Served::None,
            start.elapsed(),
            "",
            None,
        );
        Response::Ready(wire::reply(&req.bytes, q, rcode::SERVFAIL, |_| 0))
    }
}
