//! The SIP hook: every SIP message the gateway relays, observed by the plugins that apply to
//! it; an INVITE may be rejected.
//!
//! Plugins whose `hosts` match the message's domain (the Request-URI's host for a request, the
//! `To` URI's for a response) are asked in order. Their tags add up; the first `reject` of an
//! INVITE wins (the plugins after it are still asked, so they can tag the call); a `reject` of
//! anything else is logged and counts as `observe([])`. A plugin that fails counts as observing
//! nothing (and is disabled).
use super::{Hook, Plugins, runtime::bindings::exports::velocache::plugin::sip};

/// A SIP message as the `sip.on-message` hook receives it.
pub type SipMessage = sip::Message;
/// A SIP plugin's decision.
pub type SipAction = sip::Action;
/// The status an INVITE is rejected with.
pub type SipRejection = sip::Rejection;

/// What the SIP plugins made of one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SipOutcome {
    /// Fields for the call's record, from every plugin, in order.
    pub tags: Vec<(String, String)>,
    /// An INVITE's rejection (status, reason), from the first plugin that rejected it.
    pub reject: Option<(u16, String)>,
    /// The plugin that rejected it (the call's record says who ended it).
    pub rejected_by: Option<String>,
}

/// The host part of a SIP URI (`sip:alice@example.org:5060;transport=udp` → `example.org`),
/// or of a name-addr (`"Alice" <sip:alice@example.org>;tag=1`).
pub fn uri_host(uri: &str) -> &str {
    let uri = match (uri.find('<'), uri.find('>')) {
        (Some(a), Some(b)) if a < b => &uri[a + 1..b],
        _ => uri,
    };
    let rest = uri.split_once(':').map_or(uri, |(scheme, rest)| {
        if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
            rest
        } else {
            uri
        }
    });
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let end = rest.find([';', '?', '>']).unwrap_or(rest.len());
    let host = &rest[..end];
    // `[2001:db8::1]:5060` keeps its brackets; `example.org:5060` loses the port.
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.split(':').next().unwrap_or(host)
}

impl Plugins {
    /// Every sip-hook plugin, in manifest order, on one message. Tags accumulate; the first
    /// reject wins.
    pub fn sip_message(&self, msg: &SipMessage) -> SipOutcome {
        let set = self.current();
        let mut out = SipOutcome::default();
        let plugins = set.hooked(Hook::Sip);
        if plugins.is_empty() {
            return out;
        }
        let domain = uri_host(msg.request_uri.as_deref().unwrap_or(&msg.to));
        let invite = msg
            .method
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case("INVITE"));
        for p in plugins {
            if !p.live() || !p.manifest.matches(domain) {
                continue;
            }
            let action = p.call(Hook::Sip, |store, g| match &g.sip {
                Some(sip) => sip.call_on_message(store, msg),
                None => Ok(SipAction::Observe(Vec::new())),
            });
            match action {
                Ok(SipAction::Observe(tags)) => out.tags.extend(tags),
                Ok(SipAction::Reject(r)) if invite => {
                    if out.reject.is_none() {
                        out.reject = Some((r.status, r.reason));
                        out.rejected_by = Some(p.name().to_string());
                    }
                }
                Ok(SipAction::Reject(r)) => tracing::info!(
                    plugin = %p.name(),
                    call_id = %msg.call_id,
                    status = r.status,
                    "a plugin rejected a message that is not an INVITE: observed instead"
                ),
                Err(_) => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::uri_host;

    #[test]
    fn the_domain_of_a_sip_uri() {
        assert_eq!(
            uri_host("sip:alice@example.org:5060;transport=udp"),
            "example.org"
        );
        assert_eq!(
            uri_host("\"Al\" <sip:alice@Example.org>;tag=1"),
            "Example.org"
        );
        assert_eq!(uri_host("sip:[2001:db8::1]:5060"), "[2001:db8::1]");
        assert_eq!(uri_host("sips:bob@10.0.0.1"), "10.0.0.1");
        assert_eq!(uri_host("tel:+15551234"), "tel");
    }
}
