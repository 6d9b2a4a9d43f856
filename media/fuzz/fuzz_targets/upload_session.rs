//! One user's (and a stranger's) sequence of TUS and simple uploads, HEADs,
//! DELETEs and downloads against the real media router and store; the
//! invariants are in `media/src/fuzz_upload.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    natter_media::fuzz_upload::upload_script(data);
});
