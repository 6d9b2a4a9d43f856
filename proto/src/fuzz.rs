//! Fuzz target bodies. `proto/fuzz` (outside the workspace, run by `scripts/fuzz.sh`) calls them
//! with libFuzzer input; `cargo test -p natter-proto` replays the seeds in
//! `proto/fuzz/seeds/` and arbitrary inputs through proptest on stable.

use crate::decode::{decode_client_frame, decode_server_frame, describe_frame};

/// Decodes arbitrary bytes as a client frame and as a server frame. Must never
/// panic; whatever decodes must re-encode to JSON that decodes to the same frame.
pub fn frame_decode(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = describe_frame(text);
    if let Ok(frame) = decode_client_frame(text) {
        let again = decode_client_frame(&frame.to_json());
        assert_eq!(again.as_ref(), Ok(&frame), "client frame round trip");
    }
    if let Ok(frame) = decode_server_frame(text) {
        let again = decode_server_frame(&frame.to_json());
        assert_eq!(again.as_ref(), Ok(&frame), "server frame round trip");
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    #[test]
    fn seeds_replay() {
        let dir = std::path::Path::new(
            &std::env::var_os("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("fuzz/seeds/frame_decode");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("fuzz seeds directory") {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            super::frame_decode(&bytes);
            n += 1;
        }
        assert!(n >= 10, "expected the checked-in seeds, found {n}");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            super::frame_decode(&data);
        }

        #[test]
        fn json_like_text_never_panics(s in r#"\{("(type|id|to|body|ids|user|group|kind|token|nonce)":("[a-z.]{0,12}"|[0-9-]{1,6}|\{"user":"u"\}|\[[0-9,]{0,9}\]|null|true),?){0,5}\}"#) {
            super::frame_decode(s.as_bytes());
        }
    }
}
