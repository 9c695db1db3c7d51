//! The plugins' step of the forwarder (`crate::plugins`, hook `dns`): after the fresh-hit fast
//! path and before the rules and the miss path.
//!
//! A parsed query enters [`Forwarder::plugin_step`] with whether the cache holds a fresh
//! answer for it; it is handed to the DNS plugins as a `query` record (name lower-case, without
//! the trailing dot) and leaves as a [`PluginStep`]: go on (`pass`), go on asking the upstream
//! another name (`rewrite`: the question sent upstream, the answer renamed back to the client's
//! question and cached under the client's key — never handed to the kernel), or answered here
//! — `answer` (records synthesized from their text form, not cached) or `deny` (NXDOMAIN or
//! REFUSED). Each answered query leaves its `query` line with `rule = "plugin:NAME"`.
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use hickory_proto::{
    op::Message,
    rr::Name,
    serialize::binary::{BinDecodable, BinDecoder},
};

use super::{
    forwarder::{Forwarder, Served, log_query},
    handler::{Request, Response},
    wire::{self, HEADER_LEN, QueryView, rcode},
};
use crate::plugins::{DnsAction, DnsDenyCode, DnsQuery, DnsRecord, Hook};

const TYPE_NS: u16 = 2;
const TYPE_CNAME: u16 = 5;
const TYPE_PTR: u16 = 12;
const TYPE_TXT: u16 = 16;

/// What the plugins made of a query.
pub(super) enum PluginStep {
    /// Go on as if no plugin were there.
    Pass,
    /// Go on, asking the upstream this question (wire form: name, type, class) instead.
    Rewrite {
        /// The question sent upstream.
        question: Box<[u8]>,
        /// The plugin that asked, for the log line.
        plugin: String,
    },
    /// Answered.
    Done(Response),
}

/// The name of a query as plugins see it: lower-case, no trailing dot (`""` for the root).
pub(super) fn plugin_name(req: &Request) -> String {
    let mut name = wire::name_text(&req.bytes, HEADER_LEN);
    if name.ends_with('.') {
        name.pop();
    }
    name.make_ascii_lowercase();
    name
}

impl Forwarder {
    /// Whether a fresh hit for this query must go through the plugins first (a plugin with
    /// `see_hits` applies to its name). One load and a flag when no plugin sees hits.
    pub(super) fn plugins_see_hit(&self, req: &Request) -> bool {
        match self.inner.plugins.get() {
            Some(p) if p.dns_any_sees_hits() => p.dns_sees_hits(&plugin_name(req)),
            _ => false,
        }
    }

    /// Ask the DNS plugins about `req` (see the module's doc).
    pub(super) fn plugin_step(
        &self,
        req: &Request,
        q: &QueryView,
        cached: bool,
        start: Instant,
    ) -> PluginStep {
        let Some(plugins) = self.inner.plugins.get() else {
            return PluginStep::Pass;
        };
        if !plugins.has(Hook::Dns) {
            return PluginStep::Pass;
        }
        let query = DnsQuery {
            name: plugin_name(req),
            qtype: q.qtype,
            qclass: q.qclass,
            client: req.client.to_string(),
            transport: req.transport.name().to_string(),
            cached,
        };
        let Some(decision) = plugins.dns_query(&query) else {
            return PluginStep::Pass;
        };
        let rule = format!("plugin:{}", decision.plugin);
        let (out, code) = match decision.action {
            DnsAction::Pass => return PluginStep::Pass,
            DnsAction::Rewrite(name) => {
                return match rewritten_question(&name, q) {
                    Some(question) => PluginStep::Rewrite {
                        question,
                        plugin: rule,
                    },
                    None => {
                        tracing::info!(plugin = %decision.plugin, name = %name,
                            "a plugin rewrote a query to an invalid name: asked as it was");
                        PluginStep::Pass
                    }
                };
            }
            DnsAction::Deny(code) => {
                let code = match code {
                    DnsDenyCode::Nxdomain => rcode::NXDOMAIN,
                    DnsDenyCode::Refused => rcode::REFUSED,
                };
                self.inner.stats.denied.inc();
                (wire::reply(&req.bytes, q, code, |_| 0), code)
            }
            DnsAction::Answer(records) => {
                let out = wire::reply(&req.bytes, q, rcode::NOERROR, |out| {
                    push_records(out, q.qclass, &records, &decision.plugin)
                });
                (out, rcode::NOERROR)
            }
        };
        let out = if out.len() > Self::max_len(req, q) {
            wire::truncated(&req.bytes, q, u16::from(code))
        } else {
            out
        };
        log_query(
            self.inner.live.get(),
            req,
            q.qtype,
            code,
            Served::None,
            start.elapsed(),
            "",
            Some(&rule),
        );
        PluginStep::Done(Response::Ready(out))
    }
}

/// Flush the answer cache (and the kernel's copies) whenever the plugin set is swapped: an
/// answer cached while other plugins were in force may be one the new ones would refuse. Ends
/// when the forwarder is dropped.
pub(super) fn flush_on_reload(
    forwarder: &Forwarder,
    mut changes: tokio::sync::watch::Receiver<u64>,
) {
    let inner = std::sync::Arc::downgrade(&forwarder.inner);
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let Some(inner) = inner.upgrade() else { return };
            let forwarder = Forwarder { inner };
            match crate::admin::DnsAdmin::flush(&forwarder, None) {
                Ok(r) => tracing::info!(
                    service = "dns",
                    entries = r.entries,
                    kernel = r.kernel,
                    "plugins changed: DNS answers flushed"
                ),
                Err(e) => {
                    tracing::warn!(service = "dns", error = %e, "plugins changed: DNS answers not flushed")
                }
            }
        }
    });
}

/// An upstream answer to a rewritten question, made the answer to the client's (`query`): its
/// question becomes the client's, and records owned by the name asked are owned by the
/// client's name (a plugin's `rewrite`; CoreDNS's `rewrite … answer auto` does the same).
pub(super) fn answer_as(reply: &[u8], query: &[u8]) -> Result<Vec<u8>, wire::WireError> {
    let malformed = |e: String| wire::WireError::Malformed(e);
    let mut msg = Message::from_vec(reply).map_err(|e| malformed(e.to_string()))?;
    let mut d = BinDecoder::new(query);
    d.read_slice(wire::HEADER_LEN)
        .map_err(|_| wire::WireError::Truncated {
            at: wire::HEADER_LEN,
        })?;
    let client = Name::read(&mut d).map_err(|e| malformed(e.to_string()))?;
    let Some(asked) = msg.queries.first().map(|q| q.name.clone()) else {
        return Err(wire::WireError::Unsupported("an answer without a question"));
    };
    for q in &mut msg.queries {
        q.name = client.clone();
    }
    for r in &mut msg.answers {
        if r.name == asked {
            r.name = client.clone();
        }
    }
    msg.to_vec().map_err(|e| malformed(e.to_string()))
}

/// The question `name`, `q`'s type and class, in wire form.
fn rewritten_question(name: &str, q: &QueryView) -> Option<Box<[u8]>> {
    let mut out = name_wire(name)?;
    out.extend_from_slice(&q.qtype.to_be_bytes());
    out.extend_from_slice(&q.qclass.to_be_bytes());
    Some(out.into_boxed_slice())
}

/// A dotted name in wire form (uncompressed), or `None` if it is not a valid name.
fn name_wire(name: &str) -> Option<Vec<u8>> {
    let name = name.trim_end_matches('.');
    let mut out = Vec::with_capacity(name.len() + 2);
    if !name.is_empty() {
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return None;
            }
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    (out.len() <= 255).then_some(out)
}

/// The record data of `r` from its text form, or `None` for types we do not synthesize.
fn rdata(r: &DnsRecord) -> Option<Vec<u8>> {
    match r.rtype {
        wire::TYPE_A => r
            .data
            .trim()
            .parse::<Ipv4Addr>()
            .ok()
            .map(|a| a.octets().to_vec()),
        wire::TYPE_AAAA => r
            .data
            .trim()
            .parse::<Ipv6Addr>()
            .ok()
            .map(|a| a.octets().to_vec()),
        TYPE_NS | TYPE_CNAME | TYPE_PTR => name_wire(r.data.trim()),
        TYPE_TXT => {
            let mut out = Vec::with_capacity(r.data.len() + 1);
            let bytes = r.data.as_bytes();
            if bytes.is_empty() {
                out.push(0);
            }
            for chunk in bytes.chunks(255) {
                out.push(chunk.len() as u8);
                out.extend_from_slice(chunk);
            }
            (out.len() <= usize::from(u16::MAX)).then_some(out)
        }
        _ => None,
    }
}

/// Append the plugin's records (owner: the question's name); returns how many were appended.
fn push_records(out: &mut Vec<u8>, qclass: u16, records: &[DnsRecord], plugin: &str) -> u16 {
    let mut n = 0u16;
    for r in records.iter().take(64) {
        let Some(data) = rdata(r) else {
            tracing::debug!(plugin, rtype = r.rtype, data = %r.data, "a plugin's record cannot be written: left out");
            continue;
        };
        out.extend_from_slice(&[0xc0, 0x0c]);
        out.extend_from_slice(&r.rtype.to_be_bytes());
        out.extend_from_slice(&qclass.to_be_bytes());
        out.extend_from_slice(&r.ttl.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewritten_answer_is_renamed_to_the_clients_question() {
        use crate::dns::testutil::{a, query, response};
        use hickory_proto::op::ResponseCode;
        let upstream = response(
            &query(7, "b.lab", wire::TYPE_A, Some(false)),
            ResponseCode::NoError,
            vec![
                a("b.lab", 60, [10, 0, 0, 1]),
                a("other.lab", 60, [10, 0, 0, 2]),
            ],
            vec![],
        );
        let client = query(9, "A.Lab", wire::TYPE_A, None);
        let out = answer_as(&upstream, &client).unwrap();
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.queries[0].name.to_ascii(), "A.Lab.");
        assert_eq!(m.answers[0].name.to_ascii(), "A.Lab.");
        assert_eq!(
            m.answers[1].name.to_ascii(),
            "other.lab.",
            "other owners stay"
        );
        assert!(wire::scan_answer(&out).is_ok());
    }

    #[test]
    fn names_and_records_from_text() {
        assert_eq!(name_wire("a.bc").unwrap(), b"\x01a\x02bc\x00");
        assert_eq!(name_wire("a.bc.").unwrap(), b"\x01a\x02bc\x00");
        assert_eq!(name_wire("").unwrap(), b"\x00");
        assert!(name_wire("a..b").is_none());
        assert!(name_wire(&"x".repeat(64)).is_none());
        let rec = |rtype, data: &str| DnsRecord {
            rtype,
            ttl: 60,
            data: data.into(),
        };
        assert_eq!(rdata(&rec(1, "10.0.0.1")).unwrap(), [10, 0, 0, 1]);
        assert_eq!(rdata(&rec(28, "::1")).unwrap().len(), 16);
        assert!(rdata(&rec(1, "not-an-address")).is_none());
        assert_eq!(rdata(&rec(16, "hi")).unwrap(), b"\x02hi");
        assert_eq!(rdata(&rec(5, "x.y")).unwrap(), b"\x01x\x01y\x00");
        assert!(rdata(&rec(99, "?")).is_none());
    }
}
