//! The admin API's read-only views of what the gateway is doing: the live feed's history, one
//! request's inspector exchange, the last hour's charts, and what the DNS cache holds for a
//! name. Requests come from `routes::route` (method, path and query string); answers go back
//! as JSON. Also the query-string decoding every `GET …?k=v` route shares.
use http::{Method, Request};

use super::{ApiError, Reply, ok};
use crate::{
    admin::api::{ErrorKind, paths},
    control::plane::ControlPlane,
};

/// The paths answered here (with `GET`; other methods get `routes::route`'s answer).
const PATHS: [&str; 4] = [
    paths::LIVE_HISTORY,
    paths::LIVE_INSPECT,
    paths::ANALYTICS,
    paths::DNS_SHOW,
];

/// Answer the request if it is one of these routes (`None`: not one of them).
pub(super) fn route_live(
    plane: &ControlPlane,
    method: &Method,
    path: &str,
    req: &Request<hyper::body::Incoming>,
) -> Option<Result<Reply, ApiError>> {
    (method == Method::GET && PATHS.contains(&path)).then(|| answer(plane, path, req))
}

fn answer(
    plane: &ControlPlane,
    path: &str,
    req: &Request<hyper::body::Incoming>,
) -> Result<Reply, ApiError> {
    match path {
        paths::LIVE_HISTORY => {
            let limit = query_param(req, "limit")?
                .map(|l| {
                    l.parse::<usize>().map_err(|_| {
                        ApiError::new(
                            ErrorKind::BadRequest,
                            format!("limit `{l}` is not a number"),
                        )
                    })
                })
                .transpose()?
                .unwrap_or(0);
            ok(&live(plane)?.history(limit))
        }
        paths::LIVE_INSPECT => {
            let id = query_param(req, "id")?.ok_or_else(|| {
                ApiError::new(ErrorKind::BadRequest, "the `id` parameter is required")
            })?;
            match live(plane)?.exchange(&id) {
                Some(e) => ok(&*e),
                None => Err(ApiError::new(
                    ErrorKind::NotFound,
                    format!("request {id} is not (or no longer) kept by the live feed"),
                )),
            }
        }
        paths::ANALYTICS => ok(&live(plane)?.analytics()),
        paths::DNS_SHOW => {
            let name = query_param(req, "name")?.ok_or_else(|| {
                ApiError::new(ErrorKind::BadRequest, "the `name` parameter is required")
            })?;
            let qtype = query_param(req, "type")?.unwrap_or_else(|| "A".into());
            let dns = plane
                .hub
                .dns()
                .ok_or_else(|| ApiError::not_available("the DNS cache"))?;
            ok(&dns.show(&name, &qtype)?)
        }
        p => Err(ApiError::new(
            ErrorKind::NoSuchEndpoint,
            format!("no endpoint {p}"),
        )),
    }
}

fn live(plane: &ControlPlane) -> Result<crate::live::Live, ApiError> {
    plane
        .hub
        .live()
        .ok_or_else(|| ApiError::not_available("the live feed (`[admin] web_listen`)"))
}

/// Parameter `name` of a request's query string, percent-decoded.
fn query_param(
    req: &Request<hyper::body::Incoming>,
    name: &str,
) -> Result<Option<String>, ApiError> {
    query_value(req.uri().query(), name)
}

/// Parameter `name` of `query`, percent-decoded (`+` is a space); a bad escape or a value that
/// is not UTF-8 is a bad request.
pub(super) fn query_value(query: Option<&str>, name: &str) -> Result<Option<String>, ApiError> {
    let Some(raw) = query.unwrap_or("").split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    }) else {
        return Ok(None);
    };
    percent_decode(raw).map(Some).ok_or_else(|| {
        ApiError::new(
            ErrorKind::BadRequest,
            format!("`{name}` is not a valid percent-encoded UTF-8 value"),
        )
    })
}

/// `%XX` and `+` decoded; `None` for a bad escape or bytes that are not UTF-8.
pub fn percent_decode(v: &str) -> Option<String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode_and_bad_escapes_are_refused() {
        assert_eq!(percent_decode("a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(percent_decode("%e2%82%ac").as_deref(), Some("€"));
        assert_eq!(percent_decode("abc%4"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(
            query_value(Some("x=1&id=a%40b"), "id")
                .ok()
                .flatten()
                .as_deref(),
            Some("a@b")
        );
        assert!(matches!(query_value(Some("x=1"), "id"), Ok(None)));
        assert!(query_value(Some("id=%zz"), "id").is_err());
    }
}
