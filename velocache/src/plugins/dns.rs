//! The DNS hook: a client's question in ([`DnsQuery`]), the first plugin's decision out.
//!
//! Plugins are asked in order; the first that does not `pass` decides and the rest are not
//! called. For a query the cache could answer (`cached = true`) only plugins whose manifest sets
//! `see_hits` are asked — so the hit path pays for no call unless a plugin wants hits. A plugin
//! that fails counts as `pass` (and is disabled).
use super::{Hook, Plugins, runtime::bindings::exports::velocache::plugin::dns};

/// One question, as the `dns.on-query` hook receives it.
pub type DnsQuery = dns::Query;
/// A DNS plugin's decision.
pub type DnsAction = dns::Action;
/// One record of a synthesized answer.
pub type DnsRecord = dns::AnswerRecord;
/// NXDOMAIN or REFUSED.
pub type DnsDenyCode = dns::DenyCode;

/// What decided a query, and how.
#[derive(Debug, Clone)]
pub struct DnsDecision {
    /// The plugin that decided.
    pub plugin: String,
    /// Its decision (never `pass`).
    pub action: DnsAction,
}

impl Plugins {
    /// Whether any plugin sees cache hits at all (one load: the hit path asks this first).
    pub fn dns_any_sees_hits(&self) -> bool {
        self.current().see_hits
    }

    /// Whether some live plugin with `see_hits` applies to `name`: its cache hits must reach
    /// the daemon (and never be answered by the kernel).
    pub fn dns_sees_hits(&self, name: &str) -> bool {
        let set = self.current();
        set.see_hits
            && set
                .hooked(Hook::Dns)
                .iter()
                .any(|p| p.manifest.see_hits && p.live() && p.manifest.matches(name))
    }

    /// Ask the DNS plugins that apply to `q` (see the module's doc); `None`: every one passed.
    pub fn dns_query(&self, q: &DnsQuery) -> Option<DnsDecision> {
        let set = self.current();
        for p in set.hooked(Hook::Dns) {
            if (q.cached && !p.manifest.see_hits) || !p.live() || !p.manifest.matches(&q.name) {
                continue;
            }
            let action = p.call(Hook::Dns, |store, g| match &g.dns {
                Some(dns) => dns.call_on_query(store, q),
                None => Ok(DnsAction::Pass),
            });
            match action {
                Ok(DnsAction::Pass) | Err(_) => {}
                Ok(action) => {
                    return Some(DnsDecision {
                        plugin: p.name().to_string(),
                        action,
                    });
                }
            }
        }
        None
    }
}
