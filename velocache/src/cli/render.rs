//! Human-readable output of the admin commands: aligned tables and `key: value` blocks.
use std::fmt::Write as _;

use crate::admin::api::{
    CacheEntry, CacheListing, CallRecord, CallsReport, FaultView, RecordReport, ReloadReport,
    RulesReloadReport, RulesReport, Sample, StatsReport, StatusReport, WarmReport,
};

/// Left-aligned columns, two spaces apart; the last column is not padded.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        let last = cells.len().saturating_sub(1);
        for (i, c) in cells.iter().enumerate() {
            if i == last {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 172_800 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn sample_name(s: &Sample, strip: &str) -> String {
    let name = s.name.strip_prefix(strip).unwrap_or(&s.name);
    if s.labels.is_empty() {
        name.to_string()
    } else {
        let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{name}{{{}}}", labels.join(","))
    }
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

/// `velocache stats`.
pub fn stats(s: &StatsReport) -> String {
    let rows: Vec<Vec<String>> = s
        .services
        .iter()
        .map(|svc| {
            let k = |names: &[&str]| -> u64 {
                names
                    .iter()
                    .map(|n| svc.kernel.get(*n).copied().unwrap_or(0))
                    .sum()
            };
            vec![
                svc.service.clone(),
                if svc.enabled { "on" } else { "off" }.into(),
                svc.active_sessions.to_string(),
                svc.flows.to_string(),
                k(&["steered_listener", "steered_reused_port"]).to_string(),
                k(&[
                    "steered_established",
                    "steered_time_wait",
                    "steered_fragment",
                ])
                .to_string(),
                k(&["observed_new", "observed", "denied_sni"]).to_string(),
                k(&[
                    "passed_no_listener",
                    "assign_failed",
                    "disabled",
                    "passed_time_wait",
                    "passed_fragments_ahead",
                    "lookup_dropped",
                    "passed_untracked",
                ])
                .to_string(),
                k(&["bypassed_client", "bypassed_destination", "gateway_local"]).to_string(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "SERVICE",
            "STATE",
            "ACTIVE",
            "FLOWS",
            "NEW(KERNEL)",
            "PACKETS",
            "OBSERVED",
            "PASSED",
            "BYPASSED",
        ],
        &rows,
    );
    out.push_str(
        "  ACTIVE/FLOWS: flows the daemon handles now / since start. Kernel packet counters: \
         NEW = first packets steered to a listener (directly, or through a closing socket whose \
         port the client reused), PACKETS = later packets and fragments of intercepted flows, \
         OBSERVED = packets of TLS flows forwarded by the kernel and observed, not steered (denied \
         ones included), PASSED = fail-open (no daemon socket) or untracked, BYPASSED = bypass \
         lists or gateway-local. `--json` lists every counter.\n",
    );
    for svc in &s.services {
        if svc.metrics.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{}:", svc.service);
        let strip = format!("velocache_{}_", svc.service);
        let rows: Vec<Vec<String>> = svc
            .metrics
            .iter()
            .map(|m| vec![format!("  {}", sample_name(m, &strip)), number(m.value)])
            .collect();
        out.push_str(&table(&["  METRIC", "VALUE"], &rows));
    }
    let w = &s.warmup;
    let _ = writeln!(
        out,
        "\nwarm-up: {} ({}/{} done, {} ok, {} failed, {}){}",
        w.state,
        w.done,
        w.total,
        w.ok,
        w.failed,
        bytes(w.bytes),
        w.last_error
            .as_deref()
            .map(|e| format!("; last error: {e}"))
            .unwrap_or_default()
    );
    let _ = writeln!(out, "uptime: {}", duration(s.uptime_secs));
    if let Some(line) = shared_tier(&s.daemon) {
        out.push_str(&line);
    }
    for d in &s.daemon {
        let value = if d.name.ends_with("_bytes") {
            bytes(d.value as u64)
        } else {
            number(d.value)
        };
        let _ = writeln!(out, "{}: {value}", sample_name(d, "velocache_"));
    }
    out
}

/// The shared tier's one-line summary (`[shared]`), from its `velocache_shared_*` samples.
fn shared_tier(samples: &[Sample]) -> Option<String> {
    let up = samples.iter().find(|d| d.name == "velocache_shared_up")?;
    let sum = |name: &str, direction: Option<&str>| -> u64 {
        samples
            .iter()
            .filter(|d| d.name == name)
            .filter(|d| {
                direction.is_none_or(|w| d.labels.get("direction").map(String::as_str) == Some(w))
            })
            .map(|d| d.value as u64)
            .sum()
    };
    let n = |what: &str| sum(&format!("velocache_shared_{what}_total"), None);
    Some(format!(
        "shared tier: {} (hits {}, misses {}, collapsed {}, errors {}, digest mismatches {}, \
         slices uploaded {}, dropped {}, read {}, written {}, purges applied {})\n",
        if up.value >= 1.0 { "up" } else { "down" },
        n("hits"),
        n("misses"),
        n("collapsed"),
        n("errors"),
        n("digest_mismatches"),
        n("uploads"),
        n("upload_drops"),
        bytes(sum("velocache_shared_bytes_total", Some("read"))),
        bytes(sum("velocache_shared_bytes_total", Some("write"))),
        n("purges_applied"),
    ))
}

/// `velocache service status`.
pub fn status(s: &StatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "velocache {} ({}), pid {}, up {}",
        s.version,
        s.state,
        s.pid,
        duration(s.uptime_secs)
    );
    let _ = writeln!(
        out,
        "config:      {}",
        s.config_file.as_deref().unwrap_or("(defaults)")
    );
    let _ = writeln!(
        out,
        "rules:       {} ({} rules)",
        s.rules_file.as_deref().unwrap_or("(none)"),
        s.rules
    );
    let _ = writeln!(
        out,
        "interfaces:  {}",
        if s.interfaces.is_empty() {
            "(none: nothing is intercepted)".to_string()
        } else {
            s.interfaces.join(", ")
        }
    );
    let _ = writeln!(out, "sessions:    {} active", s.active_sessions);
    let _ = writeln!(out, "admin:       {}", s.admin.socket);
    if let Some(t) = &s.admin.tcp {
        let _ = writeln!(out, "admin tcp:   {t}");
    }
    if let Some(m) = &s.admin.metrics {
        let _ = writeln!(out, "metrics:     http://{m}/metrics");
    }
    if !s.restart_required.is_empty() {
        let _ = writeln!(
            out,
            "restart required for: {}",
            s.restart_required.join(", ")
        );
    }
    if let Some(r) = &s.last_reload {
        let _ = writeln!(
            out,
            "last reload: {} ({})",
            if r.ok() { "ok" } else { "FAILED" },
            r.trigger
        );
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = s
        .services
        .iter()
        .map(|svc| {
            vec![
                svc.service.clone(),
                if svc.enabled { "on" } else { "off" }.into(),
                svc.ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                svc.listen_port.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(&["SERVICE", "STATE", "PORTS", "LISTENER"], &rows));
    out
}

/// `velocache service reload`.
pub fn reload(r: &ReloadReport) -> String {
    let mut out = String::new();
    let c = &r.config;
    match &c.error {
        Some(e) => {
            let _ = writeln!(
                out,
                "configuration: REFUSED, the running configuration stays: {e}"
            );
        }
        None => {
            let _ = writeln!(
                out,
                "configuration: reloaded from {}",
                c.file.as_deref().unwrap_or("(defaults and environment)")
            );
            if c.applied.is_empty() {
                out.push_str("  no live setting changed\n");
            } else {
                let _ = writeln!(out, "  applied: {}", c.applied.join(", "));
            }
        }
    }
    if !c.restart_required.is_empty() {
        let _ = writeln!(
            out,
            "  waiting for a restart: {}",
            c.restart_required.join(", ")
        );
    }
    out.push_str(&rules_reload(&r.rules));
    out
}

/// `velocache rules reload`.
pub fn rules_reload(r: &RulesReloadReport) -> String {
    match &r.error {
        Some(e) => format!("rules: REFUSED, {} rules stay in force: {e}\n", r.rules),
        None => format!(
            "rules: {} rules from {}\n",
            r.rules,
            r.file.as_deref().unwrap_or("(no rules file)")
        ),
    }
}

/// `velocache record start/stop/status`.
pub fn record(r: &RecordReport) -> String {
    let host = r.host.as_deref().unwrap_or("-");
    let file = r.file.as_deref().unwrap_or("-");
    match r.state.as_str() {
        "recording" => format!(
            "recording {host}: {} requests so far{}; file (written at stop): {file}\n",
            r.entries,
            r.ends_at
                .map(|t| format!(", stops by itself at unix time {t}"))
                .unwrap_or_default()
        ),
        "stopped" => format!(
            "recorded {host}: {} requests ({} dropped) in {file}\n",
            r.entries, r.dropped
        ),
        _ => "no recording yet\n".to_string(),
    }
}

/// A rule's fault, as `fault(delay_ms=500,abort=503@50%,bandwidth_kbps=64)`.
fn fault(f: &FaultView) -> String {
    let mut parts = Vec::new();
    if let Some(d) = f.delay_ms {
        parts.push(format!("delay_ms={d}"));
    }
    if let Some(s) = f.abort_status {
        parts.push(format!("abort={s}@{}%", f.abort_percent.unwrap_or(100.0)));
    }
    if let Some(b) = f.bandwidth_kbps {
        parts.push(format!("bandwidth_kbps={b}"));
    }
    format!("fault({})", parts.join(","))
}

/// `velocache rules show`.
pub fn rules(r: &RulesReport) -> String {
    let mut out = format!("rules file: {}\n", r.file.as_deref().unwrap_or("(none)"));
    let rows: Vec<Vec<String>> = r
        .rules
        .iter()
        .map(|rule| {
            let mut m = Vec::new();
            if !rule.match_host.is_empty() {
                m.push(format!("host={}", rule.match_host.join("|")));
            }
            if !rule.match_path.is_empty() {
                m.push(format!("path={}", rule.match_path.join("|")));
            }
            if !rule.match_method.is_empty() {
                m.push(format!("method={}", rule.match_method.join("|")));
            }
            if !rule.match_content_type.is_empty() {
                m.push(format!("type={}", rule.match_content_type.join("|")));
            }
            if !rule.services.is_empty() {
                m.push(format!("services={}", rule.services.join(",")));
            }
            if let Some(f) = &rule.fault {
                m.push(fault(f));
            }
            vec![
                rule.name.clone(),
                rule.line.to_string(),
                rule.action.clone(),
                rule.ttl_override_secs
                    .map(duration)
                    .unwrap_or_else(|| "-".into()),
                if m.is_empty() {
                    "(everything)".into()
                } else {
                    m.join(" ")
                },
            ]
        })
        .collect();
    out.push_str(&table(&["NAME", "LINE", "ACTION", "TTL", "MATCH"], &rows));
    if !r.warmup_urls.is_empty() {
        let _ = writeln!(out, "\nwarm-up URLs:");
        for u in &r.warmup_urls {
            let _ = writeln!(out, "  {u}");
        }
    }
    out
}

/// `velocache cache ls`.
pub fn cache_listing(l: &CacheListing) -> String {
    cache_listing_at(l, unix_now())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How long an object stays fresh from `now`: `4h48m`, or `stale`.
fn freshness(fresh_until: Option<u64>, now: u64) -> String {
    match fresh_until {
        Some(t) if t > now => duration(t - now),
        Some(_) => "stale".into(),
        None => "-".into(),
    }
}

/// A unix time as RFC 3339 (UTC) and relative to `now`.
fn when(t: u64, now: u64) -> String {
    let at = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(t),
    );
    if t > now {
        format!("{at} (in {})", duration(t - now))
    } else {
        format!("{at} ({} ago)", duration(now - t))
    }
}

fn cache_listing_at(l: &CacheListing, now: u64) -> String {
    let rows: Vec<Vec<String>> = l
        .entries
        .iter()
        .map(|e| {
            vec![
                e.status.to_string(),
                bytes(e.size_bytes),
                e.hits.map_or("-".into(), |h| h.to_string()),
                freshness(e.fresh_until, now),
                e.content_type.clone().unwrap_or_else(|| "-".into()),
                e.url.clone(),
            ]
        })
        .collect();
    let mut out = table(&["STATUS", "SIZE", "HITS", "FRESH", "TYPE", "URL"], &rows);
    let _ = writeln!(out, "{} of {} objects", l.entries.len(), l.total);
    out
}

/// `velocache cache show`.
pub fn cache_entry(e: &CacheEntry) -> String {
    cache_entry_at(e, unix_now())
}

fn cache_entry_at(e: &CacheEntry, now: u64) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: &str| {
        let _ = writeln!(out, "{:<15}{v}", format!("{k}:"));
    };
    line("url", &e.url);
    if let Some(k) = &e.key {
        line("key", k);
    }
    line("status", &e.status.to_string());
    line("size", &bytes(e.size_bytes));
    if let Some(t) = &e.content_type {
        line("content-type", t);
    }
    if let Some(t) = e.stored_at {
        line("stored", &when(t, now));
    }
    if let Some(t) = e.fresh_until {
        let state = if t > now {
            "fresh until"
        } else {
            "stale since"
        };
        line(state, &when(t, now));
    }
    if let Some(h) = e.hits {
        line("hits", &h.to_string());
    }
    for (k, v) in &e.details {
        line(k, v);
    }
    out
}

/// `velocache cache warm`.
pub fn warm(r: &WarmReport, started_only: bool) -> String {
    if started_only {
        return format!(
            "warming {} URLs in the background (see `velocache stats`)\n",
            r.total
        );
    }
    let rows: Vec<Vec<String>> = r
        .results
        .iter()
        .map(|w| {
            vec![
                if w.ok { "ok" } else { "FAILED" }.into(),
                w.status.map_or("-".into(), |s| s.to_string()),
                bytes(w.bytes),
                w.error.clone().unwrap_or_else(|| w.outcome.clone()),
                w.url.clone(),
            ]
        })
        .collect();
    let mut out = table(&["RESULT", "STATUS", "SIZE", "OUTCOME", "URL"], &rows);
    let ok = r.results.iter().filter(|w| w.ok).count();
    let _ = writeln!(out, "{ok} of {} URLs in the cache", r.total);
    out
}

fn call_rows(calls: &[CallRecord]) -> Vec<Vec<String>> {
    calls
        .iter()
        .map(|c| {
            let media = c
                .media
                .iter()
                .map(|m| {
                    format!(
                        "{} {} {}pkt{}{}",
                        m.direction,
                        m.codec.as_deref().unwrap_or(&m.kind),
                        m.packets,
                        m.loss_pct
                            .map(|l| format!(" loss {l:.1}%"))
                            .unwrap_or_default(),
                        m.mos.map(|v| format!(" MOS {v:.1}")).unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            vec![
                c.state.clone(),
                c.from.clone(),
                c.to.clone(),
                c.duration_ms.map_or("-".into(), |d| duration(d / 1000)),
                c.final_status
                    .map(|s| {
                        format!("{s} {}", c.reason.as_deref().unwrap_or(""))
                            .trim()
                            .to_string()
                    })
                    .unwrap_or_else(|| "-".into()),
                if media.is_empty() { "-".into() } else { media },
                if c.tags.is_empty() {
                    "-".into()
                } else {
                    c.tags
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                },
                c.call_id.clone(),
            ]
        })
        .collect()
}

/// `velocache calls`.
pub fn calls(r: &CallsReport) -> String {
    let header = [
        "STATE", "FROM", "TO", "DURATION", "FINAL", "MEDIA", "TAGS", "CALL-ID",
    ];
    let mut out = format!("active calls: {}\n", r.active.len());
    if !r.active.is_empty() {
        out.push_str(&table(&header, &call_rows(&r.active)));
    }
    let _ = writeln!(out, "\nrecent calls: {}", r.recent.len());
    if !r.recent.is_empty() {
        out.push_str(&table(&header, &call_rows(&r.recent)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_units_read_well() {
        let t = table(
            &["A", "LONGER"],
            &[
                vec!["xyz".into(), "1".into()],
                vec!["q".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A    LONGER\nxyz  1\nq    22\n");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(3700), "61m40s");
        assert_eq!(duration(30 * 86_400), "30d");
        assert_eq!(duration(3 * 86_400 + 7200), "3d02h");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.250");
    }

    #[test]
    fn cache_objects_show_their_age_and_freshness() {
        let entry = CacheEntry {
            url: "http://mirror.lab/a.deb".into(),
            key: Some("url:mirror.lab@10.77.2.2/a.deb".into()),
            status: 200,
            size_bytes: 2048,
            content_type: None,
            stored_at: Some(1_000_000),
            fresh_until: Some(1_003_600),
            hits: Some(3),
            details: [("complete".to_string(), "true".to_string())].into(),
        };
        let shown = cache_entry_at(&entry, 1_000_090);
        assert!(
            shown.contains("stored:        1970-01-12T13:46:40Z (90s ago)\n"),
            "{shown}"
        );
        assert!(shown.contains("fresh until:   1970-01-12T14:46:40Z (in 58m30s)\n"));
        assert!(shown.contains("hits:          3\n"));
        assert!(shown.contains("complete:      true\n"));
        assert!(cache_entry_at(&entry, 1_003_700).contains("stale since:"));
        let listing = CacheListing {
            entries: vec![entry],
            total: 5,
        };
        let table = cache_listing_at(&listing, 1_000_090);
        assert_eq!(
            table,
            "STATUS  SIZE     HITS  FRESH   TYPE  URL\n\
             200     2.0 KiB  3     58m30s  -     http://mirror.lab/a.deb\n\
             1 of 5 objects\n"
        );
    }
}
