//! `velocache live` and `velocache inspect`: the dashboard's live view and inspector in a
//! terminal, read through the same admin API (`/v1/live/history`, `/v1/live/inspect`).
//!
//! `live --follow` polls the history once a second and prints the records whose sequence
//! number it has not printed yet; a gap in the numbers (the history moved on faster than the
//! poll) is said as such, never hidden.
use std::fmt::Write as _;

use super::CliError;
use crate::{
    admin::api::paths,
    control::Client,
    live::{Exchange, History, Record, record::Head},
};

/// Print the last `limit` records, and with `follow` every new one until interrupted.
pub(super) async fn live(
    client: &Client,
    limit: usize,
    follow: bool,
    json: bool,
) -> Result<(), CliError> {
    let limit = limit.to_string();
    let h: History = client
        .get_query(paths::LIVE_HISTORY, &[("limit", &limit)])
        .await?;
    let mut last = 0;
    for r in &h.records {
        print!("{}", line(r, json));
        last = r.seq;
    }
    if !follow {
        return Ok(());
    }
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let h: History = client.get(paths::LIVE_HISTORY).await?;
        let new: Vec<&Record> = h.records.iter().filter(|r| r.seq > last).collect();
        if let Some(first) = new.first()
            && last > 0
            && first.seq > last + 1
        {
            println!(
                "… {} record(s) not shown (more than the history keeps)",
                first.seq - last - 1
            );
        }
        for r in new {
            print!("{}", line(r, json));
            last = r.seq;
        }
    }
}

/// One record as one line (or one JSON object).
pub fn line(r: &Record, json: bool) -> String {
    if json {
        return serde_json::to_string(r)
            .map_or_else(|e| format!("{{\"error\":\"{e}\"}}\n"), |s| s + "\n");
    }
    let time = time_of(r.ts_ms);
    let count = if r.count > 1 {
        format!(" ×{}", r.count)
    } else {
        String::new()
    };
    let rule = if r.rule.is_empty() {
        String::new()
    } else {
        format!(" rule={}", r.rule)
    };
    format!(
        "{time} {:<5} {:<21} {:<10} {} {} {}{count} {}B{rule}{}\n",
        r.service,
        r.client,
        r.status,
        r.host,
        r.what,
        if r.cache.is_empty() { "-" } else { &r.cache },
        r.bytes,
        if r.id.is_empty() {
            String::new()
        } else {
            format!(" id={}", r.id)
        }
    )
}

/// `HH:MM:SS.mmm` (UTC) of a Unix-ms time.
fn time_of(ms: u64) -> String {
    let secs = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60,
        ms % 1000
    )
}

fn head(out: &mut String, title: &str, h: &Head) {
    if h.request_line.is_empty() && h.status_line.is_empty() {
        let _ = writeln!(out, "{title}: (none)");
        return;
    }
    let _ = writeln!(out, "{title}:");
    let _ = writeln!(out, "  > {}", h.request_line);
    for (k, v) in &h.request_headers {
        let _ = writeln!(out, "  > {k}: {v}");
    }
    if !h.status_line.is_empty() {
        let _ = writeln!(out, "  < {}", h.status_line);
        for (k, v) in &h.response_headers {
            let _ = writeln!(out, "  < {k}: {v}");
        }
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1} ms"))
}

/// The inspector's view of one request.
pub fn exchange(e: &Exchange) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {} → {} ({}) {} {}",
        e.service, e.client, e.host, e.orig_dst, e.status, e.id
    );
    let c = &e.cache;
    let _ = writeln!(out, "cache: {} — {}", c.status, c.explanation);
    if !c.key.is_empty() {
        let _ = writeln!(out, "  key: {}", c.key);
    }
    if let (Some(l), Some(a)) = (c.freshness_lifetime_secs, c.age_secs) {
        let _ = writeln!(out, "  freshness lifetime {l} s, age {a} s");
    }
    if !c.not_stored.is_empty() {
        let _ = writeln!(out, "  not stored: {}", c.not_stored);
    }
    let t = &e.timing;
    let _ = writeln!(
        out,
        "timing: to origin {}, origin first byte {}, client first byte {}, total {:.1} ms",
        ms(t.upstream_sent_ms),
        ms(t.origin_ttfb_ms),
        ms(t.client_ttfb_ms),
        t.total_ms
    );
    let _ = writeln!(
        out,
        "bytes: {} from the cache, {} from the origin{}",
        t.bytes_from_cache,
        t.bytes_from_origin,
        if e.complete { "" } else { " (incomplete)" }
    );
    if !e.error.is_empty() {
        let _ = writeln!(out, "error: {}", e.error);
    }
    head(&mut out, "client ⇄ gateway", &e.client_side);
    head(&mut out, "gateway ⇄ origin", &e.origin_side);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_readable_line() {
        let r = Record {
            seq: 3,
            ts_ms: 3_723_004,
            service: "http".into(),
            client: "10.0.0.2:4000".into(),
            host: "a.lab".into(),
            what: "GET /x".into(),
            status: "200".into(),
            cache: "hit".into(),
            bytes: 12,
            id: "abc".into(),
            count: 1,
            ..Record::default()
        };
        assert_eq!(
            line(&r, false),
            "01:02:03.004 http  10.0.0.2:4000         200        a.lab GET /x hit 12B id=abc\n"
        );
        assert!(line(&r, true).starts_with("{\"seq\":3,"));
    }

    #[test]
    fn an_exchange_shows_the_reason_then_both_sides() {
        let e = Exchange {
            id: "t1".into(),
            status: 200,
            complete: true,
            cache: crate::live::record::CacheReason {
                status: "miss".into(),
                not_stored: "no-store".into(),
                explanation: "Fetched from the origin and not stored: no-store.".into(),
                ..Default::default()
            },
            client_side: Head {
                request_line: "GET /x HTTP/1.1".into(),
                request_headers: vec![("host".into(), "a.lab".into())],
                status_line: "HTTP/1.1 200 OK".into(),
                response_headers: vec![],
            },
            ..Exchange::default()
        };
        let text = exchange(&e);
        assert!(
            text.contains("cache: miss — Fetched from the origin and not stored: no-store."),
            "{text}"
        );
        assert!(text.contains("  not stored: no-store\n"), "{text}");
        assert!(
            text.contains("  > host: a.lab\n  < HTTP/1.1 200 OK\n"),
            "{text}"
        );
        assert!(text.contains("gateway ⇄ origin: (none)\n"), "{text}");
    }
}
