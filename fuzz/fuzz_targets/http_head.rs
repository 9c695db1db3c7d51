//! Fuzz target `http_head`: the check is `velocache_fuzz_checks::http_head` (fuzz/checks), which the
//! stable test suite also runs over every file in fuzz/corpus/http_head/.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| velocache_fuzz_checks::http_head(data));
