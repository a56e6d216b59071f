//! cargo fuzz target `http_inputs`: the property lives in `wsgate_fuzzing::http_inputs` (its doc says
//! what is checked), shared with the corpus replay of every test run.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsgate_fuzzing::http_inputs::check(data));
