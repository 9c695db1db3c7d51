//! Fuzz target `config_files`: the check is `velocache_fuzz_checks::config_files` (fuzz/checks), which the
//! stable test suite also runs over every file in fuzz/corpus/config_files/.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| velocache_fuzz_checks::config_files(data));
