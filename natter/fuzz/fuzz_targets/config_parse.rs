#![no_main]

// The configuration lives in the binary crate; include its modules by path.
#[allow(dead_code)]
#[path = "../../src/config.rs"]
mod config;
#[path = "../../src/config_fuzz.rs"]
mod config_fuzz;

libfuzzer_sys::fuzz_target!(|data: &[u8]| config_fuzz::config_parse(data));
