//! Fuzz target `sdp`: the check is `velocache_fuzz_checks::sdp` (fuzz/checks), which the
//! stable test suite also runs over every file in fuzz/corpus/sdp/.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| velocache_fuzz_checks::sdp(data));
