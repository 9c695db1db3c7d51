//! Fuzz target `sip_tcp_framing`: the check is `velocache_fuzz_checks::sip_tcp_framing` (fuzz/checks), which the
//! stable test suite also runs over every file in fuzz/corpus/sip_tcp_framing/.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| velocache_fuzz_checks::sip_tcp_framing(data));
