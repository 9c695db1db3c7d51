//! Fuzz target `bpf_map_values`: the check is `velocache_fuzz_checks::bpf_map_values` (fuzz/checks), which the
//! stable test suite also runs over every file in fuzz/corpus/bpf_map_values/.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| velocache_fuzz_checks::bpf_map_values(data));
