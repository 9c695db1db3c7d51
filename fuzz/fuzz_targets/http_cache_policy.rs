//! The RFC 9111 decisions over arbitrary request and response headers never panic, and the
//! metadata file parser never panics on arbitrary bytes.
#![no_main]
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use libfuzzer_sys::fuzz_target;
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

fuzz_target!(|data: &[u8]| {
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
});
