//! Recording one host's traffic to a HAR 1.2 file (`velocache record start --host H`).
//!
//! The admin API starts a recording ([`Recorder::start`]: a host, an optional duration, a body
//! cap); while it runs, the phase's `request_filter` notes the head of every request for that
//! host in the request's `Ctx` (method, URL, headers with secrets redacted, the wall-clock
//! start), `request_body_filter` copies the first `body_cap` bytes of a request body as it
//! goes to the origin, and `body_tap` gives that request's response a tap that keeps its head,
//! the first `body_cap` bytes of its body and the SHA-256 of all of it. When the body ends the
//! tap turns what it saw into a HAR entry (times from the `Ctx`) and appends it to the
//! recording, in memory and bounded (`max_entries`, and a total body budget). Stopping —
//! `record stop`, or the duration running out — writes the file
//! (`<state_dir>/records/<host>-<unix time>.har`, atomically) and leaves the report (`record
//! status`). No recording: one relaxed atomic load per request.
use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Response, header, request, response};
use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};
use tracing::{info, warn};

use super::{
    Body, ProxyError,
    ctx::{Ctx, RequestEnd},
    har,
    phase::{BodyTap, Phase, Step},
};
use crate::admin::{
    AdminError, RecordAdmin,
    api::{RecordReport, RecordStart},
};

/// Body bytes kept per entry when `record start` names no cap.
pub const DEFAULT_BODY_CAP: u64 = 1 << 20;
/// Entries kept when `record start` names no limit.
pub const DEFAULT_MAX_ENTRIES: u64 = 10_000;
/// Body bytes kept across all entries of one recording (past it, entries keep only digests).
const MAX_TOTAL_BODY: usize = 256 << 20;

/// What a request's phases saw of its head, kept in its `Ctx` until the response.
#[derive(Clone)]
struct Capture {
    session: u64,
    started: SystemTime,
    request: har::Request,
    /// Where the request body is copied to, when it announced one.
    body: Option<Arc<Mutex<Copied>>>,
}

/// The first bytes of a request body.
struct Copied {
    bytes: Vec<u8>,
    cap: usize,
    truncated: bool,
}

impl Copied {
    fn take(&mut self, data: &[u8]) {
        let room = self.cap.saturating_sub(self.bytes.len());
        if data.len() > room {
            self.truncated = true;
        }
        self.bytes.extend_from_slice(&data[..data.len().min(room)]);
    }
}

/// A request body on its way to the origin, copied (up to the cap) as it passes.
struct Copying {
    inner: Body,
    sink: Arc<Mutex<Copied>>,
}

impl http_body::Body for Copying {
    type Data = Bytes;
    type Error = super::body::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let res = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(f))) = &res
            && let Some(d) = f.data_ref()
        {
            this.sink.lock().take(d);
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

struct Session {
    id: u64,
    host: String,
    file: PathBuf,
    started: SystemTime,
    ends: Option<SystemTime>,
    body_cap: usize,
    max_entries: usize,
    entries: Vec<(har::Entry, Bytes)>,
    body_bytes: usize,
    dropped: u64,
}

impl Session {
    fn report(&self, state: &str) -> RecordReport {
        RecordReport {
            state: state.into(),
            host: Some(self.host.clone()),
            file: Some(self.file.display().to_string()),
            entries: self.entries.len() as u64,
            dropped: self.dropped,
            started_at: Some(unix(self.started)),
            ends_at: self.ends.map(unix),
            body_cap_bytes: self.body_cap as u64,
        }
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[derive(Default)]
struct Inner {
    session: Option<Session>,
    last: Option<RecordReport>,
    next_id: u64,
}

/// The recorder: the phase and the admin API's [`RecordAdmin`].
#[derive(Clone)]
pub struct Recorder {
    state_dir: PathBuf,
    active: Arc<AtomicBool>,
    inner: Arc<Mutex<Inner>>,
}

/// The host part of a host header value (no port, lower case).
fn bare_host(host: &str) -> String {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(h, _)| h)
    };
    h.to_ascii_lowercase()
}

fn file_name(host: &str, at: SystemTime) -> String {
    let safe: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}-{}.har", unix(at))
}

fn http_version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

impl Recorder {
    /// A recorder writing under `<state_dir>/records`.
    pub fn new(state_dir: &Path) -> Recorder {
        Recorder {
            state_dir: state_dir.to_path_buf(),
            active: Arc::new(AtomicBool::new(false)),
            inner: Arc::new(Mutex::new(Inner::default())),
        }
    }

    /// End session `id` (if it is still the one running) and write its file.
    async fn finish(&self, id: Option<u64>) -> Result<RecordReport, AdminError> {
        let session = {
            let mut inner = self.inner.lock();
            match &inner.session {
                Some(s) if id.is_none_or(|id| id == s.id) => {}
                _ => return Err(AdminError::NotFound("no recording is running".into())),
            }
            self.active.store(false, Ordering::Relaxed);
            inner.session.take()
        };
        let Some(session) = session else {
            return Err(AdminError::NotFound("no recording is running".into()));
        };
        let report = session.report("stopped");
        let entries = session.entries.len();
        let file = session.file.clone();
        tokio::task::spawn_blocking(move || write_har(&session))
            .await
            .map_err(|e| AdminError::Failed(format!("writing the recording: {e}")))?
            .map_err(|e| {
                AdminError::Failed(format!("writing the recording {}: {e}", file.display()))
            })?;
        info!(service = "http", host = report.host.as_deref().unwrap_or(""), file = %file.display(),
            entries, dropped = report.dropped, "recording written");
        self.inner.lock().last = Some(report.clone());
        Ok(report)
    }

    fn capture(&self, ctx: &mut Ctx, req: &request::Parts) {
        let inner = self.inner.lock();
        let Some(s) = &inner.session else { return };
        if bare_host(&ctx.host) != s.host {
            return;
        }
        let scheme = match ctx.conn.scheme {
            super::Scheme::Http => "http",
            super::Scheme::Https => "https",
        };
        let has_body = req.headers.contains_key(header::TRANSFER_ENCODING)
            || req
                .headers
                .get(header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() != b"0");
        let body = has_body.then(|| {
            Arc::new(Mutex::new(Copied {
                bytes: Vec::new(),
                cap: s.body_cap,
                truncated: false,
            }))
        });
        let capture = Capture {
            body,
            session: s.id,
            started: SystemTime::now(),
            request: har::Request {
                method: ctx.method.as_str().to_string(),
                url: format!("{scheme}://{}{}", ctx.host, ctx.path),
                http_version: http_version(req.version).into(),
                cookies: Vec::new(),
                headers: har::headers(&req.headers),
                query_string: har::query_pairs(&ctx.path),
                headers_size: -1,
                body_size: req
                    .headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(0),
                post_data: None,
            },
        };
        drop(inner);
        ctx.extensions.insert(capture);
    }
}

/// Write `session`'s entries as a HAR file, atomically (a temporary file renamed).
fn write_har(session: &Session) -> std::io::Result<()> {
    let entries = session
        .entries
        .iter()
        .map(|(entry, body)| {
            let mut e = entry.clone();
            if !body.is_empty() {
                let (text, encoding) = har::body_text(body);
                e.response.content.text = Some(text);
                e.response.content.encoding = encoding;
            }
            e
        })
        .collect();
    let doc = har::Har {
        log: har::Log {
            version: "1.2".into(),
            creator: har::Creator {
                name: "velocache".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            entries,
        },
    };
    let json = serde_json::to_vec_pretty(&doc).map_err(std::io::Error::other)?;
    if let Some(dir) = session.file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = session.file.with_extension("har.tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, &session.file)
}

impl RecordAdmin for Recorder {
    fn start(&self, req: &RecordStart) -> Result<RecordReport, AdminError> {
        let host = bare_host(req.host.trim());
        if host.is_empty() || host.contains('/') {
            return Err(AdminError::BadRequest(format!(
                "`{}` is not a host name or address",
                req.host
            )));
        }
        let mut inner = self.inner.lock();
        if let Some(s) = &inner.session {
            return Err(AdminError::BadRequest(format!(
                "a recording of {} is running; stop it first",
                s.host
            )));
        }
        let started = SystemTime::now();
        let duration = req.for_secs.map(Duration::from_secs);
        inner.next_id += 1;
        let id = inner.next_id;
        let session = Session {
            id,
            file: self
                .state_dir
                .join("records")
                .join(file_name(&host, started)),
            host,
            started,
            ends: duration.map(|d| started + d),
            body_cap: usize::try_from(req.body_cap_bytes.unwrap_or(DEFAULT_BODY_CAP))
                .unwrap_or(usize::MAX),
            max_entries: usize::try_from(req.max_entries.unwrap_or(DEFAULT_MAX_ENTRIES))
                .unwrap_or(usize::MAX),
            entries: Vec::new(),
            body_bytes: 0,
            dropped: 0,
        };
        let report = session.report("recording");
        info!(service = "http", host = %session.host, file = %session.file.display(),
            for_secs = req.for_secs, "recording started");
        inner.session = Some(session);
        self.active.store(true, Ordering::Relaxed);
        if let Some(d) = duration {
            let me = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                if let Err(e) = me.finish(Some(id)).await
                    && !matches!(e, AdminError::NotFound(_))
                {
                    warn!(service = "http", error = %e, "the timed recording could not be written");
                }
            });
        }
        Ok(report)
    }

    fn stop(&self) -> BoxFuture<'_, Result<RecordReport, AdminError>> {
        Box::pin(self.finish(None))
    }

    fn status(&self) -> RecordReport {
        let inner = self.inner.lock();
        match (&inner.session, &inner.last) {
            (Some(s), _) => s.report("recording"),
            (None, Some(last)) => last.clone(),
            (None, None) => RecordReport {
                state: "idle".into(),
                ..RecordReport::default()
            },
        }
    }
}

impl Phase for Recorder {
    fn name(&self) -> &str {
        "record"
    }

    fn request_filter<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        req: &'a mut request::Parts,
    ) -> Step<'a, Result<Option<Response<Body>>, ProxyError>> {
        if self.active.load(Ordering::Relaxed) {
            self.capture(ctx, req);
        }
        Step::Ready(Ok(None))
    }

    fn request_body_filter(&self, ctx: &Ctx, body: Body) -> Body {
        match ctx.extensions.get::<Capture>().and_then(|c| c.body.clone()) {
            Some(sink) => super::body::boxed(Copying { inner: body, sink }),
            None => body,
        }
    }

    fn body_tap(&self, ctx: &Ctx, resp: &response::Parts) -> Option<Box<dyn BodyTap>> {
        let capture = ctx.extensions.get::<Capture>()?.clone();
        let cap = {
            let inner = self.inner.lock();
            let s = inner.session.as_ref().filter(|s| s.id == capture.session)?;
            s.body_cap
        };
        let text = |h: header::HeaderName| {
            resp.headers
                .get(h)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default()
        };
        Some(Box::new(Tap {
            inner: self.inner.clone(),
            capture,
            response: har::Response {
                status: resp.status.as_u16(),
                status_text: resp.status.canonical_reason().unwrap_or("").into(),
                http_version: "HTTP/1.1".into(),
                cookies: Vec::new(),
                headers: har::headers(&resp.headers),
                content: har::Content {
                    size: 0,
                    mime_type: text(header::CONTENT_TYPE),
                    text: None,
                    encoding: None,
                    sha256: None,
                    truncated: false,
                },
                redirect_url: text(header::LOCATION),
                headers_size: -1,
                body_size: 0,
            },
            body: Vec::new(),
            cap,
            truncated: false,
            hasher: Sha256::new(),
        }))
    }
}

/// One recorded response's body on its way to the client.
struct Tap {
    inner: Arc<Mutex<Inner>>,
    capture: Capture,
    response: har::Response,
    body: Vec<u8>,
    cap: usize,
    truncated: bool,
    hasher: Sha256,
}

impl BodyTap for Tap {
    fn chunk(&mut self, data: &Bytes) {
        self.hasher.update(data);
        let room = self.cap.saturating_sub(self.body.len());
        if data.len() > room {
            self.truncated = true;
        }
        self.body.extend_from_slice(&data[..data.len().min(room)]);
    }

    fn end(self: Box<Self>, ctx: &Ctx, end: &RequestEnd) {
        let Tap {
            inner,
            capture,
            mut response,
            body,
            truncated,
            hasher,
            ..
        } = *self;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let total = ms(ctx.timings.started.elapsed());
        let wait = ctx
            .timings
            .response_head
            .map_or(total, |t| ms(t.duration_since(ctx.timings.started)));
        response.body_size = end.bytes as i64;
        response.content.size = end.bytes as i64;
        response.content.truncated = truncated || !end.complete;
        response.content.sha256 = end.complete.then(|| hex::encode(hasher.finalize()));
        let mut request = capture.request;
        if let Some(sink) = &capture.body {
            let copied = sink.lock();
            let (text, encoding) = har::body_text(&copied.bytes);
            request.post_data = Some(har::PostData {
                mime_type: request
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-type"))
                    .map(|h| h.value.clone())
                    .unwrap_or_default(),
                params: Vec::new(),
                text,
                encoding,
                truncated: copied.truncated,
            });
        }
        let entry = har::Entry {
            started_date_time: time::OffsetDateTime::from(capture.started)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            time: total,
            request,
            response,
            cache: serde_json::Map::new(),
            timings: har::Timings {
                send: 0.0,
                wait,
                receive: (total - wait).max(0.0),
            },
        };
        let mut inner = inner.lock();
        let Some(s) = inner.session.as_mut().filter(|s| s.id == capture.session) else {
            return;
        };
        if s.entries.len() >= s.max_entries {
            s.dropped += 1;
            return;
        }
        let mut entry = entry;
        let body = if s.body_bytes + body.len() <= MAX_TOTAL_BODY {
            s.body_bytes += body.len();
            Bytes::from(body)
        } else {
            entry.response.content.truncated = true;
            Bytes::new()
        };
        s.entries.push((entry, body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_compared_without_port_or_case() {
        assert_eq!(bare_host("Origin.Test:8080"), "origin.test");
        assert_eq!(bare_host("10.77.2.2"), "10.77.2.2");
        assert_eq!(bare_host("[fd77:2::2]:80"), "fd77:2::2");
        assert_eq!(
            file_name("fd77:2::2", UNIX_EPOCH + Duration::from_secs(5)),
            "fd77_2__2-5.har"
        );
    }
}
