//! Fuzz target `sip_message`: the check is `velocache_fuzz_checks::sip_message` (fuzz/checks), which the
//! stable test suite also runs over every file in fuzz/corpus/sip_message/.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| velocache_fuzz_checks::sip_message(data));
