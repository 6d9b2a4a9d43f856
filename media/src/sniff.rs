//! Content-type sniffing from the first bytes of an upload. The type a client
//! declares is never trusted: what is stored, checked against the allow-list and
//! served back is what the bytes say.
//!
//! Only signatures at fixed offsets are used (no heuristics that scan the whole
//! file), so the result depends on the first [`SNIFF_LEN`] bytes alone and is the
//! same whether those bytes came in one request or over several resumed ones.

/// Bytes looked at. Enough for every signature below and a text check.
pub const SNIFF_LEN: usize = 512;

/// What the bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sniffed {
    /// MIME type stored and served.
    pub mime: &'static str,
    /// Broad class, which decides thumbnailing.
    pub kind: Kind,
}

/// Broad class of content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An image we can decode and thumbnail.
    Image(ImageFormat),
    /// An image we cannot decode (HEIC, AVIF, SVG…): stored, not thumbnailed.
    OtherImage,
    /// Video: first-frame thumbnail through ffmpeg when available.
    Video(VideoContainer),
    /// Audio.
    Audio,
    /// Documents, archives, text and anything unrecognised.
    Other,
}

/// Image formats we decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// JPEG/JFIF/EXIF.
    Jpeg,
    /// PNG.
    Png,
    /// GIF (first frame).
    Gif,
    /// WebP (lossy, lossless, extended).
    WebP,
}

/// Video containers, which tell ffmpeg which demuxer to use (it is never left to
/// guess from untrusted bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoContainer {
    /// ISO base media (MP4, MOV, 3GP).
    Mp4,
    /// Matroska / WebM.
    Matroska,
}

const fn s(mime: &'static str, kind: Kind) -> Sniffed {
    Sniffed { mime, kind }
}

/// The type for opaque (end-to-end-encrypted) uploads and anything unrecognised.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// Sniffs `head`, the first bytes of the content (all of it when shorter than
/// [`SNIFF_LEN`]).
pub fn sniff(head: &[u8]) -> Sniffed {
    let h = &head[..head.len().min(SNIFF_LEN)];
    let starts = |sig: &[u8]| h.starts_with(sig);
    let at = |off: usize, sig: &[u8]| h.len() >= off + sig.len() && &h[off..off + sig.len()] == sig;

    if starts(&[0xFF, 0xD8, 0xFF]) {
        return s("image/jpeg", Kind::Image(ImageFormat::Jpeg));
    }
    if starts(b"\x89PNG\r\n\x1a\n") {
        return s("image/png", Kind::Image(ImageFormat::Png));
    }
    if starts(b"GIF87a") || starts(b"GIF89a") {
        return s("image/gif", Kind::Image(ImageFormat::Gif));
    }
    if starts(b"RIFF") && at(8, b"WEBP") {
        return s("image/webp", Kind::Image(ImageFormat::WebP));
    }
    if starts(b"RIFF") && at(8, b"WAVE") {
        return s("audio/wav", Kind::Audio);
    }
    if at(4, b"ftyp") {
        return iso_bmff(h);
    }
    if starts(&[0x1A, 0x45, 0xDF, 0xA3]) {
        // The EBML header names the doctype within its first few dozen bytes.
        let window = &h[..h.len().min(64)];
        if window.windows(4).any(|w| w == b"webm") {
            return s("video/webm", Kind::Video(VideoContainer::Matroska));
        }
        return s("video/x-matroska", Kind::Video(VideoContainer::Matroska));
    }
    if starts(b"OggS") {
        return s("audio/ogg", Kind::Audio);
    }
    if starts(b"fLaC") {
        return s("audio/flac", Kind::Audio);
    }
    if starts(b"#!AMR") {
        return s("audio/amr", Kind::Audio);
    }
    if starts(b"ID3") {
        return s("audio/mpeg", Kind::Audio);
    }
    if h.len() >= 2 && h[0] == 0xFF && (h[1] & 0xF6) == 0xF0 {
        // ADTS sync word with layer 00: AAC.
        return s("audio/aac", Kind::Audio);
    }
    if h.len() >= 2 && h[0] == 0xFF && (h[1] & 0xE0) == 0xE0 && (h[1] & 0x06) != 0 {
        // MPEG audio frame sync with a layer set: MP3 without ID3 tag.
        return s("audio/mpeg", Kind::Audio);
    }
    if starts(b"%PDF-") {
        return s("application/pdf", Kind::Other);
    }
    if starts(b"PK\x03\x04") || starts(b"PK\x05\x06") {
        return s("application/zip", Kind::Other);
    }
    if starts(&[0x1F, 0x8B]) {
        return s("application/gzip", Kind::Other);
    }
    if starts(b"7z\xBC\xAF\x27\x1C") {
        return s("application/x-7z-compressed", Kind::Other);
    }
    if starts(b"\x7FELF") {
        return s("application/x-executable", Kind::Other);
    }
    if starts(b"MZ") {
        return s("application/vnd.microsoft.portable-executable", Kind::Other);
    }
    if let Some(markup) = markup(h) {
        return markup;
    }
    if looks_like_text(h) {
        return s("text/plain", Kind::Other);
    }
    s(OCTET_STREAM, Kind::Other)
}

/// ISO base media file: the major brand (bytes 8..12) and compatible brands.
fn iso_bmff(h: &[u8]) -> Sniffed {
    let brand = h.get(8..12).unwrap_or_default();
    let box_len = h
        .get(0..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .unwrap_or(0)
        .clamp(16, h.len().max(16));
    let compat = h.get(16..box_len.min(h.len())).unwrap_or_default();
    let has = |b: &[u8]| brand == b || compat.chunks_exact(4).any(|c| c == b);
    if has(b"avif") || has(b"avis") {
        return s("image/avif", Kind::OtherImage);
    }
    if ["heic", "heix", "heim", "heis", "hevc", "mif1", "msf1"]
        .iter()
        .any(|b| brand == b.as_bytes())
    {
        return s("image/heic", Kind::OtherImage);
    }
    if brand == b"qt  " {
        return s("video/quicktime", Kind::Video(VideoContainer::Mp4));
    }
    if brand == b"M4A " || brand == b"M4B " {
        return s("audio/mp4", Kind::Audio);
    }
    if brand.starts_with(b"3g") {
        return s("video/3gpp", Kind::Video(VideoContainer::Mp4));
    }
    s("video/mp4", Kind::Video(VideoContainer::Mp4))
}

/// HTML, SVG and XML: dangerous to serve inline, so named exactly (and not on the
/// default allow-list).
fn markup(h: &[u8]) -> Option<Sniffed> {
    let h = h.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(h);
    let start = h.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = &h[start..];
    let lower: Vec<u8> = rest
        .iter()
        .take(64)
        .map(|b| b.to_ascii_lowercase())
        .collect();
    let begins = |p: &[u8]| lower.starts_with(p);
    if begins(b"<svg") || (begins(b"<?xml") && contains(&h.to_ascii_lowercase(), b"<svg")) {
        return Some(s("image/svg+xml", Kind::OtherImage));
    }
    for tag in [
        &b"<!doctype html"[..],
        b"<html",
        b"<head",
        b"<body",
        b"<script",
        b"<iframe",
        b"<title",
        b"<style",
        b"<table",
        b"<div",
        b"<a ",
        b"<img",
        b"<!--",
    ] {
        if begins(tag) {
            return Some(s("text/html", Kind::Other));
        }
    }
    if begins(b"<?xml") {
        return Some(s("application/xml", Kind::Other));
    }
    None
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// UTF-8 without control characters other than tab, newline, carriage return and
/// form feed; a multi-byte character cut off at the end of the window is fine.
fn looks_like_text(h: &[u8]) -> bool {
    if h.is_empty() {
        return false;
    }
    let valid = match std::str::from_utf8(h) {
        Ok(s) => s,
        Err(e) if e.error_len().is_none() && h.len() - e.valid_up_to() < 4 => {
            // Only an incomplete character at the very end.
            std::str::from_utf8(&h[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    !valid.is_empty()
        && valid
            .chars()
            .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r' | '\x0C'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_signatures() {
        let cases: &[(&[u8], &str)] = &[
            (b"\xFF\xD8\xFF\xE0\x00\x10JFIF", "image/jpeg"),
            (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png"),
            (b"GIF89a\x01\x00\x01\x00", "image/gif"),
            (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
            (b"RIFF\x24\x00\x00\x00WAVEfmt ", "audio/wav"),
            (
                b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom",
                "video/mp4",
            ),
            (
                b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00qt  ",
                "video/quicktime",
            ),
            (
                b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",
                "image/heic",
            ),
            (
                b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf",
                "image/avif",
            ),
            (
                b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00M4A mp42isom",
                "audio/mp4",
            ),
            (
                b"\x1A\x45\xDF\xA3\x9f\x42\x86\x81\x01\x42\x82\x84webm",
                "video/webm",
            ),
            (b"OggS\x00\x02", "audio/ogg"),
            (b"ID3\x04\x00", "audio/mpeg"),
            (b"\xFF\xFB\x90\x64", "audio/mpeg"),
            (b"\xFF\xF1\x50\x80", "audio/aac"),
            (b"%PDF-1.7\n", "application/pdf"),
            (b"PK\x03\x04\x14\x00", "application/zip"),
            (b"  <!DOCTYPE html><html>", "text/html"),
            (b"\xEF\xBB\xBF<script>alert(1)</script>", "text/html"),
            (
                b"<svg xmlns=\"http://www.w3.org/2000/svg\">",
                "image/svg+xml",
            ),
            (b"<?xml version=\"1.0\"?><svg>", "image/svg+xml"),
            (b"hello, world\nsecond line\n", "text/plain"),
            ("caf\u{e9} \u{1F600}".as_bytes(), "text/plain"),
            (b"\x7FELF\x02\x01", "application/x-executable"),
            (b"\x00\x01\x02\x03binary", OCTET_STREAM),
            (b"", OCTET_STREAM),
        ];
        for (bytes, mime) in cases {
            assert_eq!(sniff(bytes).mime, *mime, "{bytes:?}");
        }
    }

    #[test]
    fn text_cut_inside_a_character_is_still_text() {
        let mut t = "a".repeat(SNIFF_LEN - 1).into_bytes();
        t.extend_from_slice("\u{e9}".as_bytes()); // 2 bytes: the second falls outside the window
        assert_eq!(sniff(&t).mime, "text/plain");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..700)) {
            let a = sniff(&data);
            // Only the window counts.
            let b = sniff(&data[..data.len().min(SNIFF_LEN)]);
            prop_assert_eq!(a, b);
        }
    }
}
