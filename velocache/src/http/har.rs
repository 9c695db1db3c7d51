//! HAR 1.2 (the HTTP Archive format browsers export), as typed serde structs, and the
//! redaction of secrets in headers.
//!
//! Recording (`record`) builds [`Entry`]s from what a request's phases saw and writes a
//! [`Har`] file; `velocache replay` reads one back. Only the fields HAR 1.2 requires and those a
//! replay needs are modelled; two custom fields (HAR allows any that start with `_`) carry what
//! HAR lacks: `_sha256`, the SHA-256 of the whole response body as the client got it (the
//! stored `text` may be cut at the recording's body cap), and `_truncated`.
use serde::{Deserialize, Serialize};

/// What a redacted header's value becomes.
pub const REDACTED: &str = "[redacted]";

/// Whether a header's value is a secret that a recording must not keep: credentials and
/// cookies, and any header named like a token, key or secret (`X-Api-Key`, `X-Auth-Token`).
pub fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || ["token", "key", "secret"].iter().any(|w| n.contains(w))
}

/// A header map as HAR name/value pairs, secrets redacted.
pub fn headers(map: &http::HeaderMap) -> Vec<NameValue> {
    map.iter()
        .map(|(name, value)| NameValue {
            name: name.as_str().to_string(),
            value: if is_secret_header(name.as_str()) {
                REDACTED.to_string()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            },
        })
        .collect()
}

/// The file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Har {
    /// The archive.
    pub log: Log,
}

/// `log`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Log {
    /// `1.2`.
    pub version: String,
    /// Who wrote it.
    pub creator: Creator,
    /// The exchanges, in the order their requests started.
    pub entries: Vec<Entry>,
}

/// `creator`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Creator {
    /// `velocache`.
    pub name: String,
    /// Its version.
    pub version: String,
}

/// One request and its response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// When the request started (RFC 3339).
    pub started_date_time: String,
    /// Total time, ms.
    pub time: f64,
    /// The request.
    pub request: Request,
    /// The response.
    pub response: Response,
    /// Required by HAR, always empty here.
    #[serde(default)]
    pub cache: serde_json::Map<String, serde_json::Value>,
    /// Where the time went.
    pub timings: Timings,
}

/// `request`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// Method.
    pub method: String,
    /// Absolute URL.
    pub url: String,
    /// `HTTP/1.1`, `HTTP/2`.
    pub http_version: String,
    /// Cookies (never recorded: secrets).
    #[serde(default)]
    pub cookies: Vec<NameValue>,
    /// Header fields, secrets redacted.
    #[serde(default)]
    pub headers: Vec<NameValue>,
    /// The query, parsed.
    #[serde(default)]
    pub query_string: Vec<NameValue>,
    /// Not measured: -1.
    pub headers_size: i64,
    /// Request body bytes (-1: not known).
    pub body_size: i64,
    /// The request body, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_data: Option<PostData>,
}

/// `postData`: a request's body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostData {
    /// `Content-Type`.
    #[serde(default)]
    pub mime_type: String,
    /// Form parameters (never parsed here: `text` holds the body).
    #[serde(default)]
    pub params: Vec<NameValue>,
    /// The body (up to the recording's cap): text, or base64 when `_encoding` says so.
    #[serde(default)]
    pub text: String,
    /// `base64` for bodies that are not UTF-8 (HAR has no such field for requests).
    #[serde(rename = "_encoding", default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// The body was longer than the cap: `text` is a prefix.
    #[serde(rename = "_truncated", default)]
    pub truncated: bool,
}

/// `response`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    /// Status.
    pub status: u16,
    /// Reason phrase.
    pub status_text: String,
    /// `HTTP/1.1`.
    pub http_version: String,
    /// Cookies (never recorded: secrets).
    #[serde(default)]
    pub cookies: Vec<NameValue>,
    /// Header fields, secrets redacted.
    #[serde(default)]
    pub headers: Vec<NameValue>,
    /// The body.
    pub content: Content,
    /// `Location`, if any.
    #[serde(rename = "redirectURL", default)]
    pub redirect_url: String,
    /// Not measured: -1.
    pub headers_size: i64,
    /// Body bytes the client got.
    pub body_size: i64,
}

/// `content`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Content {
    /// Body bytes the client got.
    pub size: i64,
    /// `Content-Type`.
    #[serde(default)]
    pub mime_type: String,
    /// The body (up to the recording's cap): text, or base64 when `encoding` says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// `base64` for bodies that are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// SHA-256 (hex) of the whole body as the client got it.
    #[serde(rename = "_sha256", default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The body was longer than the cap (or the client's body broke off): `text` is a prefix.
    #[serde(rename = "_truncated", default)]
    pub truncated: bool,
}

/// A name and a value (headers, query parameters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameValue {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// `timings`, ms (-1: does not apply).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timings {
    /// Sending the request.
    pub send: f64,
    /// Waiting for the response head.
    pub wait: f64,
    /// Receiving the body.
    pub receive: f64,
}

/// The query of `url` as HAR pairs (undecoded).
pub fn query_pairs(path_and_query: &str) -> Vec<NameValue> {
    let Some((_, q)) = path_and_query.split_once('?') else {
        return Vec::new();
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            NameValue {
                name: n.to_string(),
                value: v.to_string(),
            }
        })
        .collect()
}

/// The body as HAR `text` and `encoding`: UTF-8 as is, anything else base64.
pub fn body_text(body: &[u8]) -> (String, Option<String>) {
    use base64::Engine as _;
    match std::str::from_utf8(body) {
        Ok(s) => (s.to_string(), None),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(body),
            Some("base64".to_string()),
        ),
    }
}

/// The bytes of a HAR `text` with its `encoding`.
pub fn body_bytes(text: &str, encoding: Option<&str>) -> Option<Vec<u8>> {
    use base64::Engine as _;
    match encoding {
        Some("base64") => base64::engine::general_purpose::STANDARD.decode(text).ok(),
        _ => Some(text.as_bytes().to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_headers_are_redacted_and_the_rest_kept() {
        let mut m = http::HeaderMap::new();
        for (n, v) in [
            ("authorization", "Bearer abc"),
            ("proxy-authorization", "Basic xyz"),
            ("cookie", "s=1"),
            ("set-cookie", "s=2"),
            ("x-api-key", "k"),
            ("x-auth-token", "t"),
            ("x-client-secret", "s"),
            ("accept", "*/*"),
            ("keep-alive", "timeout=5"),
        ] {
            m.append(
                http::HeaderName::from_static(n),
                http::HeaderValue::from_static(v),
            );
        }
        let h = headers(&m);
        let value = |n: &str| h.iter().find(|x| x.name == n).unwrap().value.clone();
        for n in [
            "authorization",
            "proxy-authorization",
            "cookie",
            "set-cookie",
            "x-api-key",
            "x-auth-token",
            "x-client-secret",
        ] {
            assert_eq!(value(n), REDACTED, "{n}");
        }
        assert_eq!(value("accept"), "*/*");
        assert_eq!(value("keep-alive"), "timeout=5");
    }

    #[test]
    fn bodies_round_trip_as_text_or_base64() {
        let (t, e) = body_text(b"hello");
        assert_eq!((t.as_str(), e), ("hello", None));
        let bin = [0u8, 159, 146, 150, 255];
        let (t, e) = body_text(&bin);
        assert_eq!(e.as_deref(), Some("base64"));
        assert_eq!(body_bytes(&t, e.as_deref()).unwrap(), bin);
        assert_eq!(
            query_pairs("/a?x=1&y&z=2"),
            vec![
                NameValue {
                    name: "x".into(),
                    value: "1".into()
                },
                NameValue {
                    name: "y".into(),
                    value: String::new()
                },
                NameValue {
                    name: "z".into(),
                    value: "2".into()
                },
            ]
        );
    }
}
