//! `velocache replay FILE --to URL`: send a HAR file's requests again and compare.
//!
//! The HAR file (one `record` wrote, or a browser's export) enters as JSON; each entry's request
//! — method, path and query, header fields (redacted ones and hop-by-hop ones left out), its
//! `Host` — is sent to the `--to` address over plain HTTP, one after the other, either when it
//! started in the recording (`--as-recorded`, the default) or as soon as the last one is done
//! (`--fast`), with the recorded request body (`postData`) if it has one. What leaves is a
//! [`ReplayReport`]: per request the recorded and replayed status, the SHA-256 of both bodies
//! and whether they differ, and both latencies — a table, or JSON with `--json`. The daemon is
//! not involved: the CLI is the client.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::{CliError, render};
use crate::http::har::{self, Har, REDACTED};

/// The whole replay.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    /// The HAR file.
    pub file: String,
    /// Where the requests went.
    pub target: String,
    /// `as_recorded` or `fast`.
    pub timing: String,
    /// Per request, in the file's order.
    pub results: Vec<ReplayResult>,
    /// Requests whose status or body differ from the recording (or that failed).
    pub changed: u64,
}

/// One request replayed.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayResult {
    /// 1-based position in the file.
    pub index: usize,
    /// Method.
    pub method: String,
    /// The recorded URL.
    pub url: String,
    /// The recorded status.
    pub recorded_status: u16,
    /// The status now (none: the request failed).
    pub status: Option<u16>,
    /// Whether the status differs.
    pub status_changed: bool,
    /// SHA-256 of the recorded body (none: the recording kept only part of it).
    pub recorded_sha256: Option<String>,
    /// SHA-256 of the body now.
    pub sha256: Option<String>,
    /// Whether the body differs (none: the recorded digest is not known).
    pub body_changed: Option<bool>,
    /// The recorded time, ms.
    pub recorded_ms: f64,
    /// The time now (request sent to whole body received), ms.
    pub ms: Option<f64>,
    /// `ms - recorded_ms`.
    pub latency_delta_ms: Option<f64>,
    /// Why the request failed.
    pub error: Option<String>,
}

/// Header fields a replay never copies from the recording: per-connection ones, and framing
/// (the client frames the body it sends).
fn skipped(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "upgrade"
            | "content-length"
            | "expect"
    ) || name.starts_with(':')
}

/// The recorded body's digest: the one stored, else computed from a complete `text`.
fn recorded_digest(c: &har::Content) -> Option<String> {
    if let Some(d) = &c.sha256 {
        return Some(d.clone());
    }
    if c.truncated {
        return None;
    }
    let body = har::body_bytes(c.text.as_deref().unwrap_or(""), c.encoding.as_deref())?;
    Some(hex::encode(Sha256::digest(&body)))
}

fn started_at(e: &har::Entry) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(
        &e.started_date_time,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()
}

/// Replay `file` against `to`; `fast` ignores the recorded timing.
pub async fn replay(
    file: &Path,
    to: &str,
    fast: bool,
    timeout: Duration,
) -> Result<ReplayReport, CliError> {
    let target: Uri = to
        .parse()
        .map_err(|e| CliError::Usage(format!("--to `{to}`: {e}")))?;
    if target.scheme_str() != Some("http") {
        return Err(CliError::Usage(format!(
            "--to `{to}`: only http:// targets can be replayed to"
        )));
    }
    let authority = target
        .authority()
        .ok_or_else(|| CliError::Usage(format!("--to `{to}`: no host")))?
        .clone();
    let text = std::fs::read(file)
        .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", file.display())))?;
    let har: Har = serde_json::from_slice(&text)
        .map_err(|e| CliError::Failed(format!("{}: not a HAR file: {e}", file.display())))?;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let first = har.log.entries.first().and_then(started_at);
    let t0 = Instant::now();
    let mut results = Vec::with_capacity(har.log.entries.len());
    for (i, e) in har.log.entries.iter().enumerate() {
        if !fast && let (Some(first), Some(at)) = (first, started_at(e)) {
            let offset = (at - first).max(time::Duration::ZERO);
            let due = t0 + Duration::try_from(offset).unwrap_or_default();
            tokio::time::sleep_until(due.into()).await;
        }
        let recorded_sha256 = recorded_digest(&e.response.content);
        let mut r = ReplayResult {
            index: i + 1,
            method: e.request.method.clone(),
            url: e.request.url.clone(),
            recorded_status: e.response.status,
            status: None,
            status_changed: true,
            recorded_sha256,
            sha256: None,
            body_changed: None,
            recorded_ms: e.time,
            ms: None,
            latency_delta_ms: None,
            error: None,
        };
        match send(&client, &authority, e, timeout).await {
            Ok((status, sha, ms)) => {
                r.status = Some(status);
                r.status_changed = status != r.recorded_status;
                r.body_changed = r.recorded_sha256.as_ref().map(|rec| *rec != sha);
                r.sha256 = Some(sha);
                r.ms = Some(ms);
                r.latency_delta_ms = Some(ms - r.recorded_ms);
            }
            Err(err) => r.error = Some(err),
        }
        results.push(r);
    }
    let changed = results
        .iter()
        .filter(|r| r.status_changed || r.body_changed == Some(true) || r.error.is_some())
        .count() as u64;
    Ok(ReplayReport {
        file: file.display().to_string(),
        target: to.to_string(),
        timing: if fast { "fast" } else { "as_recorded" }.into(),
        results,
        changed,
    })
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// Send one recorded request; its status, body SHA-256 and time in ms.
async fn send(
    client: &HttpClient,
    authority: &http::uri::Authority,
    e: &har::Entry,
    timeout: Duration,
) -> Result<(u16, String, f64), String> {
    let recorded: Uri = e
        .request
        .url
        .parse()
        .map_err(|err| format!("recorded URL `{}`: {err}", e.request.url))?;
    let pq = recorded
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let uri: Uri = format!("http://{authority}{pq}")
        .parse()
        .map_err(|err| format!("URL: {err}"))?;
    let method = http::Method::from_bytes(e.request.method.as_bytes())
        .map_err(|err| format!("method `{}`: {err}", e.request.method))?;
    // The recorded body, when the recording kept all of it.
    let body = match &e.request.post_data {
        Some(p) if p.truncated => {
            return Err("the recording kept only part of the request body".into());
        }
        Some(p) => har::body_bytes(&p.text, p.encoding.as_deref())
            .ok_or("the recorded request body is not valid base64")?,
        None => Vec::new(),
    };
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::new(Bytes::from(body)))
        .map_err(|err| err.to_string())?;
    for h in &e.request.headers {
        let name = h.name.to_ascii_lowercase();
        if skipped(&name) || h.value == REDACTED {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&h.value),
        ) {
            req.headers_mut().append(n, v);
        }
    }
    if !req.headers().contains_key(header::HOST)
        && let Some(a) = recorded.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        req.headers_mut().insert(header::HOST, v);
    }
    let t = Instant::now();
    let exchange = async {
        let resp = client.request(req).await.map_err(|err| err.to_string())?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut hasher = Sha256::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|err| err.to_string())?;
            if let Some(d) = frame.data_ref() {
                hasher.update(d);
            }
        }
        Ok::<_, String>((status, hex::encode(hasher.finalize())))
    };
    let (status, sha) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no complete answer within {timeout:?}"))??;
    Ok((status, sha, t.elapsed().as_secs_f64() * 1000.0))
}

/// The report as a table.
pub fn render(r: &ReplayReport) -> String {
    let short = |d: &Option<String>| {
        d.as_deref()
            .map_or("-".to_string(), |d| d[..d.len().min(12)].to_string())
    };
    let rows: Vec<Vec<String>> = r
        .results
        .iter()
        .map(|x| {
            let path = x
                .url
                .parse::<Uri>()
                .ok()
                .and_then(|u| u.path_and_query().map(|p| p.as_str().to_string()))
                .unwrap_or_else(|| x.url.clone());
            vec![
                x.index.to_string(),
                x.method.clone(),
                path,
                match x.status {
                    Some(s) if !x.status_changed => s.to_string(),
                    Some(s) => format!("{} -> {s}", x.recorded_status),
                    None => format!("{} -> error", x.recorded_status),
                },
                match x.body_changed {
                    Some(false) => format!("same {}", short(&x.sha256)),
                    Some(true) => format!(
                        "CHANGED {} -> {}",
                        short(&x.recorded_sha256),
                        short(&x.sha256)
                    ),
                    None => format!("? {}", short(&x.sha256)),
                },
                match (x.ms, x.latency_delta_ms) {
                    (Some(ms), Some(d)) => format!("{:.0} -> {ms:.0} ({d:+.0})", x.recorded_ms),
                    _ => format!("{:.0} -> -", x.recorded_ms),
                },
                x.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut out = format!(
        "replayed {} requests from {} to {} ({}): {} changed\n",
        r.results.len(),
        r.file,
        r.target,
        r.timing,
        r.changed
    );
    out.push_str(&render::table(
        &[
            "#",
            "METHOD",
            "PATH",
            "STATUS",
            "BODY SHA-256",
            "MS (REC -> NOW)",
            "ERROR",
        ],
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_digest_comes_from_the_field_or_a_complete_body() {
        let mut c = har::Content {
            size: 5,
            mime_type: String::new(),
            text: Some("hello".into()),
            encoding: None,
            sha256: None,
            truncated: false,
        };
        assert_eq!(
            recorded_digest(&c).as_deref(),
            Some("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        );
        c.truncated = true;
        assert_eq!(recorded_digest(&c), None, "a prefix says nothing");
        c.sha256 = Some("ab".into());
        assert_eq!(recorded_digest(&c).as_deref(), Some("ab"));
        assert!(skipped("connection") && skipped(":authority") && !skipped("accept"));
    }
}
