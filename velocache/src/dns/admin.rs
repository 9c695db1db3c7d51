//! `velocache dns flush [NAME]`: the DNS service's admin capability ([`DnsAdmin`]).
//!
//! A name (text, any case, trailing dot optional) is turned into the lower-case wire form the
//! cache keys end with; every entry for it — any type, class, DO/CD, resolver — leaves the
//! answer cache, and its copies leave the kernel's map, so the next query for it goes upstream.
//! Without a name both are emptied.
use std::{str::FromStr as _, sync::atomic::Ordering, time::Instant};

use hickory_proto::{
    op::Message,
    rr::{Name, RecordType},
    serialize::binary::BinEncodable as _,
};

use super::{
    Forwarder,
    cache::{Cacheability, CachedAnswer},
    wire::rcode,
};
use crate::admin::{
    AdminError, DnsAdmin,
    api::{DnsEntryView, DnsFlushReport, DnsShowReport},
};

impl DnsAdmin for Forwarder {
    fn flush(&self, name: Option<&str>) -> Result<DnsFlushReport, AdminError> {
        let inner = &self.inner;
        let kernel = inner.kernel.get();
        let (entries, in_kernel) = match name {
            None => {
                let entries = inner.cache.entries();
                inner.cache.clear();
                (entries, kernel.map_or(0, |k| k.clear()))
            }
            Some(text) => {
                let wire = wire_name(text)?;
                (
                    inner.cache.remove_name(&wire),
                    kernel.map_or(0, |k| k.forget_name(&wire)),
                )
            }
        };
        inner.stats.entries.set(inner.cache.entries() as i64);
        Ok(DnsFlushReport {
            name: name.map(str::to_string),
            entries,
            kernel: in_kernel,
        })
    }

    fn show(&self, name: &str, qtype: &str) -> Result<DnsShowReport, AdminError> {
        let wire = wire_name(name)?;
        let rtype = match qtype.parse::<u16>() {
            Ok(n) => RecordType::from(n),
            Err(_) => RecordType::from_str(&qtype.to_ascii_uppercase()).map_err(|_| {
                AdminError::BadRequest(format!("`{qtype}` is not a DNS record type"))
            })?,
        };
        let now = Instant::now();
        let entries = self
            .inner
            .cache
            .find(&wire, u16::from(rtype))
            .iter()
            .map(|e| view(e, now))
            .collect();
        Ok(DnsShowReport {
            name: name.to_string(),
            qtype: rtype.to_string(),
            entries,
        })
    }
}

fn view(e: &CachedAnswer, now: Instant) -> DnsEntryView {
    let age = e.age(now);
    let records = match Message::from_vec(e.wire()) {
        Ok(m) => m
            .answers
            .iter()
            .chain(&m.authorities)
            .chain(&m.additionals)
            .map(|r| {
                format!(
                    "{} {} {} {} {}",
                    r.name,
                    r.ttl.saturating_sub(age),
                    r.dns_class,
                    r.record_type(),
                    r.data
                )
            })
            .collect(),
        Err(err) => vec![format!("(the stored message does not parse: {err})")],
    };
    DnsEntryView {
        rcode: rcode::name(e.rcode).to_string(),
        kind: match e.cacheability {
            Cacheability::Negative => "negative",
            _ => "positive",
        }
        .into(),
        age_secs: age,
        ttl_remaining_secs: e.remaining(now),
        upstream: e.upstream.to_string(),
        hits: e.hits.load(Ordering::Relaxed),
        records,
    }
}

/// `name` in wire form, lower-cased.
fn wire_name(text: &str) -> Result<Vec<u8>, AdminError> {
    let bad = |e: String| AdminError::BadRequest(format!("`{text}` is not a DNS name: {e}"));
    let mut name = Name::from_ascii(text).map_err(|e| bad(e.to_string()))?;
    name.set_fqdn(true);
    let mut wire = name.to_bytes().map_err(|e| bad(e.to_string()))?;
    wire.make_ascii_lowercase();
    Ok(wire)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_lower_case_wire_form_and_junk_is_refused() {
        assert_eq!(
            wire_name("WWW.Test.lab").unwrap(),
            b"\x03www\x04test\x03lab\x00"
        );
        assert_eq!(
            wire_name("www.test.lab.").unwrap(),
            b"\x03www\x04test\x03lab\x00"
        );
        assert!(matches!(
            wire_name(&"a".repeat(70)),
            Err(AdminError::BadRequest(_))
        ));
    }
}
