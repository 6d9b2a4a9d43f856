//! One device's chat session driven by a fuzz-made script of hostile client
//! frames, lost and reordered deliveries, failing fetches, resyncs, time jumps
//! and reconnects; the invariants are in `chat-core/src/pipeline/fuzz.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    natter_chat::pipeline::fuzz::session_script(data);
});
