//! `velocache dns show` for people: each stored answer for a name and type — its code, age,
//! TTL left, upstream and hits — followed by its records as a client would get them now.
use std::fmt::Write as _;

use crate::admin::api::DnsShowReport;

/// The report as text.
pub fn show(r: &DnsShowReport) -> String {
    let mut out = String::new();
    if r.entries.is_empty() {
        let _ = writeln!(out, "nothing cached for {} {}", r.name, r.qtype);
        return out;
    }
    for (i, e) in r.entries.iter().enumerate() {
        let freshness = if e.ttl_remaining_secs == 0 {
            "stale".to_string()
        } else {
            format!("fresh for {} s", e.ttl_remaining_secs)
        };
        let _ = writeln!(
            out,
            "{} {} #{}: {} ({}), stored {} s ago, {freshness}, from {}, {} hit(s)",
            r.name,
            r.qtype,
            i + 1,
            e.rcode,
            e.kind,
            e.age_secs,
            if e.upstream.is_empty() {
                "-"
            } else {
                &e.upstream
            },
            e.hits
        );
        for rec in &e.records {
            let _ = writeln!(out, "  {rec}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::api::DnsEntryView;

    #[test]
    fn entries_list_their_state_then_their_records() {
        let r = DnsShowReport {
            name: "www.test.lab".into(),
            qtype: "A".into(),
            entries: vec![DnsEntryView {
                rcode: "NOERROR".into(),
                kind: "positive".into(),
                age_secs: 3,
                ttl_remaining_secs: 297,
                upstream: "10.77.2.2:53".into(),
                hits: 2,
                records: vec!["www.test.lab. 297 IN A 10.9.9.9".into()],
            }],
        };
        let text = show(&r);
        assert!(
            text.contains("NOERROR (positive), stored 3 s ago, fresh for 297 s"),
            "{text}"
        );
        assert!(
            text.contains("\n  www.test.lab. 297 IN A 10.9.9.9\n"),
            "{text}"
        );
        let empty = DnsShowReport {
            entries: vec![],
            ..r
        };
        assert_eq!(show(&empty), "nothing cached for www.test.lab A\n");
    }
}
