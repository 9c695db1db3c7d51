//! Fuzz target `http_cache_policy`: the check is `velocache_fuzz_checks::http_cache_policy` (fuzz/checks), which the
//! stable test suite also runs over every file in fuzz/corpus/http_cache_policy/.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| velocache_fuzz_checks::http_cache_policy(data));
