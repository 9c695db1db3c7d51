//! `Cache-Control` / `Pragma` parsing never panics, and repeating a directive list never makes
//! it less conservative.
#![no_main]
use libfuzzer_sys::fuzz_target;
use velocache::cache::cache_control::{CacheControl, contains_token, parse_delta};

fuzz_target!(|data: &[u8]| {
    let cc = CacheControl::parse(data);
    let _ = parse_delta(data);
    let _ = contains_token(data, b"no-cache");
    let mut twice = data.to_vec();
    twice.push(b',');
    twice.extend_from_slice(data);
    let cc2 = CacheControl::parse(&twice);
    assert_eq!(cc.no_store, cc2.no_store);
    assert!(cc2.max_age <= cc.max_age || cc.max_age.is_none());
});
