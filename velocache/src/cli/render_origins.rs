//! `velocache origins` for people: one row per origin — breaker state, error ratio over the
//! window, latency, failures — and below the table why each open breaker opened and what the
//! active checks saw.
use std::fmt::Write as _;

use super::render::table;
use crate::admin::api::OriginsReport;

/// The report as a table.
pub fn origins(r: &OriginsReport) -> String {
    if r.origins.is_empty() {
        return "no origins seen yet\n".into();
    }
    let rows: Vec<Vec<String>> = r
        .origins
        .iter()
        .map(|o| {
            vec![
                o.origin.clone(),
                o.hosts.join(","),
                o.state.clone(),
                format!("{:.0}%", o.error_ratio * 100.0),
                format!("{}/{}", o.window_failures, o.window_requests),
                o.latency_ms.map_or("-".into(), |l| format!("{l:.1}")),
                o.requests.to_string(),
                o.failures.to_string(),
                o.rejected.to_string(),
                o.health_check.as_ref().map_or("-".into(), |c| match c.up {
                    Some(true) => "up".into(),
                    Some(false) => "down".into(),
                    None => "pending".into(),
                }),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "ORIGIN", "HOSTS", "BREAKER", "ERRORS", "WINDOW", "LAT_MS", "REQUESTS", "FAILED",
            "REFUSED", "CHECK",
        ],
        &rows,
    );
    let _ = writeln!(
        out,
        "\nwindow {} s; breakers {}",
        r.window_secs,
        if r.breaker_enabled {
            "on"
        } else {
            "off (watching only)"
        }
    );
    for o in &r.origins {
        if o.state != "closed" {
            let _ = writeln!(
                out,
                "{}: {} — {} (probes in {} s)",
                o.origin, o.state, o.reason, o.retry_after_secs
            );
        }
        if let Some(c) = &o.health_check {
            let _ = writeln!(
                out,
                "{}: check GET {} every {} ms (rule {}): {} after {} checks",
                o.origin,
                c.path,
                c.interval_ms,
                c.rule,
                c.last.as_deref().unwrap_or("not yet"),
                c.checks
            );
        }
    }
    out
}
