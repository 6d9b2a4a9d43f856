//! Image dimensions (and JPEG EXIF orientation) read from the file header alone,
//! without decoding a pixel, so decompression bombs — a few kilobytes that
//! declare a 100 000 × 100 000 canvas — are refused before any allocation.
//!
//! Every read is bounds-checked: arbitrary input returns an error, never panics
//! (fuzzed by `natter_media::fuzz::image_header`).
//!
//! A file can declare its size more than once: JPEG frame headers (SOF) can be
//! repeated after a scan, and every GIF image descriptor declares a frame of its
//! own, which may be larger than the logical screen. Decoders allocate for
//! those, so every one of them within the bytes given is checked, not just the
//! first. The engine parses a prefix of the upload before reading it whole;
//! `thumb::thumbnails` parses the whole file again before decoding.

use crate::sniff::ImageFormat;

/// What the header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    /// Format the header was parsed as.
    pub format: ImageFormat,
    /// Width in pixels (as stored, before orientation).
    pub width: u32,
    /// Height in pixels (as stored, before orientation).
    pub height: u32,
    /// EXIF orientation 1..=8 (1 = as stored). JPEG only; 1 elsewhere.
    pub orientation: u8,
    /// Width of the largest frame declared (by pixel count), or of the canvas
    /// when no frame is larger: a GIF image descriptor may declare more than its
    /// logical screen. JPEG frame headers that disagree are refused, so for the
    /// other formats this is `width`.
    pub frame_width: u32,
    /// Height of that frame.
    pub frame_height: u32,
}

impl ImageHeader {
    /// The most pixels a decoder may allocate for: width × height of the
    /// canvas or of the largest frame, whichever is more. The pixel limit and
    /// the decode memory budget are checked against this.
    pub fn pixels(&self) -> u64 {
        let canvas = u64::from(self.width) * u64::from(self.height);
        canvas.max(u64::from(self.frame_width) * u64::from(self.frame_height))
    }

    /// The dimensions that give [`ImageHeader::pixels`] (for error messages).
    pub fn largest_size(&self) -> (u32, u32) {
        let canvas = u64::from(self.width) * u64::from(self.height);
        if u64::from(self.frame_width) * u64::from(self.frame_height) > canvas {
            (self.frame_width, self.frame_height)
        } else {
            (self.width, self.height)
        }
    }

    /// Dimensions as displayed (orientations 5–8 swap width and height).
    pub fn display_size(&self) -> (u32, u32) {
        if self.orientation >= 5 {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }
}

/// Why a header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// More bytes are needed (the header continues past what was given).
    #[error("the image header continues past the first {0} bytes")]
    Incomplete(usize),
    /// Not a valid header of the format.
    #[error("corrupt {format} header: {reason}")]
    Corrupt {
        /// Format name.
        format: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

fn corrupt(format: &'static str, reason: &'static str) -> HeaderError {
    HeaderError::Corrupt { format, reason }
}

/// Reads the header of `data` (a prefix of the file) as `format`.
pub fn parse(format: ImageFormat, data: &[u8]) -> Result<ImageHeader, HeaderError> {
    let canvas_only = |(w, h, o): (u32, u32, u8)| (w, h, o, (w, h));
    let (width, height, orientation, (frame_width, frame_height)) = match format {
        ImageFormat::Png => canvas_only(png(data)?),
        ImageFormat::Gif => gif(data)?,
        ImageFormat::WebP => canvas_only(webp(data)?),
        ImageFormat::Jpeg => canvas_only(jpeg(data)?),
    };
    Ok(ImageHeader {
        format,
        width,
        height,
        orientation,
        frame_width,
        frame_height,
    })
}

/// A cursor over a byte slice whose reads fail with `Incomplete` at the end.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8], pos: usize) -> Self {
        Self { data, pos }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], HeaderError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(HeaderError::Incomplete(self.data.len()))?;
        let out = self
            .data
            .get(self.pos..end)
            .ok_or(HeaderError::Incomplete(self.data.len()))?;
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, HeaderError> {
        Ok(self.bytes(1)?[0])
    }

    fn be16(&mut self) -> Result<u16, HeaderError> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn skip(&mut self, n: usize) -> Result<(), HeaderError> {
        self.bytes(n).map(|_| ())
    }
}

fn nonzero(format: &'static str, w: u32, h: u32) -> Result<(u32, u32, u8), HeaderError> {
    if w == 0 || h == 0 {
        return Err(corrupt(format, "zero width or height"));
    }
    Ok((w, h, 1))
}

/// PNG: the signature, then the IHDR chunk, which must come first (RFC 2083 §4.1.1).
fn png(data: &[u8]) -> Result<(u32, u32, u8), HeaderError> {
    let mut r = Reader::new(data, 0);
    if r.bytes(8)? != b"\x89PNG\r\n\x1a\n" {
        return Err(corrupt("PNG", "bad signature"));
    }
    let len = r.bytes(4)?;
    if r.bytes(4)? != b"IHDR" || len != [0, 0, 0, 13] {
        return Err(corrupt("PNG", "first chunk is not a 13-byte IHDR"));
    }
    let w = u32::from_be_bytes(r.bytes(4)?.try_into().unwrap_or_default());
    let h = u32::from_be_bytes(r.bytes(4)?.try_into().unwrap_or_default());
    // The spec caps dimensions at 2^31 - 1.
    if w > i32::MAX as u32 || h > i32::MAX as u32 {
        return Err(corrupt("PNG", "dimension above 2^31-1"));
    }
    nonzero("PNG", w, h)
}

/// Blocks (extensions and images) a GIF may have before the trailer. The walk
/// is linear in the file anyway; this bounds it in blocks too. An animation
/// frame is two blocks (graphic control extension and image), so this allows
/// about 8000 frames; a GIF with more is refused rather than half-checked.
pub const MAX_GIF_BLOCKS: usize = 16_384;

/// GIF: the logical screen descriptor, then every image descriptor in the
/// bytes given (GIF89a §18–§24). Decoders allocate a frame's own width ×
/// height when it does not fit the screen, so a small screen with a huge frame
/// is checked by its frame (`frame_width`/`frame_height`).
fn gif(data: &[u8]) -> Result<(u32, u32, u8, (u32, u32)), HeaderError> {
    let mut r = Reader::new(data, 0);
    let sig = r.bytes(6)?;
    if sig != b"GIF87a" && sig != b"GIF89a" {
        return Err(corrupt("GIF", "bad signature"));
    }
    let d = r.bytes(7)?;
    let w = u32::from(u16::from_le_bytes([d[0], d[1]]));
    let h = u32::from(u16::from_le_bytes([d[2], d[3]]));
    let (w, h, orientation) = nonzero("GIF", w, h)?;
    let mut largest = (w, h);
    match gif_frames(&mut r, d[4], &mut largest) {
        // The bytes given end before the trailer: every descriptor in them was
        // checked (the whole file is parsed again before decoding).
        Ok(()) | Err(HeaderError::Incomplete(_)) => Ok((w, h, orientation, largest)),
        Err(e) => Err(e),
    }
}

/// Walks the blocks after the logical screen descriptor, keeping the largest
/// image descriptor (by pixel count) in `largest`.
fn gif_frames(
    r: &mut Reader<'_>,
    screen_flags: u8,
    largest: &mut (u32, u32),
) -> Result<(), HeaderError> {
    let pixels = |(w, h): (u32, u32)| u64::from(w) * u64::from(h);
    skip_color_table(r, screen_flags)?;
    for _ in 0..MAX_GIF_BLOCKS {
        match r.u8()? {
            // Trailer.
            0x3B => return Ok(()),
            // Extension: label, then data sub-blocks.
            0x21 => {
                r.skip(1)?;
                skip_sub_blocks(r)?;
            }
            // Image descriptor: left, top, width, height, flags; then an
            // optional local colour table, the LZW code size and data sub-blocks.
            0x2C => {
                let d = r.bytes(9)?;
                let frame = (
                    u32::from(u16::from_le_bytes([d[4], d[5]])),
                    u32::from(u16::from_le_bytes([d[6], d[7]])),
                );
                if pixels(frame) > pixels(*largest) {
                    *largest = frame;
                }
                skip_color_table(r, d[8])?;
                r.skip(1)?;
                skip_sub_blocks(r)?;
            }
            // Anything else ends the stream for decoders (they stop or fail
            // there), so no frame after it is ever decoded.
            _ => return Ok(()),
        }
    }
    Err(corrupt("GIF", "more than 16384 blocks (MAX_GIF_BLOCKS)"))
}

/// Skips a global or local colour table when `flags` (bit 7) says there is one.
fn skip_color_table(r: &mut Reader<'_>, flags: u8) -> Result<(), HeaderError> {
    if flags & 0x80 != 0 {
        r.skip(3 << ((flags & 7) + 1))?;
    }
    Ok(())
}

/// Skips data sub-blocks (a length byte, that many bytes) up to the empty one.
fn skip_sub_blocks(r: &mut Reader<'_>) -> Result<(), HeaderError> {
    loop {
        let n = r.u8()?;
        if n == 0 {
            return Ok(());
        }
        r.skip(usize::from(n))?;
    }
}

/// WebP: RIFF container, then a VP8 (lossy), VP8L (lossless) or VP8X (extended)
/// chunk (RFC 9649).
fn webp(data: &[u8]) -> Result<(u32, u32, u8), HeaderError> {
    let mut r = Reader::new(data, 0);
    if r.bytes(4)? != b"RIFF" {
        return Err(corrupt("WebP", "missing RIFF"));
    }
    r.skip(4)?;
    if r.bytes(4)? != b"WEBP" {
        return Err(corrupt("WebP", "missing WEBP"));
    }
    let fourcc = r.bytes(4)?;
    let _chunk_len = r.bytes(4)?;
    match fourcc {
        b"VP8 " => {
            // Frame tag (3 bytes), start code, then 14-bit dimensions and 2-bit scales.
            r.skip(3)?;
            if r.bytes(3)? != [0x9D, 0x01, 0x2A] {
                return Err(corrupt("WebP", "bad VP8 start code"));
            }
            let w =
                u32::from(u16::from_le_bytes(r.bytes(2)?.try_into().unwrap_or_default()) & 0x3FFF);
            let h =
                u32::from(u16::from_le_bytes(r.bytes(2)?.try_into().unwrap_or_default()) & 0x3FFF);
            nonzero("WebP", w, h)
        }
        b"VP8L" => {
            if r.u8()? != 0x2F {
                return Err(corrupt("WebP", "bad VP8L signature"));
            }
            let b = r.bytes(4)?;
            let bits = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            let w = (bits & 0x3FFF) + 1;
            let h = ((bits >> 14) & 0x3FFF) + 1;
            nonzero("WebP", w, h)
        }
        b"VP8X" => {
            r.skip(4)?; // flags + reserved
            let b = r.bytes(6)?;
            let w = u32::from_le_bytes([b[0], b[1], b[2], 0]) + 1;
            let h = u32::from_le_bytes([b[3], b[4], b[5], 0]) + 1;
            nonzero("WebP", w, h)
        }
        _ => Err(corrupt("WebP", "unknown first chunk")),
    }
}

/// JPEG: walks every marker segment (ITU T.81 §B.1.1), through the
/// entropy-coded data after each scan, to the end of image or of the bytes
/// given, noting the EXIF orientation before the frame header (EXIF 2.3
/// §4.5.4). A second frame header (or DHP) with other dimensions is refused:
/// the first one alone would let a later, larger frame past the pixel limit.
fn jpeg(data: &[u8]) -> Result<(u32, u32, u8), HeaderError> {
    let mut orientation = 1;
    let mut frame = None;
    match jpeg_walk(data, &mut orientation, &mut frame) {
        Ok(()) => {}
        // The bytes given end after a frame header: every frame header in them
        // was checked (the whole file is parsed again before decoding).
        Err(HeaderError::Incomplete(_)) if frame.is_some() => {}
        Err(e) => return Err(e),
    }
    let (w, h) = frame.ok_or(HeaderError::Incomplete(data.len()))?;
    Ok((w, h, orientation))
}

fn jpeg_walk(
    data: &[u8],
    orientation: &mut u8,
    frame: &mut Option<(u32, u32)>,
) -> Result<(), HeaderError> {
    let mut r = Reader::new(data, 0);
    if r.bytes(2)? != [0xFF, 0xD8] {
        return Err(corrupt("JPEG", "missing start-of-image"));
    }
    // After the first scan header, markers are found by skipping entropy-coded
    // data, where 0xFF is followed by 0x00 (stuffing) or a restart marker.
    let mut scanned = false;
    loop {
        let marker = if scanned {
            next_marker_after_scan(&mut r)?
        } else {
            if r.u8()? != 0xFF {
                return Err(corrupt("JPEG", "expected a marker"));
            }
            // Any number of 0xFF fill bytes may precede the marker code (§B.1.1.2).
            let mut marker = r.u8()?;
            while marker == 0xFF {
                marker = r.u8()?;
            }
            marker
        };
        match marker {
            // Standalone markers without a length.
            0x01 | 0xD0..=0xD7 => continue,
            0xD8 => return Err(corrupt("JPEG", "second start-of-image")),
            0xD9 if frame.is_some() => return Ok(()),
            0xD9 => return Err(corrupt("JPEG", "end of image before a frame header")),
            0xDA if frame.is_none() => return Err(corrupt("JPEG", "scan before a frame header")),
            0x00 => return Err(corrupt("JPEG", "invalid marker 0x00")),
            _ => {}
        }
        let len = usize::from(r.be16()?);
        if len < 2 {
            return Err(corrupt("JPEG", "segment length below 2"));
        }
        let body = r.bytes(len - 2)?;
        // SOF0–15 except DHT (C4), JPG (C8) and DAC (CC); DHP (DE) declares
        // the size of a hierarchical image the same way.
        let declares_size = matches!(
            marker,
            0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF | 0xDE
        );
        if declares_size {
            if body.len() < 6 {
                return Err(corrupt("JPEG", "frame header too short"));
            }
            let h = u32::from(u16::from_be_bytes([body[1], body[2]]));
            let w = u32::from(u16::from_be_bytes([body[3], body[4]]));
            if h == 0 {
                // Height given later by a DNL marker: legal but never produced by
                // cameras; we would have to decode to learn the size.
                return Err(corrupt("JPEG", "height defined by DNL is not supported"));
            }
            if w == 0 {
                return Err(corrupt("JPEG", "zero width"));
            }
            match *frame {
                None => *frame = Some((w, h)),
                Some(first) if first != (w, h) => {
                    return Err(corrupt(
                        "JPEG",
                        "frame headers declare different dimensions",
                    ));
                }
                Some(_) => {}
            }
        } else if marker == 0xDA {
            scanned = true;
        } else if marker == 0xE1 && frame.is_none() && body.starts_with(b"Exif\0\0") {
            // A broken EXIF block only loses the orientation, not the image.
            if let Some(o) = exif_orientation(&body[6..]) {
                *orientation = o;
            }
        }
    }
}

/// Skips entropy-coded data up to the next marker and returns its code.
fn next_marker_after_scan(r: &mut Reader<'_>) -> Result<u8, HeaderError> {
    loop {
        let rest = r.data.get(r.pos..).unwrap_or_default();
        let Some(at) = rest.iter().position(|&b| b == 0xFF) else {
            r.pos = r.data.len();
            return Err(HeaderError::Incomplete(r.data.len()));
        };
        r.pos += at + 1;
        let mut code = r.u8()?;
        while code == 0xFF {
            code = r.u8()?;
        }
        // 0xFF00 is a stuffed data byte; RSTn sit inside the scan.
        if code != 0x00 && !(0xD0..=0xD7).contains(&code) {
            return Ok(code);
        }
    }
}

/// Orientation tag (0x0112) of IFD0 in a TIFF structure, if valid (1..=8).
pub(crate) fn exif_orientation(tiff: &[u8]) -> Option<u8> {
    let le = match tiff.get(0..4)? {
        b"II*\0" => true,
        b"MM\0*" => false,
        _ => return None,
    };
    let u16_at = |off: usize| -> Option<u16> {
        let b = tiff.get(off..off.checked_add(2)?)?;
        Some(if le {
            u16::from_le_bytes([b[0], b[1]])
        } else {
            u16::from_be_bytes([b[0], b[1]])
        })
    };
    let u32_at = |off: usize| -> Option<u32> {
        let b = tiff.get(off..off.checked_add(4)?)?;
        let a = [b[0], b[1], b[2], b[3]];
        Some(if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        })
    };
    let ifd = usize::try_from(u32_at(4)?).ok()?;
    let count = usize::from(u16_at(ifd)?);
    for i in 0..count.min(512) {
        let entry = ifd.checked_add(2)?.checked_add(i.checked_mul(12)?)?;
        if u16_at(entry)? == 0x0112 {
            // Type SHORT (3), count 1: the value sits in the first two bytes of the field.
            if u16_at(entry + 2)? != 3 {
                return None;
            }
            let v = u16_at(entry + 8)?;
            return (1..=8).contains(&v).then_some(v as u8);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut v = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
        v.extend_from_slice(&w.to_be_bytes());
        v.extend_from_slice(&h.to_be_bytes());
        v.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
        v
    }

    fn jpeg_with_exif(orientation: u16, big_endian: bool) -> Vec<u8> {
        let mut tiff = Vec::new();
        if big_endian {
            tiff.extend_from_slice(b"MM\0*");
            tiff.extend_from_slice(&8u32.to_be_bytes());
            tiff.extend_from_slice(&1u16.to_be_bytes());
            tiff.extend_from_slice(&0x0112u16.to_be_bytes());
            tiff.extend_from_slice(&3u16.to_be_bytes());
            tiff.extend_from_slice(&1u32.to_be_bytes());
            tiff.extend_from_slice(&orientation.to_be_bytes());
            tiff.extend_from_slice(&[0, 0]);
        } else {
            tiff.extend_from_slice(b"II*\0");
            tiff.extend_from_slice(&8u32.to_le_bytes());
            tiff.extend_from_slice(&1u16.to_le_bytes());
            tiff.extend_from_slice(&0x0112u16.to_le_bytes());
            tiff.extend_from_slice(&3u16.to_le_bytes());
            tiff.extend_from_slice(&1u32.to_le_bytes());
            tiff.extend_from_slice(&orientation.to_le_bytes());
            tiff.extend_from_slice(&[0, 0]);
        }
        tiff.extend_from_slice(&0u32.to_le_bytes());
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut v = vec![0xFF, 0xD8, 0xFF, 0xE1];
        v.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        v.extend_from_slice(&app1);
        // Fill bytes before the next marker are legal.
        v.extend_from_slice(&[0xFF, 0xFF, 0xC0, 0x00, 0x11, 0x08]);
        v.extend_from_slice(&3000u16.to_be_bytes());
        v.extend_from_slice(&4000u16.to_be_bytes());
        v.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
        v
    }

    #[test]
    fn png_dimensions_and_bomb_sized_headers() {
        let h = parse(ImageFormat::Png, &png_header(100_000, 100_000)).unwrap();
        assert_eq!(
            (h.width, h.height, h.pixels()),
            (100_000, 100_000, 10_000_000_000)
        );
        assert!(matches!(
            parse(ImageFormat::Png, &png_header(0, 5)),
            Err(HeaderError::Corrupt { .. })
        ));
        assert!(matches!(
            parse(ImageFormat::Png, &png_header(1, 1)[..20]),
            Err(HeaderError::Incomplete(20))
        ));
    }

    #[test]
    fn jpeg_dimensions_and_orientation() {
        for be in [false, true] {
            let h = parse(ImageFormat::Jpeg, &jpeg_with_exif(6, be)).unwrap();
            assert_eq!((h.width, h.height, h.orientation), (4000, 3000, 6));
            assert_eq!(h.display_size(), (3000, 4000));
        }
        // An out-of-range orientation is ignored, not an error.
        assert_eq!(
            parse(ImageFormat::Jpeg, &jpeg_with_exif(9, false))
                .unwrap()
                .orientation,
            1
        );
        let full = jpeg_with_exif(1, false);
        for cut in 0..full.len() - 10 {
            assert!(matches!(
                parse(ImageFormat::Jpeg, &full[..cut]),
                Err(HeaderError::Incomplete(_)) | Err(HeaderError::Corrupt { .. })
            ));
        }
        assert!(matches!(
            parse(ImageFormat::Jpeg, &[0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02]),
            Err(HeaderError::Corrupt {
                reason: "scan before a frame header",
                ..
            })
        ));
    }

    #[test]
    fn gif_and_webp_dimensions() {
        let gif = b"GIF89a\x40\x01\xf0\x00\x00\x00\x00";
        assert_eq!(
            parse(ImageFormat::Gif, gif).unwrap().display_size(),
            (320, 240)
        );
        // VP8X canvas 65536 x 2 (24-bit minus one fields).
        let mut vp8x = b"RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0".to_vec();
        vp8x.extend_from_slice(&[0xFF, 0xFF, 0x00, 0x01, 0x00, 0x00]);
        assert_eq!(
            parse(ImageFormat::WebP, &vp8x).unwrap().display_size(),
            (65536, 2)
        );
        let mut vp8l = b"RIFF\0\0\0\0WEBPVP8L\0\0\0\0\x2f".to_vec();
        let bits: u32 = 99 | (49 << 14);
        vp8l.extend_from_slice(&bits.to_le_bytes());
        assert_eq!(
            parse(ImageFormat::WebP, &vp8l).unwrap().display_size(),
            (100, 50)
        );
        let mut vp8 = b"RIFF\0\0\0\0WEBPVP8 \0\0\0\0\0\0\0\x9d\x01\x2a".to_vec();
        vp8.extend_from_slice(&640u16.to_le_bytes());
        vp8.extend_from_slice(&480u16.to_le_bytes());
        assert_eq!(
            parse(ImageFormat::WebP, &vp8).unwrap().display_size(),
            (640, 480)
        );
    }

    /// A small but complete baseline JPEG (SOI, APP0, DQT, SOF0, DHT, SOS, data, EOI).
    fn small_jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 99]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
            .encode(img.as_raw(), w, h, image::ExtendedColorType::Rgb8)
            .unwrap();
        out
    }

    /// A frame header segment (`marker` C0..=CF) declaring `w` × `h`.
    fn sof(marker: u8, w: u16, h: u16) -> Vec<u8> {
        let mut v = vec![0xFF, marker, 0x00, 0x11, 0x08];
        v.extend_from_slice(&h.to_be_bytes());
        v.extend_from_slice(&w.to_be_bytes());
        v.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
        v
    }

    const DIFFERENT_FRAMES: HeaderError = HeaderError::Corrupt {
        format: "JPEG",
        reason: "frame headers declare different dimensions",
    };

    #[test]
    fn a_second_jpeg_frame_header_with_other_dimensions_is_refused() {
        let good = small_jpeg(16, 16);
        assert_eq!(parse(ImageFormat::Jpeg, &good).unwrap().pixels(), 256);
        let eoi = good.len() - 2;
        assert_eq!(good[eoi..], [0xFF, 0xD9]);
        // After the scan: a progressive frame header of 60000 × 60000, then the
        // end of image, or nothing more.
        let mut after_scan = good[..eoi].to_vec();
        after_scan.extend(sof(0xC2, 60000, 60000));
        assert_eq!(parse(ImageFormat::Jpeg, &after_scan), Err(DIFFERENT_FRAMES));
        after_scan.extend([0xFF, 0xD9]);
        assert_eq!(parse(ImageFormat::Jpeg, &after_scan), Err(DIFFERENT_FRAMES));
        // Before the scan, right after the first frame header.
        let first = good.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        let end_of_first =
            first + 2 + usize::from(u16::from_be_bytes([good[first + 2], good[first + 3]]));
        let mut before_scan = good.clone();
        before_scan.splice(end_of_first..end_of_first, sof(0xC0, 60000, 60000));
        assert_eq!(
            parse(ImageFormat::Jpeg, &before_scan),
            Err(DIFFERENT_FRAMES)
        );
        // One frame header of the other size alone is what the pixel limit sees.
        let mut alone = good.clone();
        alone.splice(first..end_of_first, sof(0xC0, 60000, 60000));
        assert_eq!(
            parse(ImageFormat::Jpeg, &alone).unwrap().pixels(),
            3_600_000_000
        );
        // The same size again is no size trick (decoders refuse a second frame).
        let mut repeated = good[..eoi].to_vec();
        repeated.extend(sof(0xC0, 16, 16));
        repeated.extend([0xFF, 0xD9]);
        assert_eq!(parse(ImageFormat::Jpeg, &repeated).unwrap().pixels(), 256);
        // Bytes after the end of image are not part of the image.
        let mut trailing = good.clone();
        trailing.extend(sof(0xC0, 60000, 60000));
        assert_eq!(parse(ImageFormat::Jpeg, &trailing).unwrap().pixels(), 256);
        // A prefix that ends after the frame header (the engine reads one) gives
        // the size from the frame headers it holds.
        for cut in end_of_first..good.len() {
            let h = parse(ImageFormat::Jpeg, &good[..cut]).unwrap();
            assert_eq!(
                (h.width, h.height, h.largest_size()),
                (16, 16, (16, 16)),
                "cut {cut}"
            );
        }
    }

    /// A GIF with a `screen` logical screen and a 2-entry global colour table,
    /// then per frame a graphic control extension and an image descriptor
    /// (with a 4-entry local colour table) of the given size, then the trailer.
    fn gif_with_frames(screen: (u16, u16), frames: &[(u16, u16)]) -> Vec<u8> {
        let mut v = b"GIF89a".to_vec();
        v.extend(screen.0.to_le_bytes());
        v.extend(screen.1.to_le_bytes());
        v.extend([0x80, 0, 0]);
        v.extend([0; 6]);
        // An application extension of two sub-blocks (NETSCAPE loop).
        v.extend([0x21, 0xFF, 11]);
        v.extend(b"NETSCAPE2.0");
        v.extend([3, 1, 0, 0, 0]);
        for &(w, h) in frames {
            v.extend([0x21, 0xF9, 4, 0, 10, 0, 0, 0]);
            v.extend([0x2C, 0, 0, 0, 0]);
            v.extend(w.to_le_bytes());
            v.extend(h.to_le_bytes());
            v.push(0x81);
            v.extend([0; 12]);
            // LZW minimum code size, one data sub-block, the empty sub-block.
            v.extend([2, 2, 0x44, 0x01, 0]);
        }
        v.push(0x3B);
        v
    }

    #[test]
    fn gif_image_descriptors_larger_than_the_screen_are_checked() {
        let plain = parse(
            ImageFormat::Gif,
            &gif_with_frames((320, 240), &[(320, 240), (100, 50)]),
        )
        .unwrap();
        assert_eq!((plain.display_size(), plain.pixels()), ((320, 240), 76_800));
        // A 10 × 10 screen whose second frame declares 60000 × 60000.
        let bomb = gif_with_frames((10, 10), &[(10, 10), (60000, 60000)]);
        let h = parse(ImageFormat::Gif, &bomb).unwrap();
        assert_eq!(h.display_size(), (10, 10));
        assert_eq!(h.largest_size(), (60000, 60000));
        assert_eq!(h.pixels(), 3_600_000_000);
        // A prefix holds fewer descriptors; each one in it is checked.
        let second = bomb.len() - 1 - 22;
        assert_eq!(
            parse(ImageFormat::Gif, &bomb[..second]).unwrap().pixels(),
            100
        );
        assert_eq!(
            parse(ImageFormat::Gif, &bomb[..second + 12])
                .unwrap()
                .pixels(),
            3_600_000_000
        );
        // Bytes that are no block end the stream, as for decoders.
        let mut junk = gif_with_frames((10, 10), &[(10, 10)]);
        junk.pop();
        junk.extend([0x00, 0x2C]);
        assert_eq!(parse(ImageFormat::Gif, &junk).unwrap().pixels(), 100);
        // The walk is bounded in blocks: at the bound the GIF is refused.
        let mut many = gif_with_frames((10, 10), &[]);
        many.pop();
        for _ in 0..MAX_GIF_BLOCKS - 2 {
            many.extend([0x21, 0xFE, 1, b'x', 0]);
        }
        many.push(0x3B);
        assert_eq!(parse(ImageFormat::Gif, &many).unwrap().pixels(), 100);
        many.pop();
        many.extend([0x21, 0xFE, 0, 0x3B]);
        assert!(matches!(
            parse(ImageFormat::Gif, &many),
            Err(HeaderError::Corrupt { format: "GIF", .. })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300), prefix in 0usize..4) {
            // Start from a valid signature often, so the parsers get past it.
            let mut input = match prefix {
                0 => vec![0xFF, 0xD8],
                1 => b"\x89PNG\r\n\x1a\n".to_vec(),
                2 => b"RIFF\0\0\0\0WEBP".to_vec(),
                _ => b"GIF89a".to_vec(),
            };
            input.extend_from_slice(&data);
            for f in [ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::WebP, ImageFormat::Gif] {
                let _ = parse(f, &input);
            }
            let _ = exif_orientation(&data);
        }
    }
}
