//! Cache keys: what makes two requests "the same object".
//!
//! A request's host, original destination and path (with its query normalised per rule) enter;
//! an [`ObjectKey`] leaves: the key text (for logs and the on-disk metadata) and a fixed-size
//! [`ObjectId`] (a SHA-256 prefix of the text; it names the object's directory).
//!
//! - The scheme is not part of the key, nor the ports 80/443: the same object fetched over
//!   plain HTTP and over intercepted HTTPS is stored once.
//! - The original destination's IP address is: an intercepted client chooses both the address
//!   it connects to and the `Host` it sends, so a key on `Host` alone would let one client
//!   store what an arbitrary server says under a name it does not serve (the cache poisoning
//!   Squid's `host_verify_strict` exists for).
//! - A rule may declare a URL content-addressed (`cache_key.content_addressed = "sha256"`): the
//!   key is then the digest found in the path, whatever the host, address or scheme, and the
//!   stored object is verified against it — which is what makes sharing across hosts safe.
use std::{fmt, net::IpAddr};

use sha2::{Digest as _, Sha256};

use crate::rules::{CacheKeyOptions, Digest};

/// Fixed-size object identity (16 bytes of SHA-256 of the key text).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub [u8; 16]);

impl ObjectId {
    /// The id of a key text.
    pub fn of(text: &str) -> ObjectId {
        let digest = Sha256::digest(text.as_bytes());
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        ObjectId(id)
    }

    /// Lower-case hex.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse lower-case hex (directory names).
    pub fn from_hex(s: &str) -> Option<ObjectId> {
        let mut id = [0u8; 16];
        hex::decode_to_slice(s, &mut id).ok()?;
        Some(ObjectId(id))
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

/// A request's cache identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectKey {
    /// Human-readable key (`url:host@ip/path?query` or `sha256:<hex>`).
    pub text: String,
    /// Its id.
    pub id: ObjectId,
    /// For content-addressed keys, the SHA-256 the body must have.
    pub sha256: Option<[u8; 32]>,
}

/// What the key is derived from.
#[derive(Debug, Clone, Copy)]
pub struct KeyInput<'a> {
    /// `Host` (or the URI authority), any case, maybe with a port.
    pub host: &'a str,
    /// The original destination's address and port.
    pub dst: std::net::SocketAddr,
    /// Path and query as sent (origin-form).
    pub path_and_query: &'a str,
}

impl ObjectKey {
    /// Derive the key for `input` under the rule's key options.
    pub fn derive(input: KeyInput<'_>, opts: &CacheKeyOptions) -> ObjectKey {
        if opts.content_addressed == Some(Digest::Sha256)
            && let Some(digest) = find_sha256(input.path_and_query)
        {
            let text = format!("sha256:{}", hex::encode(digest));
            return ObjectKey {
                id: ObjectId::of(&text),
                text,
                sha256: Some(digest),
            };
        }
        let (path, query) = match input.path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (input.path_and_query, None),
        };
        let query = query.and_then(|q| normalise_query(q, opts));
        let host = host_part(input.host);
        let ip = canonical_ip(input.dst.ip());
        let port = match input.dst.port() {
            80 | 443 => String::new(),
            p => format!(":{p}"),
        };
        let ip = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        let text = match query {
            Some(q) => format!("url:{host}@{ip}{port}{path}?{q}"),
            None => format!("url:{host}@{ip}{port}{path}"),
        };
        ObjectKey {
            id: ObjectId::of(&text),
            text,
            sha256: None,
        }
    }
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The host without port or trailing dot, lower-cased.
fn host_part(host: &str) -> String {
    let h = host.trim();
    let h = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match h.rsplit_once(':') {
            Some((name, port))
                if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                name
            }
            _ => h,
        }
    };
    h.trim_end_matches('.').to_ascii_lowercase()
}

/// The query as the key sees it; `None` when nothing of it is kept.
fn normalise_query(q: &str, opts: &CacheKeyOptions) -> Option<String> {
    if opts.ignore_query {
        return None;
    }
    let mut params: Vec<&str> = q.split('&').filter(|p| !p.is_empty()).collect();
    if !opts.keep_query.is_empty() {
        params.retain(|p| {
            let name = p.split('=').next().unwrap_or(p);
            opts.keep_query.iter().any(|k| k == name)
        });
        params.sort_unstable();
    } else if opts.sort_query {
        params.sort_unstable();
    } else {
        return (!q.is_empty()).then(|| q.to_string());
    }
    (!params.is_empty()).then(|| params.join("&"))
}

/// The first `sha256:<64 hex>` (or `sha256=`, `sha256/`) in a path, as bytes.
pub fn find_sha256(path: &str) -> Option<[u8; 32]> {
    let lower = path.to_ascii_lowercase();
    let mut from = 0;
    while let Some(at) = lower[from..].find("sha256") {
        let start = from + at + "sha256".len();
        let rest = &lower.as_bytes()[start..];
        // Registry storage backends shard by the first two digits: `sha256/ab/abcd…`.
        let rest = match rest {
            [b'/', a, b, b'/', tail @ ..] if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => {
                &rest[3..3 + 1 + tail.len()]
            }
            _ => rest,
        };
        if let [sep, hexdigits @ ..] = rest
            && matches!(sep, b':' | b'=' | b'/' | b'-')
            && hexdigits.len() >= 64
            && hexdigits[..64].iter().all(u8::is_ascii_hexdigit)
            && hexdigits.get(64).is_none_or(|b| !b.is_ascii_hexdigit())
        {
            let mut out = [0u8; 32];
            if hex::decode_to_slice(&hexdigits[..64], &mut out).is_ok() {
                return Some(out);
            }
        }
        from = start;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(host: &str, dst: &str, path: &str, opts: &CacheKeyOptions) -> ObjectKey {
        ObjectKey::derive(
            KeyInput {
                host,
                dst: dst.parse().unwrap(),
                path_and_query: path,
            },
            opts,
        )
    }

    #[test]
    fn scheme_ports_and_host_case_do_not_split_objects() {
        let o = CacheKeyOptions::default();
        let http = key("Example.ORG", "10.0.0.1:80", "/a", &o);
        let https = key("example.org.", "10.0.0.1:443", "/a", &o);
        let with_port = key("example.org:80", "[::ffff:10.0.0.1]:80", "/a", &o);
        assert_eq!(http, https);
        assert_eq!(http, with_port);
        assert_eq!(http.text, "url:example.org@10.0.0.1/a");
        assert_eq!(http.id.hex().len(), 32);
    }

    #[test]
    fn destination_and_odd_ports_are_part_of_the_key() {
        let o = CacheKeyOptions::default();
        assert_ne!(
            key("example.org", "10.0.0.1:80", "/a", &o),
            key("example.org", "10.0.0.2:80", "/a", &o)
        );
        assert_ne!(
            key("example.org", "10.0.0.1:80", "/a", &o),
            key("example.org", "10.0.0.1:8080", "/a", &o)
        );
        assert_eq!(
            key("h", "[fd00::1]:8080", "/x", &o).text,
            "url:h@[fd00::1]:8080/x"
        );
    }

    #[test]
    fn query_normalisation() {
        let plain = CacheKeyOptions::default();
        assert_ne!(
            key("h", "1.2.3.4:80", "/a?b=1&a=2", &plain),
            key("h", "1.2.3.4:80", "/a?a=2&b=1", &plain)
        );
        let sort = CacheKeyOptions {
            sort_query: true,
            ..Default::default()
        };
        assert_eq!(
            key("h", "1.2.3.4:80", "/a?b=1&a=2", &sort),
            key("h", "1.2.3.4:80", "/a?a=2&b=1&", &sort)
        );
        let ignore = CacheKeyOptions {
            ignore_query: true,
            ..Default::default()
        };
        assert_eq!(
            key("h", "1.2.3.4:80", "/a?token=xyz", &ignore).text,
            "url:h@1.2.3.4/a"
        );
        let keep = CacheKeyOptions {
            keep_query: vec!["v".into(), "arch".into()],
            ..Default::default()
        };
        assert_eq!(
            key("h", "1.2.3.4:80", "/a?sig=1&v=2&arch=x&exp=9", &keep).text,
            "url:h@1.2.3.4/a?arch=x&v=2"
        );
        assert_eq!(
            key("h", "1.2.3.4:80", "/a?sig=1", &keep).text,
            "url:h@1.2.3.4/a"
        );
    }

    #[test]
    fn content_addressed_keys_ignore_host_and_destination() {
        let ca = CacheKeyOptions {
            content_addressed: Some(Digest::Sha256),
            ..Default::default()
        };
        let d = "a".repeat(64);
        let a = key(
            "registry-1.docker.io",
            "1.1.1.1:443",
            &format!("/v2/library/alpine/blobs/sha256:{d}"),
            &ca,
        );
        let b = key(
            "production.cloudfront.net",
            "2.2.2.2:80",
            &format!("/registry-v2/docker/blobs/sha256/aa/{d}/data?X-Amz=1"),
            &ca,
        );
        assert_eq!(a.text, format!("sha256:{d}"));
        assert_eq!(a, b);
        assert_eq!(a.sha256, Some([0xaa; 32]));
        // No digest in the path: an ordinary key.
        let c = key("h", "1.1.1.1:80", "/v2/x/manifests/latest", &ca);
        assert!(c.text.starts_with("url:"));
        assert!(c.sha256.is_none());
    }

    #[test]
    fn finds_digests_only_when_exactly_64_hex() {
        assert!(find_sha256(&format!("/x/sha256:{}", "0".repeat(63))).is_none());
        assert!(find_sha256(&format!("/x/sha256:{}", "0".repeat(65))).is_none());
        assert!(find_sha256(&format!("/x/SHA256={}", "F".repeat(64))).is_some());
        assert!(find_sha256("/sha256sha256:").is_none());
    }
}
