//! One picture in I420 (YUV 4:2:0, 8 bits): a full-size luma plane followed by
//! the two chroma planes at half width and half height (rounded up), packed
//! with no padding — the layout of a Y4M `C420jpeg` frame and of libvpx's
//! `VPX_IMG_FMT_I420` with stride = width.

/// Largest width or height accepted anywhere (Y4M headers, encoder settings):
/// 4K UHD. A bigger claim in a file header is refused before any allocation.
pub const MAX_DIMENSION: u32 = 3840;

/// A picture in packed I420.
#[derive(Clone, PartialEq, Eq)]
pub struct I420Frame {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl std::fmt::Debug for I420Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "I420Frame({}x{})", self.width, self.height)
    }
}

/// Bytes of one packed I420 picture.
pub fn i420_len(width: u32, height: u32) -> usize {
    let (w, h) = (width as usize, height as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    w * h + 2 * cw * ch
}

impl I420Frame {
    /// A black picture (Y 16, U and V 128: studio-range black).
    pub fn black(width: u32, height: u32) -> Self {
        let luma = width as usize * height as usize;
        let mut data = vec![128u8; i420_len(width, height)];
        data[..luma].fill(16);
        Self {
            width,
            height,
            data,
        }
    }

    /// Wraps packed I420 bytes; `None` when the length does not match.
    pub fn from_packed(width: u32, height: u32, data: Vec<u8>) -> Option<Self> {
        (width > 0 && height > 0 && data.len() == i420_len(width, height)).then_some(Self {
            width,
            height,
            data,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Width of a chroma plane.
    pub fn chroma_width(&self) -> u32 {
        self.width.div_ceil(2)
    }

    /// Height of a chroma plane.
    pub fn chroma_height(&self) -> u32 {
        self.height.div_ceil(2)
    }

    /// All three planes, packed.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// All three planes, packed, to draw on.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    fn luma_len(&self) -> usize {
        self.width as usize * self.height as usize
    }

    fn chroma_len(&self) -> usize {
        self.chroma_width() as usize * self.chroma_height() as usize
    }

    /// The luma plane (row stride = width).
    pub fn y(&self) -> &[u8] {
        &self.data[..self.luma_len()]
    }

    /// The luma plane, to draw on.
    pub fn y_mut(&mut self) -> &mut [u8] {
        let n = self.luma_len();
        &mut self.data[..n]
    }

    /// The U plane (row stride = chroma width).
    pub fn u(&self) -> &[u8] {
        let (y, c) = (self.luma_len(), self.chroma_len());
        &self.data[y..y + c]
    }

    /// The V plane (row stride = chroma width).
    pub fn v(&self) -> &[u8] {
        let (y, c) = (self.luma_len(), self.chroma_len());
        &self.data[y + c..]
    }

    /// U and V planes, to draw on.
    pub fn uv_mut(&mut self) -> (&mut [u8], &mut [u8]) {
        let (y, c) = (self.luma_len(), self.chroma_len());
        let (u, v) = self.data[y..].split_at_mut(c);
        (u, v)
    }
}

/// Peak signal-to-noise ratio of `b` against `a` over all three planes, in dB
/// (the ffmpeg `psnr` filter's "average": one mean squared error over every
/// sample). Identical pictures give `f64::INFINITY`; `None` when the sizes differ.
pub fn psnr(a: &I420Frame, b: &I420Frame) -> Option<f64> {
    if a.width != b.width || a.height != b.height {
        return None;
    }
    let sse: u64 = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(&x, &y)| {
            let d = i64::from(x) - i64::from(y);
            (d * d) as u64
        })
        .sum();
    if sse == 0 {
        return Some(f64::INFINITY);
    }
    let mse = sse as f64 / a.data.len() as f64;
    Some(10.0 * (255.0 * 255.0 / mse).log10())
}

/// Peak signal-to-noise ratio of the luma planes alone, in dB.
pub fn psnr_y(a: &I420Frame, b: &I420Frame) -> Option<f64> {
    if a.width != b.width || a.height != b.height {
        return None;
    }
    let sse: u64 = a
        .y()
        .iter()
        .zip(b.y())
        .map(|(&x, &y)| {
            let d = i64::from(x) - i64::from(y);
            (d * d) as u64
        })
        .sum();
    if sse == 0 {
        return Some(f64::INFINITY);
    }
    let mse = sse as f64 / a.y().len() as f64;
    Some(10.0 * (255.0 * 255.0 / mse).log10())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_sizes_round_chroma_up() {
        assert_eq!(i420_len(3, 3), 9 + 2 * 4);
        let f = I420Frame::black(3, 3);
        assert_eq!((f.chroma_width(), f.chroma_height()), (2, 2));
        assert_eq!(f.u().len(), 4);
        assert_eq!(f.v().len(), 4);
        assert!(I420Frame::from_packed(3, 3, vec![0; 16]).is_none());
        assert!(I420Frame::from_packed(0, 3, vec![]).is_none());
    }

    #[test]
    fn psnr_matches_the_definition() {
        let a = I420Frame::black(4, 4);
        assert_eq!(psnr(&a, &a), Some(f64::INFINITY));
        let mut b = a.clone();
        // Every sample off by 1: MSE 1, PSNR = 20·log10(255) ≈ 48.13 dB.
        for s in b.data_mut() {
            *s += 1;
        }
        let p = psnr(&a, &b).unwrap();
        assert!((p - 48.1308).abs() < 1e-3, "{p}");
        assert!((psnr_y(&a, &b).unwrap() - 48.1308).abs() < 1e-3);
        assert_eq!(psnr(&a, &I420Frame::black(2, 2)), None);
    }
}
