//! What the cache knows about a stored object, in memory and on disk.
//!
//! An [`ObjectMeta`] is built from an origin response when it is stored, updated when a 304
//! revalidates it, and written next to the object's slices as a small JSON file (replaced
//! atomically, never edited in place). Header values are kept as raw bytes (HTTP allows
//! non-UTF-8 in them): on disk each byte is one Latin-1 character, which round-trips exactly.
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

/// A stored response's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The key text (for logs and `velocache cache` listings).
    pub key: String,
    /// Random id of this version of the object; slice files carry it, so a replaced object's
    /// old slices can never be mistaken for the new one's.
    pub version: u64,
    /// Status code of the stored response.
    pub status: u16,
    /// End-to-end response headers, without `Content-Length`, `Content-Range` and `Age`
    /// (computed when serving).
    pub headers: HeaderMap,
    /// Body length, once known (a chunked body's is known at its end).
    pub len: Option<u64>,
    /// When the request that produced it was sent (unix seconds).
    pub request_time: u64,
    /// When its response arrived, or when a 304 last revalidated it (unix seconds).
    pub response_time: u64,
    /// RFC 9111 §4.2.3 corrected initial age, seconds.
    pub initial_age: u64,
    /// Freshness lifetime decided at store time, seconds (origin's, heuristic or a rule's).
    pub lifetime: u64,
    /// Whether `lifetime` comes from a rule's `ttl_override` (it then also overrides
    /// `no-cache`).
    pub ttl_override: bool,
    /// The request header values the response varies on (`Vary`), lower-case names.
    pub vary: Vec<(HeaderName, Option<HeaderValue>)>,
    /// Content-addressed objects: the SHA-256 the body must have.
    pub sha256: Option<[u8; 32]>,
    /// Whether the body was checked against `sha256` (content-addressed objects are served to
    /// new requests only once verified).
    pub verified: bool,
    /// Slice size the object was stored with.
    pub slice_bytes: u64,
}

impl ObjectMeta {
    /// Number of slices of a body of `len` bytes.
    pub fn slices(&self) -> Option<u64> {
        self.len.map(|l| l.div_ceil(self.slice_bytes))
    }

    /// Length of slice `idx` of a body of known length.
    pub fn slice_len(&self, idx: u64) -> Option<u64> {
        let len = self.len?;
        let start = idx.checked_mul(self.slice_bytes)?;
        (start < len || (len == 0 && idx == 0)).then(|| (len - start).min(self.slice_bytes))
    }

    /// A header of the stored response, as text.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Serialise for the metadata file.
    pub fn to_json(&self) -> Vec<u8> {
        let file = MetaFile {
            format: 1,
            key: self.key.clone(),
            version: self.version,
            status: self.status,
            headers: self
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), latin1(v.as_bytes())))
                .collect(),
            len: self.len,
            request_time: self.request_time,
            response_time: self.response_time,
            initial_age: self.initial_age,
            lifetime: self.lifetime,
            ttl_override: self.ttl_override,
            vary: self
                .vary
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_string(),
                        v.as_ref().map(|v| latin1(v.as_bytes())),
                    )
                })
                .collect(),
            sha256: self.sha256.map(hex::encode),
            verified: self.verified,
            slice_bytes: self.slice_bytes,
        };
        serde_json::to_vec(&file).unwrap_or_default()
    }

    /// Parse a metadata file; `None` if it is not one of ours or is damaged.
    pub fn from_json(bytes: &[u8]) -> Option<ObjectMeta> {
        let f: MetaFile = serde_json::from_slice(bytes).ok()?;
        if f.format != 1 || f.slice_bytes == 0 {
            return None;
        }
        let mut headers = HeaderMap::new();
        for (n, v) in f.headers {
            headers.append(
                HeaderName::from_bytes(n.as_bytes()).ok()?,
                HeaderValue::from_bytes(&from_latin1(&v)?).ok()?,
            );
        }
        let mut vary = Vec::new();
        for (n, v) in f.vary {
            let value = match v {
                Some(v) => Some(HeaderValue::from_bytes(&from_latin1(&v)?).ok()?),
                None => None,
            };
            vary.push((HeaderName::from_bytes(n.as_bytes()).ok()?, value));
        }
        let sha256 = match f.sha256 {
            Some(h) => {
                let mut d = [0u8; 32];
                hex::decode_to_slice(h, &mut d).ok()?;
                Some(d)
            }
            None => None,
        };
        Some(ObjectMeta {
            key: f.key,
            version: f.version,
            status: f.status,
            headers,
            len: f.len,
            request_time: f.request_time,
            response_time: f.response_time,
            initial_age: f.initial_age,
            lifetime: f.lifetime,
            ttl_override: f.ttl_override,
            vary,
            sha256,
            verified: f.verified,
            slice_bytes: f.slice_bytes,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct MetaFile {
    format: u32,
    key: String,
    version: u64,
    status: u16,
    headers: Vec<(String, String)>,
    len: Option<u64>,
    request_time: u64,
    response_time: u64,
    initial_age: u64,
    lifetime: u64,
    ttl_override: bool,
    vary: Vec<(String, Option<String>)>,
    sha256: Option<String>,
    verified: bool,
    slice_bytes: u64,
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

fn from_latin1(s: &str) -> Option<Vec<u8>> {
    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

#[cfg(test)]
pub(crate) fn sample(len: Option<u64>, slice_bytes: u64) -> ObjectMeta {
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert("etag", HeaderValue::from_static("\"v1\""));
    ObjectMeta {
        key: "url:h@1.2.3.4/x".into(),
        version: 7,
        status: 200,
        headers,
        len,
        request_time: 1_000,
        response_time: 1_001,
        initial_age: 1,
        lifetime: 60,
        ttl_override: false,
        vary: Vec::new(),
        sha256: None,
        verified: false,
        slice_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json_including_non_utf8_values() {
        let mut m = sample(Some(2_500_000), 1 << 20);
        m.headers.append(
            "x-odd",
            HeaderValue::from_bytes(&[b'a', 0xe9, 0xff]).unwrap(),
        );
        m.vary = vec![
            (
                HeaderName::from_static("accept-encoding"),
                Some(HeaderValue::from_static("gzip")),
            ),
            (HeaderName::from_static("accept-language"), None),
        ];
        m.sha256 = Some([3; 32]);
        let back = ObjectMeta::from_json(&m.to_json()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn damaged_files_are_rejected() {
        assert!(ObjectMeta::from_json(b"").is_none());
        assert!(ObjectMeta::from_json(b"{\"format\":2}").is_none());
        let m = sample(Some(1), 1 << 20);
        let text = m.to_json();
        assert!(ObjectMeta::from_json(&text[..text.len() - 3]).is_none());
    }

    #[test]
    fn slice_geometry() {
        let m = sample(Some(2_500_000), 1 << 20);
        assert_eq!(m.slices(), Some(3));
        assert_eq!(m.slice_len(0), Some(1 << 20));
        assert_eq!(m.slice_len(2), Some(2_500_000 - 2 * (1 << 20)));
        assert_eq!(m.slice_len(3), None);
        let empty = sample(Some(0), 1 << 20);
        assert_eq!(empty.slices(), Some(0));
        assert_eq!(empty.slice_len(0), Some(0));
        assert_eq!(sample(None, 1 << 20).slice_len(0), None);
    }
}
