//! Replays every seed in `turn-stun/fuzz/seeds/<target>/` through the fuzz target
//! bodies, so that CI runs the corpora (and every crash found, once added there)
//! without cargo-fuzz (`scripts/fuzz.sh` is what fuzzes).

use std::path::Path;

fn replay(target: &str, body: fn(&[u8])) {
    let dir = Path::new(
        &std::env::var_os("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../fuzz/seeds")
    .join(target);
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("seed directory {}: {e}", dir.display()));
    let mut count = 0;
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        body(&data);
        count += 1;
    }
    assert!(count > 0, "no seeds in {}", dir.display());
}

#[test]
fn stun_message_seeds() {
    replay("stun_message", natter_turn_core::fuzz::stun_message);
}

#[test]
fn channel_data_seeds() {
    replay("channel_data", natter_turn_core::fuzz::channel_data);
}

#[test]
fn tcp_framing_seeds() {
    replay("tcp_framing", natter_turn_core::fuzz::tcp_framing);
}

#[test]
fn server_datagram_seeds() {
    replay("server_datagram", natter_turn_core::fuzz::server_datagram);
}

#[test]
fn turn_lifecycle_seeds() {
    replay("turn_lifecycle", natter_turn_core::fuzz::turn_lifecycle);
}
