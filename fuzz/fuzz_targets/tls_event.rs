//! Fuzz target `tls_event`: the check is `velocache_fuzz_checks::tls_event` (fuzz/checks), which the
//! stable test suite also runs over every file in fuzz/corpus/tls_event/.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| velocache_fuzz_checks::tls_event(data));
