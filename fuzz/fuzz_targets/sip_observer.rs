//! Fuzz target `sip_observer`: the check is `velocache_fuzz_checks::sip_observer` (fuzz/checks), which the
//! stable test suite also runs over every file in fuzz/corpus/sip_observer/.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| velocache_fuzz_checks::sip_observer(data));
