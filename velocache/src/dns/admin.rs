//! `velocache dns flush [NAME]`: the DNS service's admin capability ([`DnsAdmin`]).
//!
//! A name (text, any case, trailing dot optional) is turned into the lower-case wire form the
//! cache keys end with; every entry for it — any type, class, DO/CD, resolver — leaves the
//! answer cache, and its copies leave the kernel's map, so the next query for it goes upstream.
//! Without a name both are emptied.
use hickory_proto::{rr::Name, serialize::binary::BinEncodable as _};

use super::Forwarder;
use crate::admin::{AdminError, DnsAdmin, api::DnsFlushReport};

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
