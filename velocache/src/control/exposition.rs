//! Reading OpenMetrics text back into samples, so that `stats` is rendered from the metrics
//! registry itself (one source of truth) rather than from a second set of counters.
//!
//! Input is the text `prometheus_client::encoding::text::encode` produces for our own registry;
//! output is the list of samples with their family's type. The grammar is OpenMetrics 1.0's:
//! `# TYPE`/`# HELP`/`# UNIT`/`# EOF` lines and `name{label="value",…} value [timestamp]
//! [# exemplar]`, label values with `\\`, `\"` and `\n` escapes. prometheus-client has no API to
//! read a registry's values, and the parser crates on crates.io split labels with regexes (a
//! comma in a label value breaks them) or are LGPL, hence this small parser; the lab tests
//! check `/metrics` with the Prometheus project's own OpenMetrics parser.
use std::collections::BTreeMap;

use thiserror::Error;

use crate::admin::api::Sample;

/// A line that is not valid OpenMetrics text.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("metrics text line {line}: {reason}")]
pub struct ExpositionError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// A parsed sample and the type its family declared.
#[derive(Debug, Clone, PartialEq)]
pub struct TypedSample {
    /// The sample.
    pub sample: Sample,
    /// `counter`, `gauge`, `histogram`, `info`, … (`unknown` if undeclared).
    pub kind: String,
    /// The family name (the sample name without `_total`, `_bucket`, `_count`, …).
    pub family: String,
}

/// Parse every sample of an OpenMetrics text.
pub fn parse(text: &str) -> Result<Vec<TypedSample>, ExpositionError> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let err = |reason: &str| ExpositionError {
            line: i + 1,
            reason: reason.to_string(),
        };
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    types.insert(name.to_string(), kind.to_string());
                }
                (Some("EOF"), None, None) => break,
                (Some("HELP" | "UNIT"), Some(_), _) => {}
                _ => return Err(err("unknown comment line")),
            }
            continue;
        }
        let sample = parse_sample(line).map_err(|r| err(&r))?;
        let (family, kind) = family_of(&sample.name, &types);
        out.push(TypedSample {
            sample,
            kind,
            family,
        });
    }
    Ok(out)
}

/// The declared family a sample belongs to: the longest `# TYPE` name that is the sample's name
/// or its name less a standard suffix.
fn family_of(name: &str, types: &BTreeMap<String, String>) -> (String, String) {
    const SUFFIXES: [&str; 7] = [
        "", "_total", "_bucket", "_count", "_sum", "_created", "_info",
    ];
    for suffix in SUFFIXES {
        if let Some(base) = name.strip_suffix(suffix)
            && let Some(kind) = types.get(base)
        {
            return (base.to_string(), kind.clone());
        }
    }
    (name.to_string(), "unknown".to_string())
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("a sample must start with a metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let rest = rest
        .strip_prefix(' ')
        .ok_or("expected a space before the value")?;
    // Value, then an optional timestamp and an optional ` # exemplar`.
    let value_text = rest.split(' ').next().unwrap_or_default();
    let value = parse_value(value_text)?;
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parse `k="v",…}`; returns what follows the closing brace.
fn parse_labels<'a>(
    mut s: &'a str,
    labels: &mut BTreeMap<String, String>,
) -> Result<&'a str, String> {
    loop {
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let eq = s.find('=').ok_or("label without `=`")?;
        let key = &s[..eq];
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad label name `{key}`"));
        }
        let mut chars = s[eq + 1..].char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err("label value must be quoted".into());
        }
        let mut value = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => value.push('\n'),
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    _ => return Err("bad escape in label value".into()),
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.ok_or("unterminated label value")?;
        labels.insert(key.to_string(), value);
        s = &s[eq + 1 + end + 1..];
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err("expected `,` or `}` after a label".into());
        }
    }
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("bad value `{s}`")),
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::{
        metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
        registry::Registry,
    };

    use super::*;

    #[test]
    fn reads_back_what_prometheus_client_writes() {
        let mut registry = Registry::with_prefix("velocache");
        let sub = registry.sub_registry_with_prefix("dns");
        let hits: Counter = Counter::default();
        hits.inc_by(7);
        sub.register("hits", "Answers from the cache", hits);
        let fam: Family<Vec<(String, String)>, Gauge> = Family::default();
        fam.get_or_create(&vec![("peer".into(), "a,b=\"c\"\\d\ne".into())])
            .set(-3);
        sub.register("odd", "Labels that need escaping", fam);
        let h = Histogram::new([0.001, 0.01, 0.1]);
        h.observe(0.005);
        h.observe(0.5);
        sub.register("latency_seconds", "Latency", h);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();

        let samples = parse(&text).unwrap();
        let find = |name: &str| {
            samples
                .iter()
                .find(|s| s.sample.name == name)
                .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
        };
        let hits = find("velocache_dns_hits_total");
        assert_eq!(hits.sample.value, 7.0);
        assert_eq!(hits.kind, "counter");
        assert_eq!(hits.family, "velocache_dns_hits");
        let odd = find("velocache_dns_odd");
        assert_eq!(odd.sample.value, -3.0);
        assert_eq!(odd.sample.labels["peer"], "a,b=\"c\"\\d\ne");
        assert_eq!(
            find("velocache_dns_latency_seconds_count").sample.value,
            2.0
        );
        assert_eq!(
            find("velocache_dns_latency_seconds_count").kind,
            "histogram"
        );
        let inf = samples
            .iter()
            .find(|s| s.sample.labels.get("le").map(String::as_str) == Some("+Inf"))
            .unwrap();
        assert_eq!(inf.sample.value, 2.0);
    }

    #[test]
    fn rejects_garbage_with_the_line() {
        for bad in [
            "x{a=1} 2",
            "x{a=\"1} 2",
            "x{a=\"1\" 2",
            "x 1.2.3",
            "{a=\"1\"} 2",
            "# WHAT x",
            "x{a=\"\\q\"} 1",
        ] {
            let text = format!("# TYPE x gauge\n{bad}\n# EOF\n");
            let e = parse(&text).unwrap_err();
            assert_eq!(e.line, 2, "{bad}: {e}");
        }
        assert!(parse("x 1\n").is_ok());
        assert_eq!(parse("x NaN 123\n").unwrap().len(), 1);
        assert_eq!(
            parse("x +Inf # {a=\"b\"} 1\n").unwrap()[0].sample.value,
            f64::INFINITY
        );
    }
}
