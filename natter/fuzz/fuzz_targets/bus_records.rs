//! What a chat node reads from other nodes over Redis: record batches, call
//! events and limit reports; the invariants are in `chat-core/src/bus_fuzz.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    natter_chat::bus_fuzz::bus_payload(data);
});
