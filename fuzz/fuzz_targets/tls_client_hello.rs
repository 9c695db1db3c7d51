//! Fuzz target `tls_client_hello`: the check is `velocache_fuzz_checks::tls_client_hello` (fuzz/checks), which the
//! stable test suite also runs over every file in fuzz/corpus/tls_client_hello/.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| velocache_fuzz_checks::tls_client_hello(data));
