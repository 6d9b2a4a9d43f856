//! docs/protocol.md documents every frame type, error code and close code.

#[test]
fn protocol_doc_is_complete() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(
            // At run time: a build cache shared by two clones can hold a binary
            // whose compile-time path is the other clone's.
            &std::env::var_os("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../docs/protocol.md"),
    )
    .unwrap();
    for t in natter_proto::CLIENT_FRAME_TYPES
        .iter()
        .chain(natter_proto::SERVER_FRAME_TYPES)
    {
        assert!(
            doc.contains(&format!("\"type\": \"{t}\"")) || doc.contains(&format!("`{t}`")),
            "frame {t}"
        );
    }
    for c in natter_proto::ErrorCode::ALL {
        assert!(
            doc.contains(&format!("| `{}` |", c.as_str())),
            "error code {c}"
        );
    }
    for c in natter_proto::CloseCode::ALL {
        assert!(
            doc.contains(&format!("| {} |", c.code())),
            "close code {}",
            c.code()
        );
    }
}
