//! `velocache calls show|capture`: one call's ladder (drawn like sngrep: one column per
//! endpoint, an arrow per message) with its per-direction media figures, and a call's capture
//! to a pcap file (start, wait, stop, download). Data comes from the admin API's call
//! endpoints; the output is text, the API's JSON with `--json`, and for `capture` the file.
use std::{fmt::Write as _, path::PathBuf, time::Duration};

use serde::Serialize;

use super::{CallsCommand, CliError, exit};
use crate::{
    admin::calls_api::{CallShow, CaptureRequest, CaptureStatus, calls_paths},
    control::Client,
};

fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("velocache: error: rendering JSON: {e}"),
    }
}

pub(super) async fn run(
    client: &Client,
    command: CallsCommand,
    json: bool,
) -> Result<u8, CliError> {
    match command {
        CallsCommand::Show { call_id } => {
            let path = format!(
                "{}?call_id={}",
                calls_paths::SHOW,
                crate::control::query_escape(&call_id)
            );
            let show: CallShow = client.get(&path).await?;
            if json {
                print_json(&show);
            } else {
                print!("{}", render_show(&show));
            }
            Ok(exit::OK)
        }
        CallsCommand::Capture {
            call_id,
            seconds,
            output,
        } => {
            let req = CaptureRequest {
                call_id: call_id.clone(),
            };
            let _: CaptureStatus = client.post(calls_paths::CAPTURE, &req).await?;
            if !json {
                eprintln!("capturing {call_id} for {seconds} s…");
            }
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            let status: CaptureStatus = client.post(calls_paths::CAPTURE_STOP, &req).await?;
            let path = format!(
                "{}?call_id={}",
                calls_paths::PCAP,
                crate::control::query_escape(&call_id)
            );
            let file = client.get_bytes(&path).await?;
            let out =
                output.unwrap_or_else(|| PathBuf::from(format!("{}.pcap", safe_name(&call_id))));
            std::fs::write(&out, &file)
                .map_err(|e| CliError::Failed(format!("writing {}: {e}", out.display())))?;
            if json {
                print_json(&status);
            } else {
                println!(
                    "{}: {} packets ({} RTP), {} bytes{}",
                    out.display(),
                    status.packets,
                    status.rtp_packets,
                    file.len(),
                    if status.stopped.starts_with("limit") {
                        format!(" — stopped early, {}", status.stopped)
                    } else {
                        String::new()
                    }
                );
            }
            Ok(exit::OK)
        }
    }
}

/// A Call-ID as a file name: path separators and other odd characters become `_`.
fn safe_name(call_id: &str) -> String {
    call_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect()
}

/// The ladder: one column per endpoint (`ip:port`, in order of appearance), one arrow per
/// message with its time offset, label and CSeq; then the media figures.
pub(super) fn render_show(s: &CallShow) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "call {}  [{}]", s.call_id, s.state);
    let _ = writeln!(out, "  from {}\n  to   {}", s.from, s.to);
    let mut ends: Vec<&str> = Vec::new();
    for m in &s.messages {
        for e in [m.src.as_str(), m.dst.as_str()] {
            if !ends.contains(&e) {
                ends.push(e);
            }
        }
    }
    const COL: usize = 28;
    if !ends.is_empty() {
        out.push('\n');
        let mut head = String::from("           ");
        for e in &ends {
            let _ = write!(head, "{e:<COL$}");
        }
        let _ = writeln!(out, "{}", head.trim_end());
    }
    if s.omitted > 0 {
        let _ = writeln!(out, "  … {} earlier messages not kept", s.omitted);
    }
    let t0 = s.messages.first().map_or(0, |m| m.ts_ms);
    for m in &s.messages {
        let (Some(a), Some(b)) = (
            ends.iter().position(|e| *e == m.src),
            ends.iter().position(|e| *e == m.dst),
        ) else {
            continue;
        };
        let (lo, hi) = (a.min(b), a.max(b));
        let mut line = format!("{:>9.3}  ", (m.ts_ms.saturating_sub(t0)) as f64 / 1000.0);
        line.push_str(&" ".repeat(lo * COL));
        let width = ((hi - lo) * COL).max(4);
        let label = format!(" {} ({}) ", m.label, m.cseq);
        let body_len = width.saturating_sub(2);
        let arrow: String = if a <= b {
            format!("{:-<body_len$}->", format!("-{label}"))
        } else {
            format!("<-{:-<body_len$}", format!("-{label}"))
        };
        line.push_str(&arrow);
        let _ = writeln!(out, "{line}  {} {}B", m.transport, m.bytes);
    }
    if !s.streams.is_empty() {
        let _ = writeln!(
            out,
            "\n  {:<12} {:<22} {:<22} {:>8} {:>6} {:>7} {:>9} {:>5}",
            "direction", "src", "dst", "packets", "lost", "loss %", "jitter ms", "MOS"
        );
        for f in &s.streams {
            let _ = writeln!(
                out,
                "  {:<12} {:<22} {:<22} {:>8} {:>6} {:>7.2} {:>9.3} {:>5}",
                f.direction,
                f.src,
                f.dst,
                f.packets,
                f.lost,
                f.loss_pct,
                f.jitter_ms,
                f.mos.map_or("-".to_string(), |m| format!("{m:.2}"))
            );
        }
    }
    if let Some(c) = &s.capture {
        let _ = writeln!(
            out,
            "\n  capture: {} — {} packets ({} RTP), {} bytes{}",
            if c.active { "running" } else { "stopped" },
            c.packets,
            c.rtp_packets,
            c.bytes,
            if c.stopped.is_empty() {
                String::new()
            } else {
                format!(" ({})", c.stopped)
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::calls_api::{LadderMessage, StreamFigures};

    fn m(ts: u64, src: &str, dst: &str, label: &str) -> LadderMessage {
        LadderMessage {
            ts_ms: ts,
            direction: String::new(),
            src: src.into(),
            dst: dst.into(),
            transport: "udp".into(),
            label: label.into(),
            cseq: format!("1 {label}"),
            bytes: 500,
        }
    }

    #[test]
    fn the_ladder_draws_one_arrow_per_message_in_both_directions() {
        let s = CallShow {
            call_id: "abc".into(),
            state: "confirmed".into(),
            messages: vec![
                m(1000, "10.1.0.2:5060", "10.2.0.2:5060", "INVITE"),
                m(1250, "10.2.0.2:5060", "10.1.0.2:5060", "200 OK"),
            ],
            streams: vec![StreamFigures {
                direction: "client->far".into(),
                packets: 50,
                mos: Some(4.4),
                ..StreamFigures::default()
            }],
            ..CallShow::default()
        };
        let text = render_show(&s);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("10.1.0.2:5060") && l.contains("10.2.0.2:5060"))
        );
        let invite = lines
            .iter()
            .find(|l| l.contains("INVITE (1 INVITE)"))
            .unwrap();
        assert!(invite.trim_start().starts_with("0.000") && invite.contains("->"));
        let ok = lines.iter().find(|l| l.contains("200 OK")).unwrap();
        assert!(ok.contains("0.250") && ok.contains("<-"));
        assert!(text.contains("client->far") && text.contains("4.40"));
    }

    #[test]
    fn call_ids_are_encoded_for_queries_and_file_names() {
        assert_eq!(crate::control::query_escape("a b/c@d"), "a%20b%2Fc%40d");
        assert_eq!(safe_name("../x@y"), ".._x@y");
    }
}
