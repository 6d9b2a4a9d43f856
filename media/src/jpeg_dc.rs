//! Shrink-on-load for baseline JPEGs: decodes only the DC coefficient of each
//! 8 × 8 block, which is the block's average, giving the image at 1/8 scale
//! directly (the same result as libjpeg's 1/8 scaled decode that libvips'
//! `vipsthumbnail` uses). AC coefficients are Huffman-decoded only to skip
//! them: no dequantisation, no inverse DCT, no full-size buffer.
//!
//! Supported: sequential Huffman JPEGs (SOF0/SOF1), 8-bit, one (grey) or three
//! (YCbCr, or RGB per the Adobe marker) components, any sampling factors,
//! several scans, restart intervals. Anything else (progressive, arithmetic,
//! 12-bit, CMYK) returns `Ok(None)` and the caller uses the general decoder.
//! Corrupt data is an `Err`; every read is bounds-checked (fuzzed through
//! `natter_media::fuzz::thumbnail`).

/// An RGB image at 1/8 scale.
pub(crate) struct DcImage {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) rgb: Vec<u8>,
}

#[derive(Clone, Copy, Default)]
struct Component {
    id: u8,
    h: usize,
    v: usize,
    tq: usize,
}

/// A canonical Huffman table with a 9-bit fast lookup.
struct Huffman {
    /// (symbol, code length) by the next 9 bits; length 0 = longer code.
    fast: Vec<(u8, u8)>,
    /// Largest code of each length (-1 if none), lengths 1..=16.
    maxcode: [i32; 18],
    /// Index into `symbols` of the first code of each length, minus that code.
    valptr: [i32; 17],
    symbols: Vec<u8>,
}

const FAST_BITS: u32 = 9;

impl Huffman {
    fn new(counts: &[u8; 16], symbols: Vec<u8>) -> Result<Self, String> {
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        if total != symbols.len() || total > 256 {
            return Err("Huffman table symbol count mismatch".into());
        }
        let mut fast = vec![(0u8, 0u8); 1 << FAST_BITS];
        let mut maxcode = [-1i32; 18];
        let mut valptr = [0i32; 17];
        let mut code: i32 = 0;
        let mut k = 0usize;
        for len in 1..=16usize {
            let n = usize::from(counts[len - 1]);
            valptr[len] = k as i32 - code;
            for _ in 0..n {
                if len as u32 <= FAST_BITS {
                    let shift = FAST_BITS - len as u32;
                    let base = (code as usize) << shift;
                    for j in 0..(1usize << shift) {
                        if let Some(slot) = fast.get_mut(base + j) {
                            *slot = (symbols[k], len as u8);
                        }
                    }
                }
                code += 1;
                k += 1;
            }
            if n > 0 {
                maxcode[len] = code - 1;
            }
            if code > (1 << len) {
                return Err("Huffman table has too many codes".into());
            }
            code <<= 1;
        }
        maxcode[17] = i32::MAX;
        Ok(Self {
            fast,
            maxcode,
            valptr,
            symbols,
        })
    }
}

/// Entropy-coded data reader: removes 0xFF00 stuffing and stops at markers
/// (feeding zeros after them, as libjpeg does).
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    buf: u64,
    n: u32,
    at_marker: bool,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8], pos: usize) -> Self {
        Self {
            data,
            pos,
            buf: 0,
            n: 0,
            at_marker: false,
        }
    }

    #[inline]
    fn fill(&mut self) {
        // Fast path: four bytes with no 0xFF among them (the common case) at once.
        if !self.at_marker
            && self.n <= 32
            && let Some(&[a, b, c, d]) = self
                .data
                .get(self.pos..self.pos + 4)
                .and_then(|s| <&[u8; 4]>::try_from(s).ok())
            && a != 0xFF
            && b != 0xFF
            && c != 0xFF
            && d != 0xFF
        {
            self.buf |= u64::from(u32::from_be_bytes([a, b, c, d])) << (32 - self.n);
            self.n += 32;
            self.pos += 4;
        }
        while self.n <= 56 {
            let mut byte = 0u8;
            if !self.at_marker {
                match self.data.get(self.pos) {
                    Some(0xFF) => match self.data.get(self.pos + 1) {
                        Some(0x00) => {
                            byte = 0xFF;
                            self.pos += 2;
                        }
                        // A marker (or fill bytes before one): data ends here.
                        _ => self.at_marker = true,
                    },
                    Some(&b) => {
                        byte = b;
                        self.pos += 1;
                    }
                    None => self.at_marker = true,
                }
            }
            self.buf |= u64::from(byte) << (56 - self.n);
            self.n += 8;
        }
    }

    #[inline]
    fn peek(&mut self, k: u32) -> u32 {
        if self.n < k {
            self.fill();
        }
        (self.buf >> (64 - k)) as u32
    }

    #[inline]
    fn consume(&mut self, k: u32) {
        self.buf <<= k;
        self.n -= k;
    }

    #[inline]
    fn bits(&mut self, k: u32) -> u32 {
        if k == 0 {
            return 0;
        }
        let v = self.peek(k);
        self.consume(k);
        v
    }

    /// Decodes one symbol. Leaves at least 16 bits buffered, so the value bits
    /// that follow (at most 15) need no refill.
    #[inline]
    fn decode(&mut self, t: &Huffman) -> Result<u8, String> {
        if self.n < 32 {
            self.fill();
        }
        let look = (self.buf >> (64 - FAST_BITS)) as usize;
        let (sym, len) = t.fast[look];
        if len > 0 {
            self.consume(u32::from(len));
            return Ok(sym);
        }
        let code16 = (self.buf >> 48) as i32;
        for len in (FAST_BITS as usize + 1)..=16 {
            let code = code16 >> (16 - len);
            if code <= t.maxcode[len] {
                self.consume(len as u32);
                let idx = (code + t.valptr[len]) as usize;
                return t
                    .symbols
                    .get(idx)
                    .copied()
                    .ok_or_else(|| "bad Huffman code".to_string());
            }
        }
        Err("bad Huffman code".into())
    }

    /// Drops buffered bits and moves past the restart marker at the cursor.
    fn restart(&mut self) -> Result<(), String> {
        self.buf = 0;
        self.n = 0;
        self.at_marker = false;
        // Skip to the next RSTn marker (tolerating garbage before it).
        while self.pos + 1 < self.data.len() {
            if self.data[self.pos] == 0xFF && (0xD0..=0xD7).contains(&self.data[self.pos + 1]) {
                self.pos += 2;
                return Ok(());
            }
            self.pos += 1;
        }
        Err("missing restart marker".into())
    }
}

#[inline]
fn extend(v: u32, s: u32) -> i32 {
    if s == 0 {
        0
    } else if v < (1 << (s - 1)) {
        v as i32 - (1 << s) + 1
    } else {
        v as i32
    }
}

fn be16(d: &[u8], p: usize) -> Result<usize, String> {
    match d.get(p..p + 2) {
        Some(b) => Ok(usize::from(u16::from_be_bytes([b[0], b[1]]))),
        None => Err("truncated marker segment".into()),
    }
}

/// Decodes `data` at 1/8 scale; `Ok(None)` when the JPEG uses a feature this
/// fast path does not handle.
pub(crate) fn decode(data: &[u8]) -> Result<Option<DcImage>, String> {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return Err("missing start-of-image".into());
    }
    let mut q0 = [0i32; 4];
    let mut dc_tables: [Option<Huffman>; 4] = [None, None, None, None];
    let mut ac_tables: [Option<Huffman>; 4] = [None, None, None, None];
    let mut comps: Vec<Component> = Vec::new();
    let (mut width, mut height) = (0usize, 0usize);
    let mut restart_interval = 0usize;
    let mut adobe_transform: Option<u8> = None;
    let mut planes: Vec<Vec<u8>> = Vec::new();
    let (mut hmax, mut vmax, mut mcux, mut mcuy) = (1usize, 1usize, 0usize, 0usize);
    let mut scanned = false;
    let mut p = 2usize;
    loop {
        // Find the next marker (skipping fill bytes).
        while data.get(p) == Some(&0xFF) && data.get(p + 1) == Some(&0xFF) {
            p += 1;
        }
        if data.get(p) != Some(&0xFF) {
            if scanned {
                break; // trailing garbage after the image data
            }
            return Err("expected a marker".into());
        }
        let marker = *data.get(p + 1).ok_or("truncated before a marker")?;
        p += 2;
        match marker {
            0xD9 => break,
            0xD0..=0xD7 | 0x01 => continue,
            _ => {}
        }
        let len = be16(data, p)?;
        if len < 2 {
            return Err("segment length below 2".into());
        }
        let seg = data.get(p + 2..p + len).ok_or("truncated marker segment")?;
        p += len;
        match marker {
            0xDB => {
                let mut i = 0;
                while i < seg.len() {
                    let pq = seg[i] >> 4;
                    let tq = usize::from(seg[i] & 15);
                    if tq > 3 {
                        return Err("quantisation table id above 3".into());
                    }
                    let size = if pq == 0 { 64 } else { 128 };
                    let t = seg
                        .get(i + 1..i + 1 + size)
                        .ok_or("truncated quantisation table")?;
                    q0[tq] = if pq == 0 {
                        i32::from(t[0])
                    } else {
                        i32::from(u16::from_be_bytes([t[0], t[1]]))
                    };
                    i += 1 + size;
                }
            }
            0xC4 => {
                let mut i = 0;
                while i < seg.len() {
                    let class = seg[i] >> 4;
                    let id = usize::from(seg[i] & 15);
                    if class > 1 || id > 3 {
                        return Err("bad Huffman table class or id".into());
                    }
                    let counts: [u8; 16] = seg
                        .get(i + 1..i + 17)
                        .ok_or("truncated Huffman table")?
                        .try_into()
                        .map_err(|_| "truncated Huffman table")?;
                    let n: usize = counts.iter().map(|&c| usize::from(c)).sum();
                    let symbols = seg
                        .get(i + 17..i + 17 + n)
                        .ok_or("truncated Huffman table")?
                        .to_vec();
                    let table = Huffman::new(&counts, symbols)?;
                    if class == 0 {
                        dc_tables[id] = Some(table);
                    } else {
                        ac_tables[id] = Some(table);
                    }
                    i += 17 + n;
                }
            }
            0xC0 | 0xC1 => {
                // Sequential JPEGs have one frame. A second would add its
                // components to the first's and allocate planes for all of
                // them, each repeat more: leave it to the general decoder,
                // which refuses it.
                if !comps.is_empty() {
                    return Err("second frame header".into());
                }
                if seg.len() < 6 || seg[0] != 8 {
                    return Ok(None); // not 8-bit
                }
                height = usize::from(u16::from_be_bytes([seg[1], seg[2]]));
                width = usize::from(u16::from_be_bytes([seg[3], seg[4]]));
                let nf = usize::from(seg[5]);
                if width == 0 || height == 0 {
                    return Err("zero width or height".into());
                }
                if nf != 1 && nf != 3 {
                    return Ok(None);
                }
                for c in 0..nf {
                    let b = seg
                        .get(6 + c * 3..9 + c * 3)
                        .ok_or("truncated frame header")?;
                    let (h, v) = (usize::from(b[1] >> 4), usize::from(b[1] & 15));
                    if !(1..=4).contains(&h) || !(1..=4).contains(&v) || b[2] > 3 {
                        return Err("bad sampling factors or table id".into());
                    }
                    comps.push(Component {
                        id: b[0],
                        h,
                        v,
                        tq: usize::from(b[2]),
                    });
                }
                hmax = comps.iter().map(|c| c.h).max().unwrap_or(1);
                vmax = comps.iter().map(|c| c.v).max().unwrap_or(1);
                mcux = width.div_ceil(8 * hmax);
                mcuy = height.div_ceil(8 * vmax);
                planes = comps
                    .iter()
                    .map(|c| vec![0u8; mcux * c.h * mcuy * c.v])
                    .collect();
            }
            0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => return Ok(None),
            0xDD => {
                restart_interval = be16(seg, 0)?;
            }
            0xEE if seg.starts_with(b"Adobe") && seg.len() >= 12 => {
                adobe_transform = Some(seg[11]);
            }
            0xDA => {
                if comps.is_empty() {
                    return Err("scan before a frame header".into());
                }
                let ns = usize::from(*seg.first().ok_or("empty scan header")?);
                if ns == 0 || ns > comps.len() {
                    return Err("bad scan component count".into());
                }
                let mut scan: Vec<(usize, usize, usize)> = Vec::with_capacity(ns);
                for i in 0..ns {
                    let b = seg
                        .get(1 + i * 2..3 + i * 2)
                        .ok_or("truncated scan header")?;
                    let ci = comps
                        .iter()
                        .position(|c| c.id == b[0])
                        .ok_or("scan names an unknown component")?;
                    let (td, ta) = (usize::from(b[1] >> 4), usize::from(b[1] & 15));
                    if td > 3 || ta > 3 || dc_tables[td].is_none() || ac_tables[ta].is_none() {
                        return Err("scan uses a missing Huffman table".into());
                    }
                    scan.push((ci, td, ta));
                }
                p = decode_scan(
                    data,
                    p,
                    &comps,
                    &scan,
                    &dc_tables,
                    &ac_tables,
                    &q0,
                    &mut planes,
                    (width, height, hmax, vmax, mcux, mcuy),
                    restart_interval,
                )?;
                scanned = true;
            }
            _ => {}
        }
    }
    if !scanned {
        return Err("no image data".into());
    }
    Ok(Some(to_rgb(
        &comps,
        &planes,
        width,
        height,
        hmax,
        vmax,
        mcux,
        adobe_transform,
    )))
}

type Geometry = (usize, usize, usize, usize, usize, usize);

#[allow(clippy::too_many_arguments)]
fn decode_scan(
    data: &[u8],
    start: usize,
    comps: &[Component],
    scan: &[(usize, usize, usize)],
    dc_tables: &[Option<Huffman>; 4],
    ac_tables: &[Option<Huffman>; 4],
    q0: &[i32; 4],
    planes: &mut [Vec<u8>],
    (width, height, hmax, vmax, mcux, mcuy): Geometry,
    restart_interval: usize,
) -> Result<usize, String> {
    let mut bits = Bits::new(data, start);
    let mut pred = [0i32; 4];
    // Tables exist: checked by the caller for every scan component.
    let tables: Vec<(&Huffman, &Huffman, i32, usize)> = scan
        .iter()
        .map(|&(ci, td, ta)| {
            (
                dc_tables[td].as_ref().expect("checked by the caller"),
                ac_tables[ta].as_ref().expect("checked by the caller"),
                q0[comps[ci].tq],
                ci,
            )
        })
        .collect();
    let block =
        |bits: &mut Bits<'_>, k: usize, pred: &mut [i32; 4], out: &mut u8| -> Result<(), String> {
            let (dc_t, ac_t, q, _) = tables[k];
            let s = u32::from(bits.decode(dc_t)?);
            if s > 11 {
                return Err("DC magnitude above 11 bits".into());
            }
            let diff = extend(bits.bits(s), s);
            pred[k] = pred[k].wrapping_add(diff);
            let mut i = 1usize;
            while i < 64 {
                let rs = bits.decode(ac_t)?;
                let (r, s) = (usize::from(rs >> 4), u32::from(rs & 15));
                if s == 0 {
                    if r == 15 {
                        i += 16;
                        continue;
                    }
                    break;
                }
                i += r;
                if i > 63 {
                    return Err("AC coefficients past the end of a block".into());
                }
                // At least 16 bits are buffered after `decode` (s <= 15).
                bits.consume(s);
                i += 1;
            }
            if i > 64 {
                return Err("AC run past the end of a block".into());
            }
            // The 1 × 1 inverse DCT: the block average, level-shifted (T.81 A.3.3).
            let dc = pred[k].wrapping_mul(q);
            *out = (((dc + 4) >> 3) + 128).clamp(0, 255) as u8;
            Ok(())
        };
    let mut since_restart = 0usize;
    if scan.len() == 1 {
        // Non-interleaved: one block per MCU, over the component's own size.
        let c = comps[scan[0].0];
        let bw = (width * c.h).div_ceil(hmax).div_ceil(8);
        let bh = (height * c.v).div_ceil(vmax).div_ceil(8);
        let stride = mcux * c.h;
        let plane = planes.get_mut(scan[0].0).ok_or("plane")?;
        for by in 0..bh {
            for bx in 0..bw {
                if restart_interval > 0 && since_restart == restart_interval {
                    bits.restart()?;
                    pred = [0; 4];
                    since_restart = 0;
                }
                let slot = plane
                    .get_mut(by * stride + bx)
                    .ok_or("block outside the frame")?;
                block(&mut bits, 0, &mut pred, slot)?;
                since_restart += 1;
            }
        }
    } else {
        for my in 0..mcuy {
            for mx in 0..mcux {
                if restart_interval > 0 && since_restart == restart_interval {
                    bits.restart()?;
                    pred = [0; 4];
                    since_restart = 0;
                }
                for (k, &(ci, _, _)) in scan.iter().enumerate() {
                    let c = comps[ci];
                    let stride = mcux * c.h;
                    for v in 0..c.v {
                        for h in 0..c.h {
                            let idx = (my * c.v + v) * stride + mx * c.h + h;
                            let slot = planes
                                .get_mut(ci)
                                .and_then(|pl| pl.get_mut(idx))
                                .ok_or("block outside the frame")?;
                            block(&mut bits, k, &mut pred, slot)?;
                        }
                    }
                }
                since_restart += 1;
            }
        }
    }
    // Continue after the scan: at the marker that ended it.
    let mut p = bits.pos;
    while p + 1 < data.len()
        && !(data[p] == 0xFF && data[p + 1] != 0x00 && !(0xD0..=0xD7).contains(&data[p + 1]))
    {
        p += 1;
    }
    Ok(p)
}

#[allow(clippy::too_many_arguments)]
fn to_rgb(
    comps: &[Component],
    planes: &[Vec<u8>],
    width: usize,
    height: usize,
    hmax: usize,
    vmax: usize,
    mcux: usize,
    adobe: Option<u8>,
) -> DcImage {
    let ow = width.div_ceil(8 * hmax) * hmax;
    let oh = height.div_ceil(8 * vmax) * vmax;
    // Crop to the blocks that hold real pixels.
    let (ow, oh) = (width.div_ceil(8).min(ow), height.div_ceil(8).min(oh));
    let mut rgb = vec![0u8; ow * oh * 3];
    let sample = |ci: usize, x: usize, y: usize| -> i32 {
        let c = comps[ci];
        let sx = x * c.h / hmax;
        let sy = y * c.v / vmax;
        i32::from(planes[ci].get(sy * mcux * c.h + sx).copied().unwrap_or(128))
    };
    let rgb_stored = comps.len() == 3
        && (adobe == Some(0)
            || (comps[0].id == b'R' && comps[1].id == b'G' && comps[2].id == b'B'));
    for y in 0..oh {
        for x in 0..ow {
            let o = (y * ow + x) * 3;
            if comps.len() == 1 {
                let l = sample(0, x, y) as u8;
                rgb[o..o + 3].copy_from_slice(&[l, l, l]);
            } else if rgb_stored {
                for k in 0..3 {
                    rgb[o + k] = sample(k, x, y) as u8;
                }
            } else {
                // JFIF YCbCr to RGB in 16.16 fixed point.
                let yy = sample(0, x, y) << 16;
                let cb = sample(1, x, y) - 128;
                let cr = sample(2, x, y) - 128;
                let r = (yy + 91_881 * cr + 32_768) >> 16;
                let g = (yy - 22_554 * cb - 46_802 * cr + 32_768) >> 16;
                let b = (yy + 116_130 * cb + 32_768) >> 16;
                rgb[o] = r.clamp(0, 255) as u8;
                rgb[o + 1] = g.clamp(0, 255) as u8;
                rgb[o + 2] = b.clamp(0, 255) as u8;
            }
        }
    }
    DcImage {
        width: ow as u32,
        height: oh as u32,
        rgb,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(img: &image::RgbImage, quality: u8) -> Vec<u8> {
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
            .encode(
                img.as_raw(),
                img.width(),
                img.height(),
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
        out
    }

    /// Mean absolute difference per channel against jpeg-decoder's 1/8 decode.
    fn compare(data: &[u8]) -> (u32, u32, f64) {
        let ours = decode(data).unwrap().expect("supported");
        let mut d = jpeg_decoder::Decoder::new(std::io::Cursor::new(data));
        let (w, h) = d.scale(1, 1).unwrap();
        let reference = d.decode().unwrap();
        assert_eq!((ours.width, ours.height), (u32::from(w), u32::from(h)));
        let diff: u64 = if reference.len() == ours.rgb.len() {
            ours.rgb
                .iter()
                .zip(&reference)
                .map(|(a, b)| u64::from(a.abs_diff(*b)))
                .sum()
        } else {
            // Grey reference: one channel.
            ours.rgb
                .chunks(3)
                .zip(&reference)
                .map(|(a, b)| u64::from(a[0].abs_diff(*b)))
                .sum()
        };
        (ours.width, ours.height, diff as f64 / ours.rgb.len() as f64)
    }

    #[test]
    fn matches_the_general_decoder_at_one_eighth() {
        let img = image::RgbImage::from_fn(1001, 603, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 251) as u8])
        });
        let (w, h, mad) = compare(&encode(&img, 90));
        assert_eq!((w, h), (126, 76));
        // Same DC values; only chroma upsampling differs slightly.
        assert!(mad < 6.0, "mean difference {mad}");
        let grey = image::DynamicImage::ImageRgb8(img).into_luma8();
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
            .encode(
                grey.as_raw(),
                grey.width(),
                grey.height(),
                image::ExtendedColorType::L8,
            )
            .unwrap();
        let (_, _, mad) = compare(&out);
        assert!(mad < 1.5, "grey mean difference {mad}");
    }

    #[test]
    fn corrupt_and_unsupported_inputs_do_not_panic() {
        let img =
            image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 3, y as u8 * 5, 7]));
        let good = encode(&img, 85);
        for cut in 0..good.len() {
            let _ = decode(&good[..cut]);
        }
        let mut flipped = good.clone();
        for i in (20..flipped.len()).step_by(7) {
            flipped[i] ^= 0x5A;
            let _ = decode(&flipped);
        }
        // Progressive (SOF2) is left to the general decoder.
        let mut progressive = good.clone();
        let sof = progressive
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .unwrap();
        progressive[sof + 1] = 0xC2;
        assert!(matches!(decode(&progressive), Ok(None)));
        assert!(decode(b"not a jpeg").is_err());
    }

    #[test]
    fn a_repeated_frame_header_is_refused_not_stacked() {
        let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let good = encode(&img, 85);
        assert!(decode(&good).unwrap().is_some());
        let at = good.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        let len = usize::from(u16::from_be_bytes([good[at + 2], good[at + 3]]));
        let frame = good[at..at + 2 + len].to_vec();
        // The same frame header again after the scan, many times: each would
        // add three components and reallocate the planes of all of them.
        let mut repeated = good[..good.len() - 2].to_vec();
        for _ in 0..100 {
            repeated.extend_from_slice(&frame);
        }
        repeated.extend_from_slice(&[0xFF, 0xD9]);
        assert_eq!(
            decode(&repeated).err().as_deref(),
            Some("second frame header")
        );
    }
}
