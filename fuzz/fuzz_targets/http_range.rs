//! `Range` and `Content-Range` parsing never panic, and a resolved range always lies inside the
//! object.
#![no_main]
use libfuzzer_sys::fuzz_target;
use velocache::cache::range::{ContentRange, RangeRequest, Resolved};

fuzz_target!(|data: &[u8]| {
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
});
