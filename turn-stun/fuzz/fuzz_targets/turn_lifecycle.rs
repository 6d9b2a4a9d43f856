#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| natter_turn_core::fuzz::turn_lifecycle(data));
