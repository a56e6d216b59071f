//! cargo fuzz target `client_frame`: the property lives in `wsgate_fuzzing::client_frame` (its doc says
//! what is checked), shared with the corpus replay of every test run.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsgate_fuzzing::client_frame::check(data));
