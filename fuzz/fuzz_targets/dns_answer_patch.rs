//! Fuzz target `dns_answer_patch`: the check is `velocache_fuzz_checks::dns_answer_patch` (fuzz/checks), which the
//! stable test suite also runs over every file in fuzz/corpus/dns_answer_patch/.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| velocache_fuzz_checks::dns_answer_patch(data));
