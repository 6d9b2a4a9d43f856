//! Image dimensions (and JPEG EXIF orientation) read from the file header alone,
//! without decoding a pixel, so decompression bombs — a few kilobytes that
//! declare a 100 000 × 100 000 canvas — are refused before any allocation.
//!
//! Every read is bounds-checked: arbitrary input returns an error, never panics
//! (fuzzed by `natter_media::fuzz::image_header`).

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
}

impl ImageHeader {
    /// Width × height.
    pub fn pixels(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
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
    let (width, height, orientation) = match format {
        ImageFormat::Png => png(data)?,
        ImageFormat::Gif => gif(data)?,
        ImageFormat::WebP => webp(data)?,
        ImageFormat::Jpeg => jpeg(data)?,
    };
    Ok(ImageHeader {
        format,
        width,
        height,
        orientation,
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

/// GIF: the logical screen descriptor. Frames larger than the screen are
/// clipped by decoders, so the screen bounds the canvas; the first image
/// descriptor is checked too when present, since some decoders size by it.
fn gif(data: &[u8]) -> Result<(u32, u32, u8), HeaderError> {
    let mut r = Reader::new(data, 0);
    let sig = r.bytes(6)?;
    if sig != b"GIF87a" && sig != b"GIF89a" {
        return Err(corrupt("GIF", "bad signature"));
    }
    let d = r.bytes(7)?;
    let w = u32::from(u16::from_le_bytes([d[0], d[1]]));
    let h = u32::from(u16::from_le_bytes([d[2], d[3]]));
    nonzero("GIF", w, h)
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

/// JPEG: walks marker segments up to the first start-of-frame, noting the EXIF
/// orientation on the way (ITU T.81 §B.1.1; EXIF 2.3 §4.5.4).
fn jpeg(data: &[u8]) -> Result<(u32, u32, u8), HeaderError> {
    let mut r = Reader::new(data, 0);
    if r.bytes(2)? != [0xFF, 0xD8] {
        return Err(corrupt("JPEG", "missing start-of-image"));
    }
    let mut orientation = 1;
    loop {
        if r.u8()? != 0xFF {
            return Err(corrupt("JPEG", "expected a marker"));
        }
        // Any number of 0xFF fill bytes may precede the marker code (§B.1.1.2).
        let mut marker = r.u8()?;
        while marker == 0xFF {
            marker = r.u8()?;
        }
        match marker {
            // Standalone markers without a length.
            0x01 | 0xD0..=0xD7 => continue,
            0xD8 => return Err(corrupt("JPEG", "second start-of-image")),
            0xD9 => return Err(corrupt("JPEG", "end of image before a frame header")),
            0xDA => return Err(corrupt("JPEG", "scan before a frame header")),
            0x00 => return Err(corrupt("JPEG", "invalid marker 0x00")),
            _ => {}
        }
        let len = usize::from(r.be16()?);
        if len < 2 {
            return Err(corrupt("JPEG", "segment length below 2"));
        }
        let body_len = len - 2;
        let is_sof = matches!(marker, 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF);
        if is_sof {
            let body = r.bytes(body_len)?;
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
            return Ok((w, h, orientation));
        }
        let body = r.bytes(body_len)?;
        if marker == 0xE1 && body.starts_with(b"Exif\0\0") {
            // A broken EXIF block only loses the orientation, not the image.
            if let Some(o) = exif_orientation(&body[6..]) {
                orientation = o;
            }
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
