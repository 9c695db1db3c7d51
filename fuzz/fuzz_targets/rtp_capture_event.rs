//! Fuzz target `rtp_capture_event` (the RTP capture ring's records): the check is `velocache_fuzz_checks::rtp_capture_event` (fuzz/checks),
//! which the stable test suite also runs over every file in fuzz/corpus/rtp_capture_event/.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| velocache_fuzz_checks::rtp_capture_event(data));
