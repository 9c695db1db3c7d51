//! Fuzz target `dns_query`: the check is `velocache_fuzz_checks::dns_query` (fuzz/checks), which the
//! stable test suite also runs over every file in fuzz/corpus/dns_query/.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| velocache_fuzz_checks::dns_query(data));
