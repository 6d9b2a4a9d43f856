//! Thumbnails: a JPEG at most `thumb_px` on its long side, and a tiny preview
//! (at most `preview_px`) that senders put inline in their messages.
//!
//! JPEGs are decoded at reduced scale (shrink-on-load, as libvips does): a
//! 4000 × 3000 photo is decoded straight to 500 × 375 from the DC coefficient
//! of each 8 × 8 block (`jpeg_dc`, baseline JPEGs), or with jpeg-decoder's DCT
//! scaling (1/8 to 1/1) otherwise, skipping most of the inverse DCT, colour
//! conversion and a 64× larger buffer. PNG, WebP and GIF (first frame)
//! are decoded in full by `image` under allocation limits. The result is resized
//! with Lanczos-3 (`fast_image_resize`), turned upright by the EXIF orientation,
//! and encoded as JPEG.
//!
//! Synchronous and CPU-heavy: callers run it in `spawn_blocking`. The caller
//! checks the header's pixel count first and reserves [`decode_cost`] bytes of
//! the process-wide decode budget (`crate::budget`); the decoders' own limits,
//! set from the header, are a second line of defence. Decoder panics are
//! caught and reported as corrupt input.

use crate::header::ImageHeader;
use crate::sniff::ImageFormat;
use fast_image_resize as fir;
use std::io::Cursor;

/// Sizes and qualities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThumbOptions {
    /// Long side of the thumbnail.
    pub thumb_px: u32,
    /// Long side of the inline preview.
    pub preview_px: u32,
    /// JPEG quality of the thumbnail (1–100).
    pub thumb_quality: u8,
    /// JPEG quality of the preview.
    pub preview_quality: u8,
    /// Largest width × height decoded.
    pub max_pixels: u64,
}

impl Default for ThumbOptions {
    fn default() -> Self {
        Self {
            thumb_px: 320,
            preview_px: 32,
            thumb_quality: 80,
            preview_quality: 50,
            max_pixels: 100_000_000,
        }
    }
}

/// Bytes a decode may hold per pixel of [`ImageHeader::pixels`], at its peak,
/// whatever the format: a 16-bit RGBA PNG is 8 bytes a pixel decoded plus 4
/// for its 8-bit RGBA copy; a progressive CMYK JPEG holds 8 bytes of
/// coefficients a pixel plus its (scaled) output; a GIF holds the screen and the
/// largest frame at 4 bytes each. The thumbnail and preview are small beside it.
pub const DECODE_BYTES_PER_PIXEL: u64 = 12;

/// The memory a decode of a file of `file_len` bytes with this header may
/// hold: its pixels at [`DECODE_BYTES_PER_PIXEL`], plus the file itself, which
/// is read whole into memory before decoding.
pub fn decode_cost(header: &ImageHeader, file_len: u64) -> u64 {
    header
        .pixels()
        .saturating_mul(DECODE_BYTES_PER_PIXEL)
        .saturating_add(file_len)
}

/// An encoded JPEG and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jpeg {
    /// JPEG bytes.
    pub bytes: Vec<u8>,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// The thumbnail and the preview of one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnails {
    /// Thumbnail, at most `thumb_px` on its long side.
    pub thumb: Jpeg,
    /// Preview, at most `preview_px` on its long side.
    pub preview: Jpeg,
}

/// Why no thumbnail could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThumbError {
    /// The header declares more pixels than allowed.
    #[error("image is {width}×{height} pixels; at most {max} pixels are accepted")]
    TooManyPixels {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// The limit.
        max: u64,
    },
    /// The decoder refused the data.
    #[error("corrupt image: {0}")]
    Corrupt(String),
}

/// Decodes `data` (whose header was parsed as `header`) and makes both images.
///
/// `header` may have been read from a prefix of `data` (the engine reads one
/// before reading the file whole, and sizes its memory reservation by it), so
/// the whole of `data` is parsed again first: a JPEG frame header or GIF image
/// descriptor past the prefix is checked before any decoder sees it.
pub fn thumbnails(
    data: &[u8],
    header: &ImageHeader,
    opts: &ThumbOptions,
) -> Result<Thumbnails, ThumbError> {
    let too_many = |h: &ImageHeader| {
        let (width, height) = h.largest_size();
        ThumbError::TooManyPixels {
            width,
            height,
            max: opts.max_pixels,
        }
    };
    if header.pixels() > opts.max_pixels {
        return Err(too_many(header));
    }
    let whole = crate::header::parse(header.format, data)
        .map_err(|e| ThumbError::Corrupt(e.to_string()))?;
    if whole.pixels() > opts.max_pixels {
        return Err(too_many(&whole));
    }
    if whole.pixels() > header.pixels()
        || (whole.width, whole.height) != (header.width, header.height)
    {
        // Memory was reserved for `header`; a legitimate file never grows past
        // its own first frame (GIF frames fit their screen).
        return Err(ThumbError::Corrupt(
            "a frame further in the file is larger than the image header declares".into(),
        ));
    }
    // Decoders are written not to panic on bad input; this keeps a bug in one of
    // them from taking a worker thread down with it.
    let decoded = std::panic::catch_unwind(|| decode(data, header, opts))
        .map_err(|_| ThumbError::Corrupt("the decoder failed on this data".into()))??;
    let thumb_rgb = fit(&decoded, opts.thumb_px)?;
    let thumb_rgb = orient(thumb_rgb, header.orientation);
    let preview_rgb = fit(&thumb_rgb, opts.preview_px)?;
    Ok(Thumbnails {
        thumb: encode(&thumb_rgb, opts.thumb_quality)?,
        preview: encode(&preview_rgb, opts.preview_quality)?,
    })
}

/// Makes thumbnail and preview from an already small JPEG (a video frame from
/// ffmpeg), checking its header like any upload.
pub fn from_frame(jpeg: &[u8], opts: &ThumbOptions) -> Result<Thumbnails, ThumbError> {
    let header = crate::header::parse(ImageFormat::Jpeg, jpeg)
        .map_err(|e| ThumbError::Corrupt(e.to_string()))?;
    thumbnails(jpeg, &header, opts)
}

/// 8-bit RGB pixels.
struct Rgb {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

fn decode(data: &[u8], header: &ImageHeader, opts: &ThumbOptions) -> Result<Rgb, ThumbError> {
    match header.format {
        ImageFormat::Jpeg => decode_jpeg(data, header, opts),
        other => decode_with_image(data, other, header),
    }
}

fn decode_jpeg(data: &[u8], header: &ImageHeader, opts: &ThumbOptions) -> Result<Rgb, ThumbError> {
    // Shrink-on-load: when 1/8 scale still covers the thumbnail, decode only
    // the DC coefficients. Anything the fast path does not handle, or finds
    // corrupt, goes to the general decoder (which has the final word).
    let long_eighth = header.width.max(header.height).div_ceil(8);
    if long_eighth >= opts.thumb_px
        && let Ok(Some(img)) = crate::jpeg_dc::decode(data)
    {
        return Ok(Rgb {
            width: img.width,
            height: img.height,
            pixels: img.rgb,
        });
    }
    let corrupt = |e: jpeg_decoder::Error| ThumbError::Corrupt(e.to_string());
    let mut dec = jpeg_decoder::Decoder::new(Cursor::new(data));
    // The output at full size and 4 bytes a pixel is the most this header
    // allows (the memory reservation was sized by it).
    dec.set_max_decoding_buffer_size(
        usize::try_from(header.pixels().saturating_mul(4)).unwrap_or(usize::MAX),
    );
    let want = u16::try_from(opts.thumb_px).unwrap_or(u16::MAX);
    // The smallest DCT scale (1/8, 1/4, 1/2, 1) whose output still covers the
    // thumbnail box, so the final resize only ever shrinks.
    let (w, h) = dec.scale(want, want).map_err(corrupt)?;
    let info = dec
        .info()
        .ok_or_else(|| ThumbError::Corrupt("no frame header".into()))?;
    let raw = dec.decode().map_err(corrupt)?;
    let (w, h) = (u32::from(w), u32::from(h));
    let n = (w as usize) * (h as usize);
    let pixels = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => raw,
        jpeg_decoder::PixelFormat::L8 => raw.iter().flat_map(|&l| [l, l, l]).collect(),
        jpeg_decoder::PixelFormat::L16 => raw
            .chunks_exact(2)
            .flat_map(|c| {
                let l = c[0]; // big-endian: the high byte
                [l, l, l]
            })
            .collect(),
        jpeg_decoder::PixelFormat::CMYK32 => raw
            .chunks_exact(4)
            .flat_map(|c| {
                // The decoder returns CMYK as stored by Adobe applications
                // (inverted), so multiplying by K gives RGB directly.
                let k = u16::from(c[3]);
                [c[0], c[1], c[2]].map(|v| ((u16::from(v) * k) / 255) as u8)
            })
            .collect(),
    };
    if pixels.len() != n * 3 {
        return Err(ThumbError::Corrupt(
            "decoded size does not match the frame header".into(),
        ));
    }
    Ok(Rgb {
        width: w,
        height: h,
        pixels,
    })
}

fn decode_with_image(
    data: &[u8],
    format: ImageFormat,
    header: &ImageHeader,
) -> Result<Rgb, ThumbError> {
    let fmt = match format {
        ImageFormat::Png => image::ImageFormat::Png,
        ImageFormat::Gif => image::ImageFormat::Gif,
        ImageFormat::WebP => image::ImageFormat::WebP,
        ImageFormat::Jpeg => image::ImageFormat::Jpeg,
    };
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(header.width);
    limits.max_image_height = Some(header.height);
    // RGBA16 is the widest buffer a decoder of these formats makes (16-bit PNG),
    // for the canvas or the largest frame the header declares (the memory
    // reservation was sized by them); decoders' own small buffers fit the floor.
    limits.max_alloc = Some(header.pixels().saturating_mul(8).max(64 << 20));
    let mut reader = image::ImageReader::with_format(Cursor::new(data), fmt);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| ThumbError::Corrupt(e.to_string()))?;
    let rgba = img.into_rgba8();
    let (width, height) = rgba.dimensions();
    // JPEG has no alpha: composite on white, as chat apps show transparent images.
    let pixels = rgba
        .as_raw()
        .chunks_exact(4)
        .flat_map(|p| {
            let a = u16::from(p[3]);
            [p[0], p[1], p[2]].map(|c| ((u16::from(c) * a + 255 * (255 - a) + 127) / 255) as u8)
        })
        .collect();
    Ok(Rgb {
        width,
        height,
        pixels,
    })
}

/// Shrinks to fit a `max` × `max` box, keeping the aspect ratio; never enlarges.
fn fit(src: &Rgb, max: u32) -> Result<Rgb, ThumbError> {
    let (w, h) = fitted(src.width, src.height, max);
    if (w, h) == (src.width, src.height) {
        return Ok(Rgb {
            width: w,
            height: h,
            pixels: src.pixels.clone(),
        });
    }
    let src_img =
        fir::images::ImageRef::new(src.width, src.height, &src.pixels, fir::PixelType::U8x3)
            .map_err(|e| ThumbError::Corrupt(format!("pixel buffer: {e}")))?;
    let mut dst = fir::images::Image::new(w, h, fir::PixelType::U8x3);
    let options = fir::ResizeOptions::new()
        .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Lanczos3));
    fir::Resizer::new()
        .resize(&src_img, &mut dst, &options)
        .map_err(|e| ThumbError::Corrupt(format!("resize: {e}")))?;
    Ok(Rgb {
        width: w,
        height: h,
        pixels: dst.into_vec(),
    })
}

/// The size that fits `w` × `h` into a `max` box (at least 1 × 1).
pub fn fitted(w: u32, h: u32, max: u32) -> (u32, u32) {
    let long = w.max(h);
    if long <= max {
        return (w.max(1), h.max(1));
    }
    let scale = |v: u32| {
        ((u64::from(v) * u64::from(max) + u64::from(long) / 2) / u64::from(long)).max(1) as u32
    };
    (scale(w), scale(h))
}

/// Turns pixels upright according to EXIF orientation (1 = as stored; 2–8 mirror
/// and/or rotate; EXIF 2.3 table 6).
fn orient(src: Rgb, orientation: u8) -> Rgb {
    if !(2..=8).contains(&orientation) {
        return src;
    }
    let (w, h) = (src.width as usize, src.height as usize);
    let swap = orientation >= 5;
    let (ow, oh) = if swap { (h, w) } else { (w, h) };
    let mut out = vec![0u8; src.pixels.len()];
    for y in 0..h {
        for x in 0..w {
            // Where the stored pixel (x, y) lands in the upright image.
            let (dx, dy) = match orientation {
                2 => (w - 1 - x, y),
                3 => (w - 1 - x, h - 1 - y),
                4 => (x, h - 1 - y),
                5 => (y, x),
                6 => (h - 1 - y, x),
                7 => (h - 1 - y, w - 1 - x),
                _ => (y, w - 1 - x), // 8
            };
            let s = (y * w + x) * 3;
            let d = (dy * ow + dx) * 3;
            out[d..d + 3].copy_from_slice(&src.pixels[s..s + 3]);
        }
    }
    Rgb {
        width: ow as u32,
        height: oh as u32,
        pixels: out,
    }
}

fn encode(img: &Rgb, quality: u8) -> Result<Jpeg, ThumbError> {
    let mut bytes = Vec::with_capacity(img.pixels.len() / 8 + 1024);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality.clamp(1, 100))
        .encode(
            &img.pixels,
            img.width,
            img.height,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| ThumbError::Corrupt(format!("encode: {e}")))?;
    Ok(Jpeg {
        bytes,
        width: img.width,
        height: img.height,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::parse;

    pub(crate) fn gradient(w: u32, h: u32) -> image::RgbImage {
        image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, 128])
        })
    }

    fn encoded(img: &image::RgbImage, fmt: image::ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(img.clone())
            .write_to(&mut out, fmt)
            .unwrap();
        out.into_inner()
    }

    #[test]
    fn every_format_gets_a_fitted_thumbnail_and_preview() {
        let img = gradient(1200, 800);
        for (fmt, ours) in [
            (image::ImageFormat::Jpeg, ImageFormat::Jpeg),
            (image::ImageFormat::Png, ImageFormat::Png),
            (image::ImageFormat::Gif, ImageFormat::Gif),
            (image::ImageFormat::WebP, ImageFormat::WebP),
        ] {
            let data = encoded(&img, fmt);
            let header = parse(ours, &data).unwrap();
            assert_eq!((header.width, header.height), (1200, 800), "{fmt:?}");
            let t = thumbnails(&data, &header, &ThumbOptions::default()).unwrap();
            assert_eq!((t.thumb.width, t.thumb.height), (320, 213), "{fmt:?}");
            assert_eq!((t.preview.width, t.preview.height), (32, 21), "{fmt:?}");
            let back =
                image::load_from_memory_with_format(&t.thumb.bytes, image::ImageFormat::Jpeg)
                    .unwrap();
            assert_eq!((back.width(), back.height()), (320, 213));
            // Colours survive: the top-right corner is red-ish, bottom-left green-ish.
            let back = back.to_rgb8();
            assert!(back.get_pixel(318, 1).0[0] > 200, "{fmt:?}");
            assert!(back.get_pixel(1, 211).0[1] > 200, "{fmt:?}");
        }
    }

    #[test]
    fn large_jpegs_take_the_dc_path_with_the_same_result() {
        // 3000 px wide: 1/8 scale (375 px) still covers 320, so only DC
        // coefficients are decoded.
        let data = encoded(&gradient(3000, 2000), image::ImageFormat::Jpeg);
        let header = parse(ImageFormat::Jpeg, &data).unwrap();
        let t = thumbnails(&data, &header, &ThumbOptions::default()).unwrap();
        assert_eq!((t.thumb.width, t.thumb.height), (320, 213));
        let back = image::load_from_memory_with_format(&t.thumb.bytes, image::ImageFormat::Jpeg)
            .unwrap()
            .to_rgb8();
        let px = back.get_pixel(160, 106).0;
        // The centre of the gradient: red ~ 128, green ~ 128, blue 128.
        for (c, want) in px.iter().zip([128u8, 128, 128]) {
            assert!(c.abs_diff(want) < 12, "{px:?}");
        }
        assert!(back.get_pixel(318, 1).0[0] > 200);
        assert!(back.get_pixel(1, 211).0[1] > 200);
    }

    #[test]
    fn small_images_are_not_enlarged() {
        let data = encoded(&gradient(100, 50), image::ImageFormat::Png);
        let header = parse(ImageFormat::Png, &data).unwrap();
        let t = thumbnails(&data, &header, &ThumbOptions::default()).unwrap();
        assert_eq!((t.thumb.width, t.thumb.height), (100, 50));
        assert_eq!((t.preview.width, t.preview.height), (32, 16));
    }

    #[test]
    fn orientation_turns_the_thumbnail_upright() {
        let rgb = Rgb {
            width: 3,
            height: 2,
            pixels: (0..18).collect(),
        };
        // Orientation 6: stored rotated 90° counter-clockwise; shown rotated clockwise.
        let o = orient(rgb, 6);
        assert_eq!((o.width, o.height), (2, 3));
        // The stored bottom-left pixel (index 3) becomes the top-left.
        assert_eq!(&o.pixels[0..3], &[9, 10, 11]);
        assert_eq!(&o.pixels[3..6], &[0, 1, 2]);
        for orientation in 1..=8 {
            let rgb = Rgb {
                width: 5,
                height: 3,
                pixels: vec![7; 45],
            };
            let o = orient(rgb, orientation);
            assert_eq!(o.width * o.height, 15);
        }
    }

    #[test]
    fn bombs_and_garbage_are_errors_not_panics() {
        let data = encoded(&gradient(64, 64), image::ImageFormat::Png);
        let header = parse(ImageFormat::Png, &data).unwrap();
        let tight = ThumbOptions {
            max_pixels: 4095,
            ..ThumbOptions::default()
        };
        assert!(matches!(
            thumbnails(&data, &header, &tight),
            Err(ThumbError::TooManyPixels { .. })
        ));
        for fmt in [
            image::ImageFormat::Jpeg,
            image::ImageFormat::Png,
            image::ImageFormat::Gif,
            image::ImageFormat::WebP,
        ] {
            let mut data = encoded(&gradient(300, 200), fmt);
            let ours = match fmt {
                image::ImageFormat::Jpeg => ImageFormat::Jpeg,
                image::ImageFormat::Png => ImageFormat::Png,
                image::ImageFormat::Gif => ImageFormat::Gif,
                _ => ImageFormat::WebP,
            };
            let header = parse(ours, &data).unwrap();
            // Keep the header, scramble the body: a clear error, never a panic.
            let keep = 64.min(data.len());
            for b in &mut data[keep..] {
                *b = b.wrapping_mul(31).wrapping_add(7);
            }
            data.truncate(data.len() * 2 / 3);
            let r = thumbnails(&data, &header, &ThumbOptions::default());
            if let Err(e) = r {
                assert!(matches!(e, ThumbError::Corrupt(_)), "{fmt:?}: {e}");
            }
        }
    }

    #[test]
    fn frames_past_the_checked_prefix_are_checked_before_decoding() {
        // A 10 × 10 GIF with 100 KiB of comment before its only image, whose
        // descriptor declares 3000 × 3000: a prefix such as the engine reads
        // first (64 KiB) shows the screen alone.
        let mut gif = b"GIF89a\x0a\x00\x0a\x00\x00\x00\x00".to_vec();
        gif.extend([0x21, 0xFE]);
        for _ in 0..400 {
            gif.push(255);
            gif.extend([b'c'; 255]);
        }
        gif.push(0);
        gif.extend([0x2C, 0, 0, 0, 0]);
        gif.extend(3000u16.to_le_bytes());
        gif.extend(3000u16.to_le_bytes());
        gif.extend([0, 2, 2, 0x44, 0x01, 0, 0x3B]);
        let prefix = parse(ImageFormat::Gif, &gif[..64 << 10]).unwrap();
        assert_eq!(prefix.pixels(), 100);
        let opts = ThumbOptions {
            max_pixels: 4_000_000,
            ..ThumbOptions::default()
        };
        assert_eq!(
            thumbnails(&gif, &prefix, &opts),
            Err(ThumbError::TooManyPixels {
                width: 3000,
                height: 3000,
                max: 4_000_000
            })
        );
        // Within the pixel limit, but more than the header the memory was
        // reserved for: refused as well.
        assert!(matches!(
            thumbnails(&gif, &prefix, &ThumbOptions::default()),
            Err(ThumbError::Corrupt(m)) if m.contains("larger than the image header")
        ));
        // A JPEG frame header after the scan with other dimensions.
        let jpeg = encoded(&gradient(64, 48), image::ImageFormat::Jpeg);
        let header = parse(ImageFormat::Jpeg, &jpeg).unwrap();
        let mut tricked = jpeg[..jpeg.len() - 2].to_vec();
        tricked.extend([0xFF, 0xC2, 0, 0x11, 8, 0xEA, 0x60, 0xEA, 0x60]);
        tricked.extend([3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1, 0xFF, 0xD9]);
        assert!(matches!(
            thumbnails(&tricked, &header, &ThumbOptions::default()),
            Err(ThumbError::Corrupt(m)) if m.contains("frame headers declare different dimensions")
        ));
    }

    #[test]
    fn fitted_sizes() {
        assert_eq!(fitted(4000, 3000, 320), (320, 240));
        assert_eq!(fitted(3000, 4000, 320), (240, 320));
        assert_eq!(fitted(10_000, 1, 32), (32, 1));
        assert_eq!(fitted(20, 10, 320), (20, 10));
    }
}
