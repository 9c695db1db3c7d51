//! Fuzz target `shared_record`: the check is `velocache_fuzz_checks::shared_record` (fuzz/checks), which the
//! stable test suite also runs over every file in fuzz/corpus/shared_record/.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| velocache_fuzz_checks::shared_record(data));
