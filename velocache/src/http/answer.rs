//! The gateway's own answers: error pages and the 403 of a `deny` rule. They are built here and
//! leave as responses like any other; they carry no `Via` (nothing was relayed), which is how the
//! warm-up tells them from an origin's answer.
use http::{HeaderValue, Response, StatusCode, header};

use super::{Body, body::full};

/// How the gateway's own error pages begin (the warm-up quotes what follows).
pub const ERROR_PAGE_PREFIX: &str = "VeloCache: ";

/// 403 for a `deny` rule: short, plain, and says which rule.
pub fn deny_response(rule: &str) -> Response<Body> {
    let mut r = Response::new(full(format!("Forbidden by rule {rule}\n")));
    *r.status_mut() = StatusCode::FORBIDDEN;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// An error page.
pub fn error_response(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(full(format!("{ERROR_PAGE_PREFIX}{msg}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
