#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| natter_turn_core::fuzz::stun_message(data));
