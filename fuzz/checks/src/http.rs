//! HTTP: Cache-Control, the cache policy and ranges; request and response heads through the
//! proxy's framing layer (`http_head`).

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use velocache::cache::cache_control::{CacheControl, contains_token, parse_delta};
use velocache::cache::range::{ContentRange, RangeRequest, Resolved};
use velocache::cache::{ObjectMeta, policy};

/// `name: value` lines; the request's before a blank line, the response's after.
fn headers(text: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for line in text.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) {
            h.append(n, v);
        }
    }
    h
}

/// Whether every quoted string in `value` is closed (a `\` escapes the next byte inside one).
fn quotes_balanced(value: &[u8]) -> bool {
    let (mut open, mut escaped) = (false, false);
    for &b in value {
        if escaped {
            escaped = false;
        } else if open && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            open = !open;
        }
    }
    !open && !escaped
}

/// `Cache-Control` / `Pragma` parsing never panics, and repeating a directive list never makes
/// it less conservative. (Only for a list whose quoted strings all close: an open quote runs to
/// the end of its value, so `a, a` is then not `a` twice — the second copy starts inside the
/// first one's quoted string. Header lines are parsed one by one, so this never joins lines.)
pub fn http_cache_control(data: &[u8]) {
    let cc = CacheControl::parse(data);
    let _ = parse_delta(data);
    let _ = contains_token(data, b"no-cache");
    let mut twice = data.to_vec();
    twice.push(b',');
    twice.extend_from_slice(data);
    if !quotes_balanced(data) {
        return;
    }
    let cc2 = CacheControl::parse(&twice);
    assert_eq!(cc.no_store, cc2.no_store);
    assert!(cc2.max_age <= cc.max_age || cc.max_age.is_none());
}

/// The RFC 9111 decisions over arbitrary request and response headers never panic, and the
/// metadata file parser never panics on arbitrary bytes.
pub fn http_cache_policy(data: &[u8]) {
    if let Some(m) = ObjectMeta::from_json(data) {
        let _ = m.slices();
        let _ = m.slice_len(3);
    }
    let split = data
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or(data.len());
    let req = headers(&data[..split]);
    let resp = headers(data.get(split + 2..).unwrap_or(&[]));
    let status = StatusCode::from_u16(200 + (data.len() % 400) as u16).unwrap_or(StatusCode::OK);
    let _ = policy::storable(&Method::GET, &req, status, &resp, None);
    let now = 1_800_000_000;
    let lifetime = policy::lifetime(status, &resp, now, policy::Heuristic::default(), None);
    let meta = ObjectMeta {
        key: "k".into(),
        version: 1,
        status: status.as_u16(),
        headers: resp.clone(),
        len: Some(data.len() as u64),
        request_time: now - 1,
        response_time: now,
        initial_age: policy::initial_age(&resp, now - 1, now),
        lifetime,
        ttl_override: false,
        vary: policy::vary_capture(&resp, &req).unwrap_or_default(),
        sha256: None,
        verified: false,
        slice_bytes: 1 << 20,
    };
    let _ = policy::evaluate(&meta, &req, now + 10);
    let _ = policy::vary_matches(&meta, &req);
    let _ = policy::client_not_modified(&meta, &req);
    let _ = policy::if_range_allows(&meta, &req);
    let _ = policy::not_modified_matches(&meta, &req);
    let merged = policy::merge_304(&resp, &req);
    assert!(merged.get("content-length") == resp.get("content-length"));
    let back = ObjectMeta::from_json(&meta.to_json());
    assert_eq!(back.as_ref(), Some(&meta));
}

/// `Range` and `Content-Range` parsing never panic, and a resolved range always lies inside the
/// object.
pub fn http_range(data: &[u8]) {
    let (len_bytes, text) = data.split_at(data.len().min(8));
    let mut n = [0u8; 8];
    n[..len_bytes.len()].copy_from_slice(len_bytes);
    let len = u64::from_le_bytes(n) % (1 << 42);
    if let Some(r) = RangeRequest::parse(text)
        && let Resolved::Partial(span) = r.resolve(len)
    {
        assert!(span.start < span.end && span.end <= len);
        let _ = span.content_range(len);
    }
    if let Some(cr) = ContentRange::parse(text) {
        assert!(cr.span.start < cr.span.end);
        if let Some(t) = cr.total {
            assert!(cr.span.end <= t);
        }
    }
}

/// The anomaly detector's path templates: any path gives one, at most 256 bytes, without the
/// query or fragment, and a template that was not cut is its own template (variables stay
/// variables, so a learned shape is stable).
pub fn http_path_template(data: &[u8]) {
    let path = String::from_utf8_lossy(data);
    let t = velocache::http::path_template(&path);
    assert!(t.len() <= 256, "{} bytes", t.len());
    assert!(!t.contains(['?', '#']), "{t:?}");
    if t.len() < 200 {
        assert_eq!(velocache::http::path_template(&t), t, "from {path:?}");
    }
}

/// A request head as hyper hands it to the proxy: parsed by httparse (hyper's parser), built
/// into `http` parts the way hyper builds them. `None` where hyper would refuse the head
/// itself (it answers 400 before the proxy runs).
fn request_parts(data: &[u8]) -> Option<http::request::Parts> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(_) = req.parse(data).ok()? else {
        return None;
    };
    let mut b = http::Request::builder()
        .method(Method::from_bytes(req.method?.as_bytes()).ok()?)
        .uri(req.path?)
        .version(match req.version? {
            0 => http::Version::HTTP_10,
            _ => http::Version::HTTP_11,
        });
    for h in req.headers.iter() {
        b = b.header(
            HeaderName::from_bytes(h.name.as_bytes()).ok()?,
            HeaderValue::from_bytes(h.value).ok()?,
        );
    }
    Some(b.body(()).ok()?.into_parts().0)
}

/// The proxy's request and response head handling over arbitrary heads: `check_request`
/// refuses with a client error or accepts a head that has one `Host` (HTTP/1.1) and only
/// `100-continue` expectations; `frame_upstream` then leaves exactly the framing of the body
/// really sent (one `Content-Length` of that size, or `chunked` for an unknown size, never
/// both, never `Expect`); the hop-by-hop strip and the `Host` check take any head. The input's
/// first byte picks the size of the body sent (0: unknown), the rest is the request head,
/// then (after its blank line) a response head.
pub fn http_head(data: &[u8]) {
    let Some((&size, head)) = data.split_first() else {
        return;
    };
    if let Some(mut parts) = request_parts(head) {
        match velocache::http::check_request(&parts) {
            Err(refusal) => {
                assert!(refusal.status().is_client_error(), "{refusal:?}");
                assert!(!refusal.reason().is_empty());
            }
            Ok(()) => {
                let hosts = parts.headers.get_all(http::header::HOST).iter().count();
                if parts.version == http::Version::HTTP_11 {
                    assert_eq!(hosts, 1, "HTTP/1.1 accepted with {hosts} Host fields");
                }
                if let Some(host) = parts.headers.get(http::header::HOST)
                    && let Ok(host) = host.to_str()
                {
                    let _ = velocache::http::check_host(host, [192, 0, 2, 1].into());
                }
                let hint = match size {
                    0 => http_body::SizeHint::new(),
                    n => http_body::SizeHint::with_exact(u64::from(n - 1) * 1000),
                };
                velocache::http::frame_upstream(&mut parts, &hint);
                let h = &parts.headers;
                assert!(h.get(http::header::EXPECT).is_none(), "Expect forwarded");
                let lengths: Vec<_> = h.get_all(http::header::CONTENT_LENGTH).iter().collect();
                let te: Vec<_> = h.get_all(http::header::TRANSFER_ENCODING).iter().collect();
                assert!(lengths.len() <= 1 && te.len() <= 1, "{h:?}");
                assert!(lengths.is_empty() || te.is_empty(), "both framings: {h:?}");
                match hint.exact() {
                    None => assert_eq!(te, ["chunked"], "{h:?}"),
                    Some(n) => {
                        assert!(te.is_empty(), "{h:?}");
                        if let Some(l) = lengths.first() {
                            assert_eq!(l.to_str().ok(), Some(n.to_string().as_str()));
                        } else {
                            assert_eq!(n, 0, "a body of {n} bytes without its length");
                        }
                    }
                }
                velocache::http::strip_hop_by_hop(&mut parts.headers);
            }
        }
    }
    // The response head after the request's blank line.
    let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
        return;
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    if let Ok(httparse::Status::Complete(_)) = resp.parse(&head[at + 4..]) {
        let mut map = HeaderMap::new();
        for h in resp.headers.iter() {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_bytes(h.value),
            ) {
                map.append(n, v);
            }
        }
        let status = resp
            .code
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::OK);
        velocache::http::strip_hop_by_hop(&mut map);
        assert!(map.get(http::header::CONNECTION).is_none());
        let _ = policy::storable(&Method::GET, &HeaderMap::new(), status, &map, None);
    }
}
