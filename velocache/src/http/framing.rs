//! Where a request ends: the proxy's framing layer (RFC 9112 §6, §3.2).
//!
//! A request enters as hyper parsed it from the client and leaves toward the origin on a pooled
//! connection that later clients share. If the two sides ever disagree on where a request ends,
//! the origin reads the rest of one client's request as the start of the next one's (request
//! smuggling), and the cache may store the answer to the smuggled request under a victim's key.
//! So the framing the origin sees is never copied from the client: it is recomputed from the
//! body the proxy actually sends ([`frame_upstream`]). The checks a server owes before that —
//! one `Host`, `Host` on HTTP/1.1, known expectations — are in [`check_request`]; a client body
//! that breaks its own framing (a bad chunk size) is marked by [`ClientBody`] so the client, not
//! the origin, is blamed for it.
use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderValue, Method, Version, header, request};
use http_body::{Frame, SizeHint};

use super::body::BoxError;

/// Why a request is refused before anything is sent upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 400: more than one `Host` field (RFC 9112 §3.2).
    DuplicateHost,
    /// 400: an HTTP/1.1 request without `Host` (RFC 9112 §3.2).
    MissingHost,
    /// 417: an `Expect` other than `100-continue` (RFC 9110 §10.1.1).
    UnknownExpectation,
}

impl Refusal {
    /// The status the client gets.
    pub fn status(self) -> http::StatusCode {
        match self {
            Refusal::DuplicateHost | Refusal::MissingHost => http::StatusCode::BAD_REQUEST,
            Refusal::UnknownExpectation => http::StatusCode::EXPECTATION_FAILED,
        }
    }

    /// What the client and the log are told.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::DuplicateHost => "more than one Host header",
            Refusal::MissingHost => "HTTP/1.1 request without a Host header",
            Refusal::UnknownExpectation => "unsupported Expect value",
        }
    }
}

/// Checks a server owes a request before acting on it. HTTP/2 requests carry their authority
/// in `:authority`, so the `Host` rules apply to HTTP/1.x only.
pub fn check_request(parts: &request::Parts) -> Result<(), Refusal> {
    if matches!(parts.version, Version::HTTP_10 | Version::HTTP_11) {
        match parts.headers.get_all(header::HOST).iter().count() {
            0 if parts.version == Version::HTTP_11 => return Err(Refusal::MissingHost),
            0 | 1 => {}
            _ => return Err(Refusal::DuplicateHost),
        }
    }
    for v in parts.headers.get_all(header::EXPECT) {
        if !v
            .as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"100-continue")
        {
            return Err(Refusal::UnknownExpectation);
        }
    }
    Ok(())
}

/// Whether a client's request carries a body (a `Content-Length` above zero, or chunked).
pub fn has_body(body: &impl http_body::Body) -> bool {
    !body.is_end_stream() && body.size_hint().exact() != Some(0)
}

/// Make the request's framing headers describe `hint`, the body that will really be sent:
/// the client's `Content-Length` and `Transfer-Encoding` never reach the origin as such.
///
/// - a body of known length gets that `Content-Length` (none for an empty GET/HEAD/…);
/// - a body of unknown length is sent chunked, whatever the method (hyper would otherwise
///   frame a GET of unknown length as empty and leave its bytes unsent);
/// - `Expect: 100-continue` is answered by the proxy itself (hyper sends the client its
///   `100 Continue` when the body is first read), so the origin is not asked to wait for a
///   body it would get anyway.
pub fn frame_upstream(parts: &mut request::Parts, hint: &SizeHint) {
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts.headers.remove(header::EXPECT);
    match hint.exact() {
        Some(0) if !expects_body(&parts.method) => {}
        Some(n) => {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        None => {
            parts.headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
    }
}

/// Methods whose requests are defined with content: they say `Content-Length: 0` when empty
/// (RFC 9110 §8.6: a user agent SHOULD send it for them).
fn expects_body(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

/// A client's body broke its own framing (a bad chunk size, a connection closed early):
/// the request is the client's fault, answered 400, never blamed on the origin.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body is malformed or incomplete: {0}")]
pub struct ClientBodyError(#[source] pub BoxError);

/// The client's request body on its way upstream; its errors become [`ClientBodyError`].
pub struct ClientBody<B> {
    inner: B,
}

impl<B> ClientBody<B> {
    /// Wrap a client's body.
    pub fn new(inner: B) -> ClientBody<B> {
        ClientBody { inner }
    }
}

impl<B> http_body::Body for ClientBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map(|f| f.map(|r| r.map_err(|e| ClientBodyError(e.into()))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The [`ClientBodyError`] somewhere in an upstream error's causes, if the client's body is
/// what made the upstream exchange fail.
pub fn client_body_fault(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(b) = e.downcast_ref::<ClientBodyError>() {
            return Some(crate::telemetry::error_chain(&*b.0));
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::Request<()>) -> request::Parts {
        req.into_parts().0
    }

    #[test]
    fn host_rules_for_http1() {
        let ok = parts(
            http::Request::get("/")
                .header("host", "a")
                .body(())
                .unwrap(),
        );
        assert_eq!(check_request(&ok), Ok(()));
        let none = parts(http::Request::get("/").body(()).unwrap());
        assert_eq!(check_request(&none), Err(Refusal::MissingHost));
        let mut old = none.clone();
        old.version = Version::HTTP_10;
        assert_eq!(check_request(&old), Ok(()), "HTTP/1.0 may omit Host");
        let two = parts(
            http::Request::get("/")
                .header("host", "a")
                .header("host", "b")
                .body(())
                .unwrap(),
        );
        assert_eq!(check_request(&two), Err(Refusal::DuplicateHost));
        let mut h2 = none;
        h2.version = Version::HTTP_2;
        assert_eq!(check_request(&h2), Ok(()), ":authority stands for Host");
    }

    #[test]
    fn expectations() {
        let cont = parts(
            http::Request::post("/")
                .header("host", "a")
                .header("expect", "100-Continue")
                .body(())
                .unwrap(),
        );
        assert_eq!(check_request(&cont), Ok(()));
        let other = parts(
            http::Request::post("/")
                .header("host", "a")
                .header("expect", "something-else")
                .body(())
                .unwrap(),
        );
        assert_eq!(check_request(&other), Err(Refusal::UnknownExpectation));
    }

    fn framed(method: Method, hint: SizeHint) -> http::HeaderMap {
        let mut p = parts(
            http::Request::builder()
                .method(method)
                .uri("/")
                .header("content-length", "30")
                .header("transfer-encoding", "chunked")
                .header("expect", "100-continue")
                .body(())
                .unwrap(),
        );
        frame_upstream(&mut p, &hint);
        p.headers
    }

    #[test]
    fn framing_follows_the_body_sent_not_the_client_headers() {
        // A GET whose body is not sent: no framing at all.
        let h = framed(Method::GET, SizeHint::with_exact(0));
        assert!(!h.contains_key("content-length") && !h.contains_key("transfer-encoding"));
        assert!(!h.contains_key("expect"));
        // An empty POST says so.
        let h = framed(Method::POST, SizeHint::with_exact(0));
        assert_eq!(h["content-length"], "0");
        // A body of known length: that length, whatever the client said.
        let h = framed(Method::GET, SizeHint::with_exact(12));
        assert_eq!(h["content-length"], "12");
        assert!(!h.contains_key("transfer-encoding"));
        // Unknown length: chunked, even for a GET.
        let h = framed(Method::GET, SizeHint::default());
        assert_eq!(h["transfer-encoding"], "chunked");
        assert!(!h.contains_key("content-length"));
    }

    #[test]
    fn client_body_errors_are_found_in_the_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] ClientBodyError);
        let e = Outer(ClientBodyError("invalid chunk size line".into()));
        let found = client_body_fault(&e);
        assert!(
            found
                .as_deref()
                .is_some_and(|s| s.contains("invalid chunk size")),
            "{found:?}"
        );
        let plain = std::io::Error::other("refused");
        assert_eq!(client_body_fault(&plain), None);
    }
}
