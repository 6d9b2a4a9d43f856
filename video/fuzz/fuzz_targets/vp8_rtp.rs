#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| natter_video::fuzz::vp8_rtp(data));
