//! Fuzz target `http_range`: the check is `velocache_fuzz_checks::http_range` (fuzz/checks), which the
//! stable test suite also runs over every file in fuzz/corpus/http_range/.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| velocache_fuzz_checks::http_range(data));
