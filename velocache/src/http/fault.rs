//! Fault injection (chaos testing) as a phase: a rule's `fault = { delay_ms, abort_status,
//! abort_percent, bandwidth_kbps }` applied to the requests that rule decides, and to no other.
//!
//! The rule that decided enters through the [`Ctx`] (`ctx.rule`, set by the rules phase, which
//! runs just before this one); its fault is looked up in the rules in force. In
//! `request_filter` the delay is waited out (before the cache or the origin is asked) and the
//! abort, drawn with the rule's `abort_percent`, answers the client with the status — the
//! origin is never contacted. A bandwidth limit is noted in the `Ctx` and applied in
//! `response_body_filter`, where the client's body is wrapped in a [`Throttled`] body that
//! releases it no faster than the limit. Every application leaves as one `fault injected` log
//! line (with the request's `trace_id`, the rule and the kind) and one count in
//! `velocache_http_faults_injected_total{kind, rule}`.
use std::{
    future::Future as _,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header, request};
use http_body::{Frame, SizeHint};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use tokio::time::{Instant, Sleep};
use tracing::info;

use super::{
    Body, ProxyError,
    answer::ERROR_PAGE_PREFIX,
    body::{BoxError, boxed, full},
    ctx::Ctx,
    phase::{Phase, Step},
};
use crate::{
    rules::{Fault, Rules},
    telemetry::metrics::MetricSet,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabel {
    kind: &'static str,
    rule: String,
}

/// The bandwidth limit a request's rule asked for, kept in `Ctx::extensions` until the body.
#[derive(Clone, Copy)]
struct Bandwidth {
    kbps: u64,
    bytes_per_sec: u64,
}

/// One application of a fault, as logged and counted.
#[derive(Clone, Copy)]
enum Applied {
    Delay(Duration),
    Abort(u16),
    Bandwidth(u64),
}

impl Applied {
    fn kind(self) -> &'static str {
        match self {
            Applied::Delay(_) => "delay",
            Applied::Abort(_) => "abort",
            Applied::Bandwidth(_) => "bandwidth",
        }
    }
}

/// The fault phase.
pub struct FaultPhase {
    rules: Rules,
    injected: Family<FaultLabel, Counter>,
}

impl FaultPhase {
    /// A phase applying the faults of `rules` (reloads take effect on the next request),
    /// counting in `registry` (`faults_injected`).
    pub fn new(rules: Rules, registry: &mut Registry) -> FaultPhase {
        let injected = MetricSet::new(registry).counters(
            "faults_injected",
            "Faults injected by rules (kind: delay, abort, bandwidth)",
        );
        FaultPhase { rules, injected }
    }

    /// The fault of the rule that decided this request, if it has one.
    fn fault_for(&self, ctx: &Ctx) -> Option<Fault> {
        let name = ctx.rule.as_deref()?;
        let rules = self.rules.current();
        rules.rules.iter().find(|r| r.name == name)?.fault
    }

    /// Log and count one application.
    fn applied(&self, ctx: &Ctx, what: Applied) {
        let rule = ctx.rule.clone().unwrap_or_default();
        let (delay_ms, status, bandwidth_kbps) = match what {
            Applied::Delay(d) => (Some(d.as_millis() as u64), None, None),
            Applied::Abort(s) => (None, Some(s), None),
            Applied::Bandwidth(k) => (None, None, Some(k)),
        };
        info!(
            service = ctx.conn.scheme.service_name(),
            trace_id = %ctx.trace_id,
            client = %ctx.conn.client,
            host = %ctx.host,
            method = %ctx.method,
            path = %ctx.path,
            rule = %rule,
            fault = what.kind(),
            delay_ms,
            status,
            bandwidth_kbps,
            "fault injected"
        );
        self.injected
            .get_or_create(&FaultLabel {
                kind: what.kind(),
                rule,
            })
            .inc();
    }

    /// The abort's answer, if this request draws one.
    fn abort(&self, ctx: &Ctx, fault: &Fault) -> Option<Response<Body>> {
        let abort = fault.abort?;
        if abort.percent < 100.0 && rand::random::<f64>() * 100.0 >= abort.percent {
            return None;
        }
        self.applied(ctx, Applied::Abort(abort.status));
        Some(abort_response(
            abort.status,
            ctx.rule.as_deref().unwrap_or_default(),
        ))
    }
}

/// The client's answer to an aborted request: the rule's status, and a body that says it was
/// injected (so nobody hunts for a broken origin). Never stored by anyone.
fn abort_response(status: u16, rule: &str) -> Response<Body> {
    let mut r = Response::new(full(format!(
        "{ERROR_PAGE_PREFIX}fault injected by rule {rule} (abort_status {status})\n"
    )));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

impl Phase for FaultPhase {
    fn name(&self) -> &str {
        "fault"
    }

    fn request_filter<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        _req: &'a mut request::Parts,
    ) -> Step<'a, Result<Option<Response<Body>>, ProxyError>> {
        let Some(fault) = self.fault_for(ctx) else {
            return Step::Ready(Ok(None));
        };
        if let Some(bytes_per_sec) = fault.bandwidth_bytes_per_sec() {
            ctx.extensions.insert(Bandwidth {
                kbps: fault.bandwidth_kbps.unwrap_or_default(),
                bytes_per_sec,
            });
        }
        match fault.delay {
            None => Step::Ready(Ok(self.abort(ctx, &fault))),
            Some(delay) => {
                self.applied(ctx, Applied::Delay(delay));
                Step::Pending(Box::pin(async move {
                    tokio::time::sleep(delay).await;
                    Ok(self.abort(ctx, &fault))
                }))
            }
        }
    }

    fn response_body_filter(&self, ctx: &Ctx, body: Body) -> Body {
        match ctx.extensions.get::<Bandwidth>() {
            Some(bw) if !http_body::Body::is_end_stream(&body) => {
                self.applied(ctx, Applied::Bandwidth(bw.kbps));
                boxed(Throttled::new(body, bw.bytes_per_sec))
            }
            _ => body,
        }
    }
}

/// A body released no faster than `rate` bytes per second: each piece (at most a tenth of a
/// second's worth) leaves once the time its bytes would take at that rate has passed since the
/// first, so a body of N bytes takes at least N / rate. Frames other than data pass as they
/// come; the length is unchanged, so the framing announced to the client stays true.
pub struct Throttled {
    inner: Body,
    rate: u64,
    /// Most bytes released in one piece.
    piece: usize,
    /// Data read from `inner` and not yet released.
    held: Bytes,
    /// When the next piece may leave.
    sleep: Pin<Box<Sleep>>,
    start: Option<Instant>,
    released: u64,
}

impl Throttled {
    /// Throttle `inner` to `rate` bytes per second (at least 1).
    pub fn new(inner: Body, rate: u64) -> Throttled {
        let rate = rate.max(1);
        Throttled {
            inner,
            rate,
            piece: usize::try_from(rate / 10).unwrap_or(usize::MAX).max(1),
            held: Bytes::new(),
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            start: None,
            released: 0,
        }
    }

    /// Arm the timer for the next piece of `len` bytes: due when `released + len` bytes would
    /// have taken at the rate.
    fn arm(&mut self, len: usize) {
        let start = *self.start.get_or_insert_with(Instant::now);
        let total = self.released + len as u64;
        let due = start + Duration::from_secs_f64(total as f64 / self.rate as f64);
        self.sleep.as_mut().reset(due);
    }
}

impl http_body::Body for Throttled {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if !this.held.is_empty() {
                if this.sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let n = this.held.len().min(this.piece);
                let out = this.held.split_to(n);
                this.released += n as u64;
                if !this.held.is_empty() {
                    let next = this.held.len().min(this.piece);
                    this.arm(next);
                }
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => {
                        this.held = data;
                        let next = this.held.len().min(this.piece);
                        this.arm(next);
                    }
                    Err(other) => return Poll::Ready(Some(Ok(other))),
                },
                other => return other,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let held = self.held.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + held);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + held);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;
    use crate::http::body::from_stream;

    #[tokio::test]
    async fn a_throttled_body_takes_at_least_its_size_over_the_rate_and_keeps_its_bytes() {
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from(vec![1u8; 3000])),
            Ok(Bytes::new()),
            Ok(Bytes::from(vec![2u8; 5000])),
        ];
        let body = from_stream(futures::stream::iter(chunks));
        let t0 = Instant::now();
        let mut throttled = Throttled::new(body, 20_000);
        let mut got = Vec::new();
        let mut pieces = 0;
        while let Some(frame) = throttled.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(
                data.len() <= 2000,
                "a piece is at most a tenth of a second's worth"
            );
            got.extend_from_slice(&data);
            pieces += 1;
        }
        assert_eq!(got.len(), 8000);
        assert!(got[..3000].iter().all(|&b| b == 1) && got[3000..].iter().all(|&b| b == 2));
        assert_eq!(pieces, 5, "3000 bytes in two pieces, 5000 in three");
        // A lower bound only: the rate is a ceiling, never a promise of speed.
        assert!(
            t0.elapsed() >= Duration::from_millis(400),
            "{:?}",
            t0.elapsed()
        );
    }
}

#[cfg(test)]
mod proxy_tests {
    use std::time::Instant;

    use super::super::test_harness::*;

    const RULES: &str = r#"
[[rule]]
name = "slow"
match_path = "/slow/*"
action = "cache"
fault = { delay_ms = 300 }

[[rule]]
name = "down"
match_path = "/down/*"
action = "cache"
fault = { abort_status = 503 }

[[rule]]
name = "flaky"
match_path = "/flaky/*"
action = "intercept_no_cache"
fault = { abort_status = 500, abort_percent = 50 }

[[rule]]
name = "thin"
match_path = "/thin/*"
action = "intercept_no_cache"
fault = { bandwidth_kbps = 160 }
"#;

    #[tokio::test]
    async fn an_abort_answers_its_status_without_contacting_the_origin() {
        let s = setup(RULES, |_| {}).await;
        s.origin.route("/down/a", cacheable(blob(10)));
        s.origin.route("/fine", cacheable(blob(10)));
        let got = get(s.proxy_addr, "/down/a").await;
        assert_eq!(got.status, 503);
        assert!(
            String::from_utf8_lossy(&got.body).contains("fault injected by rule down"),
            "{:?}",
            got.body
        );
        assert_eq!(s.origin.hits("/down/a"), 0);
        let fine = get(s.proxy_addr, "/fine").await;
        assert_eq!(
            fine.status, 200,
            "requests no fault rule decides are untouched"
        );
        assert_eq!(s.origin.hits("/fine"), 1);
    }

    #[tokio::test]
    async fn an_abort_percent_aborts_about_that_share() {
        let s = setup(RULES, |_| {}).await;
        s.origin.route("/flaky/x", cacheable(blob(10)));
        let mut aborted = 0;
        for _ in 0..200 {
            match get(s.proxy_addr, "/flaky/x").await.status {
                500 => aborted += 1,
                200 => {}
                other => panic!("status {other}"),
            }
        }
        // 50 % of 200: the odds of falling outside 60..=140 are below 1e-8.
        assert!((60..=140).contains(&aborted), "{aborted} of 200 aborted");
        assert_eq!(s.origin.hits("/flaky/x"), 200 - aborted);
    }

    #[tokio::test]
    async fn a_delay_holds_the_request_at_least_that_long() {
        let s = setup(RULES, |_| {}).await;
        s.origin.route("/slow/a", cacheable(blob(10)));
        let t0 = Instant::now();
        assert_eq!(get(s.proxy_addr, "/slow/a").await.status, 200);
        assert!(t0.elapsed().as_millis() >= 300, "{:?}", t0.elapsed());
    }

    #[tokio::test]
    async fn a_bandwidth_limit_slows_the_body_and_keeps_it_whole() {
        let s = setup(RULES, |_| {}).await;
        s.origin.route("/thin/a", cacheable(blob(10_000)));
        let t0 = Instant::now();
        let got = get(s.proxy_addr, "/thin/a").await;
        assert_eq!(got.body, blob(10_000));
        // 160 kbps = 20 000 bytes/s.
        assert!(t0.elapsed().as_millis() >= 500, "{:?}", t0.elapsed());
    }
}
