//! Fuzz target bodies (feature `fuzzing`, and compiled in tests so the seed
//! corpora in `media/fuzz/seeds/` replay under `cargo test`). Each must return
//! without panicking for any input.

use crate::sniff::{self, ImageFormat, Kind};

/// Content sniffing; image headers of whatever the bytes look like.
pub fn sniff(data: &[u8]) {
    let s = sniff::sniff(data);
    if let Kind::Image(format) = s.kind {
        let _ = crate::header::parse(format, data);
    }
}

/// Header parsing of every image format, and EXIF orientation.
pub fn image_header(data: &[u8]) {
    for format in [
        ImageFormat::Jpeg,
        ImageFormat::Png,
        ImageFormat::Gif,
        ImageFormat::WebP,
    ] {
        if let Ok(h) = crate::header::parse(format, data) {
            // Parsed dimensions are never zero.
            assert!(h.width > 0 && h.height > 0, "zero dimension accepted");
        }
    }
    let _ = crate::header::exif_orientation(data);
}

/// TUS and range headers, read as text.
pub fn upload_headers(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::tus::parse_metadata(&text);
    let _ = crate::tus::parse_checksum(&text);
    let _ = crate::tus::parse_u64("Upload-Offset", &text);
    for size in [0, 1, 1000] {
        if let crate::range::RangeOutcome::Partial(r) = crate::range::evaluate(Some(&text), size) {
            assert!(r.start < r.end && r.end <= size, "range outside the body");
        }
    }
}

/// Full thumbnailing of small images (decoders under limits), bounded so the
/// fuzzer stays fast: anything the header calls larger than 4 MP is refused.
pub fn thumbnail(data: &[u8]) {
    let s = sniff::sniff(data);
    if let Kind::Image(format) = s.kind
        && let Ok(h) = crate::header::parse(format, data)
    {
        let opts = crate::thumb::ThumbOptions {
            max_pixels: 4_000_000,
            ..Default::default()
        };
        let _ = crate::thumb::thumbnails(data, &h, &opts);
    }
}
