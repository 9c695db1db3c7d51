//! Fuzz target `admin_query` (the admin API's query values and the dashboard's session cookie): the check is `velocache_fuzz_checks::admin_query` (fuzz/checks),
//! which the stable test suite also runs over every file in fuzz/corpus/admin_query/.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| velocache_fuzz_checks::admin_query(data));
