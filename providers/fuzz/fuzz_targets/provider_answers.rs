#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| natter_providers::fuzz::answers(data));
