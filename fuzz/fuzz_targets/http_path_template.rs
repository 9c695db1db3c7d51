//! Fuzz target `http_path_template`: the check is `velocache_fuzz_checks::http_path_template`
//! (fuzz/checks), which the stable test suite also runs over every file in
//! fuzz/corpus/http_path_template/.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| velocache_fuzz_checks::http_path_template(data));
