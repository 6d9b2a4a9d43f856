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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    fn seeds_dir() -> PathBuf {
        PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("fuzz/seeds")
    }

    fn replay(target: &str, f: fn(&[u8])) {
        let dir = seeds_dir().join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            f(&data);
            // Every prefix too: truncated uploads are the common bad input.
            for cut in (0..data.len()).step_by((data.len() / 64).max(1)) {
                f(&data[..cut]);
            }
            n += 1;
        }
        assert!(n >= 3, "{target}: only {n} seeds in {}", dir.display());
    }

    #[test]
    fn seeds_replay_without_panics() {
        replay("sniff", super::sniff);
        replay("image_header", super::image_header);
        replay("upload_headers", super::upload_headers);
        replay("thumbnail", super::thumbnail);
        replay("upload_session", crate::fuzz_upload::upload_script);
    }

    /// The fuzz targets, each with a corpus directory under `fuzz/seeds/`.
    const TARGETS: [&str; 5] = [
        "sniff",
        "image_header",
        "upload_headers",
        "thumbnail",
        "upload_session",
    ];

    /// The generated seed corpora: `(target, file name, bytes)`. The committed
    /// `fuzz/seeds/` holds these (checked below) plus whatever was copied in by
    /// hand (crash reproducers from `scripts/fuzz.sh`).
    fn seed_corpus() -> Vec<(&'static str, &'static str, Vec<u8>)> {
        let img = image::RgbImage::from_fn(24, 16, |x, y| {
            image::Rgb([(x * 10) as u8, (y * 15) as u8, 77])
        });
        let enc = |fmt| {
            let mut out = std::io::Cursor::new(Vec::new());
            image::DynamicImage::ImageRgb8(img.clone())
                .write_to(&mut out, fmt)
                .unwrap();
            out.into_inner()
        };
        let jpeg = enc(image::ImageFormat::Jpeg);
        let png = enc(image::ImageFormat::Png);
        let gif = enc(image::ImageFormat::Gif);
        let webp = enc(image::ImageFormat::WebP);
        // A JPEG with an EXIF orientation (6) inserted after SOI.
        let mut exif_jpeg = vec![0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x22];
        exif_jpeg.extend_from_slice(
            b"Exif\0\0II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x06\0\0\0\0\0\0\0",
        );
        exif_jpeg.extend_from_slice(&jpeg[2..]);
        let mut bomb = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
        bomb.extend_from_slice(&100_000u32.to_be_bytes());
        bomb.extend_from_slice(&100_000u32.to_be_bytes());
        bomb.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
        let images: Vec<(&'static str, Vec<u8>)> = vec![
            ("tiny.jpg", jpeg),
            ("exif-orientation-6.jpg", exif_jpeg),
            ("tiny.png", png),
            ("tiny.gif", gif),
            ("tiny.webp", webp),
            ("bomb-header.png", bomb),
        ];
        let mut out = Vec::new();
        for (name, data) in &images {
            for target in ["image_header", "thumbnail", "sniff"] {
                out.push((target, *name, data.clone()));
            }
        }
        for (name, data) in [
            (
                "mp4-ftyp",
                &b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"[..],
            ),
            (
                "webm",
                b"\x1A\x45\xDF\xA3\x9f\x42\x86\x81\x01\x42\x82\x84webm",
            ),
            ("html", b"  <!DOCTYPE html><script>alert(1)</script>"),
            ("text", "plain text caf\u{e9}\n".as_bytes()),
            ("ogg", b"OggS\x00\x02\x00\x00"),
        ] {
            out.push(("sniff", name, data.to_vec()));
        }
        for (name, text) in [
            (
                "metadata",
                "filename Y2F0LmpwZw==,opaque,sha256 YmE3ODE2YmY4ZjAxY2ZlYTQxNDE0MGRlNWRhZTIyMjNiMDAzNjFhMzk2MTc3YTljYjQxMGZmNjFmMjAwMTVhZA==",
            ),
            ("checksum", "sha1 qvTGHdzF6KLavt4PO0gs2a6pQ00="),
            ("range", "bytes=100-199"),
            ("suffix-range", "bytes=-10"),
            ("offset", "1048576"),
        ] {
            out.push(("upload_headers", name, text.as_bytes().to_vec()));
        }
        for (name, script) in crate::fuzz_upload::seed_scripts() {
            out.push(("upload_session", name, script));
        }
        out
    }

    /// The committed corpora hold every generated seed, byte for byte (files
    /// added by hand, such as crash reproducers, may sit beside them).
    ///
    /// Regenerating is explicit: with `NATTER_WRITE_SEEDS=1` (exactly `1`) the
    /// generated seeds are written first, then checked like any other run:
    /// `NATTER_WRITE_SEEDS=1 cargo test -p natter-media --lib write_seeds`.
    #[test]
    fn committed_seeds_match_write_seeds() {
        let corpus = seed_corpus();
        for target in TARGETS {
            let n = corpus.iter().filter(|(t, _, _)| *t == target).count();
            assert!(n >= 3, "the generator makes only {n} seeds for {target}");
        }
        if std::env::var("NATTER_WRITE_SEEDS").as_deref() == Ok("1") {
            for (target, name, data) in &corpus {
                let dir = seeds_dir().join(target);
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join(name), data).unwrap();
            }
        }
        let mut stale = Vec::new();
        for (target, name, data) in &corpus {
            let path = seeds_dir().join(target).join(name);
            match std::fs::read(&path) {
                Ok(committed) if committed == *data => {}
                Ok(committed) => stale.push(format!(
                    "  {}: {} bytes committed, {} generated (first difference at byte {})",
                    path.display(),
                    committed.len(),
                    data.len(),
                    committed
                        .iter()
                        .zip(data)
                        .position(|(a, b)| a != b)
                        .unwrap_or(committed.len().min(data.len()))
                )),
                Err(e) => stale.push(format!("  {}: {e}", path.display())),
            }
        }
        assert!(
            stale.is_empty(),
            "the committed fuzz seeds differ from the generated ones:\n{}\n\
             if the generator changed on purpose, regenerate them with \
             `NATTER_WRITE_SEEDS=1 cargo test -p natter-media --lib write_seeds` and commit the result",
            stale.join("\n")
        );
    }
}
