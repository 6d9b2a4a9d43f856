#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| natter_media::fuzz::thumbnail(data));
