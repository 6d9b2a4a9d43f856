//! YUV4MPEG2 (Y4M) files: the uncompressed format ffmpeg, libvpx's tools and
//! Chromium's fake camera read and write. A Y4M file is our camera and our
//! screen, as WAV is the microphone and the speaker for audio.
//!
//! ```text
//! YUV4MPEG2 W640 H480 F30:1 Ip A1:1 C420jpeg\n
//! FRAME\n <width·height·3/2 bytes of I420>
//! FRAME\n …
//! ```
//!
//! Only 4:2:0 at 8 bits is accepted (what cameras and WebRTC encoders use);
//! anything else is refused with the parameter that was not understood.
//! Header and frame-header lengths and the picture size are bounded
//! ([`MAX_HEADER`], [`crate::MAX_DIMENSION`]) before anything is allocated.

use crate::frame::{I420Frame, MAX_DIMENSION, i420_len};
use std::io::{BufRead, Read, Write};

/// Longest stream or frame header line accepted, in bytes.
pub const MAX_HEADER: usize = 512;
const MAGIC: &str = "YUV4MPEG2";

/// Why a Y4M stream was refused.
#[derive(Debug, thiserror::Error)]
pub enum Y4mError {
    /// The stream does not start with `YUV4MPEG2 `.
    #[error("not a Y4M stream: it does not start with \"YUV4MPEG2 \"")]
    NotY4m,
    /// A header line is longer than [`MAX_HEADER`] or has no end.
    #[error("{0} header longer than {MAX_HEADER} bytes or not terminated")]
    HeaderTooLong(&'static str),
    /// A header is not ASCII.
    #[error("{0} header is not ASCII")]
    NotAscii(&'static str),
    /// A parameter's value could not be read.
    #[error("bad {param} parameter {value:?}")]
    BadParam {
        /// The parameter letter.
        param: char,
        /// What was there.
        value: String,
    },
    /// Width or height missing, zero or above the limit.
    #[error("picture size {width}x{height} outside 1..={MAX_DIMENSION}")]
    BadSize {
        /// Width from the header (0 when missing).
        width: u32,
        /// Height from the header (0 when missing).
        height: u32,
    },
    /// A colour space other than 4:2:0 at 8 bits.
    #[error(
        "unsupported colour space C{0} (only 4:2:0 at 8 bits: C420jpeg, C420paldv, C420mpeg2, C420)"
    )]
    Colour(String),
    /// Interlaced pictures.
    #[error("unsupported interlacing I{0} (only progressive: Ip)")]
    Interlaced(String),
    /// A frame does not start with `FRAME`.
    #[error("frame {index}: expected \"FRAME\", found {found:?}")]
    NotAFrame {
        /// Zero-based frame index.
        index: u64,
        /// The first bytes found instead.
        found: String,
    },
    /// The stream ends inside a frame.
    #[error("frame {index}: stream ends after {got} of {want} picture bytes")]
    Truncated {
        /// Zero-based frame index.
        index: u64,
        /// Bytes read.
        got: usize,
        /// Bytes a picture needs.
        want: usize,
    },
    /// Reading or writing failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// What a Y4M stream header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Y4mHeader {
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Frame rate numerator (`F30:1` → 30).
    pub fps_num: u32,
    /// Frame rate denominator (`F30000:1001` → 1001).
    pub fps_den: u32,
}

impl Y4mHeader {
    /// A header for `width`x`height` at `fps` frames per second.
    pub fn new(width: u32, height: u32, fps: u32) -> Self {
        Self {
            width,
            height,
            fps_num: fps,
            fps_den: 1,
        }
    }

    /// Frames per second.
    pub fn fps(&self) -> f64 {
        f64::from(self.fps_num) / f64::from(self.fps_den)
    }

    /// Bytes of one picture.
    pub fn frame_len(&self) -> usize {
        i420_len(self.width, self.height)
    }

    /// Parses a stream header line (without its `\n`).
    pub fn parse(line: &[u8]) -> Result<Self, Y4mError> {
        let line = std::str::from_utf8(line)
            .ok()
            .filter(|l| l.is_ascii())
            .ok_or(Y4mError::NotAscii("stream"))?;
        let rest = line
            .strip_prefix(MAGIC)
            .filter(|r| r.is_empty() || r.starts_with(' '))
            .ok_or(Y4mError::NotY4m)?;
        let (mut width, mut height) = (0u32, 0u32);
        let (mut fps_num, mut fps_den) = (30u32, 1u32);
        for token in rest.split(' ').filter(|t| !t.is_empty()) {
            let mut chars = token.chars();
            let param = chars.next().unwrap_or(' ');
            let value = chars.as_str();
            let bad = || Y4mError::BadParam {
                param,
                value: value.chars().take(32).collect(),
            };
            match param {
                'W' => width = value.parse().map_err(|_| bad())?,
                'H' => height = value.parse().map_err(|_| bad())?,
                'F' => {
                    let (n, d) = value.split_once(':').ok_or_else(bad)?;
                    fps_num = n.parse().map_err(|_| bad())?;
                    fps_den = d.parse().map_err(|_| bad())?;
                    if fps_num == 0 || fps_den == 0 || fps_num / fps_den > 240 {
                        return Err(bad());
                    }
                }
                'I' if value != "p" && value != "?" => {
                    return Err(Y4mError::Interlaced(value.chars().take(16).collect()));
                }
                'C' if !matches!(value, "420jpeg" | "420paldv" | "420mpeg2" | "420") => {
                    return Err(Y4mError::Colour(value.chars().take(16).collect()));
                }
                // Aspect ratio and comments (X…) change nothing here.
                'I' | 'C' | 'A' | 'X' => {}
                _ => return Err(bad()),
            }
        }
        if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
            return Err(Y4mError::BadSize { width, height });
        }
        Ok(Self {
            width,
            height,
            fps_num,
            fps_den,
        })
    }

    fn line(&self) -> String {
        format!(
            "{MAGIC} W{} H{} F{}:{} Ip A1:1 C420jpeg\n",
            self.width, self.height, self.fps_num, self.fps_den
        )
    }
}

/// Reads one `\n`-terminated line of at most [`MAX_HEADER`] bytes; `None` at a
/// clean end of stream.
fn read_line(r: &mut impl BufRead, what: &'static str) -> Result<Option<Vec<u8>>, Y4mError> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return if line.is_empty() {
                Ok(None)
            } else {
                Err(Y4mError::HeaderTooLong(what))
            };
        }
        let room = MAX_HEADER + 1 - line.len();
        let take = &buf[..buf.len().min(room)];
        if let Some(nl) = take.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&take[..nl]);
            r.consume(nl + 1);
            return Ok(Some(line));
        }
        let n = take.len();
        line.extend_from_slice(take);
        r.consume(n);
        if line.len() > MAX_HEADER {
            return Err(Y4mError::HeaderTooLong(what));
        }
    }
}

/// Reads frames from a Y4M stream.
pub struct Y4mReader<R> {
    inner: R,
    header: Y4mHeader,
    index: u64,
}

impl<R: BufRead> Y4mReader<R> {
    /// Reads and checks the stream header.
    pub fn new(mut inner: R) -> Result<Self, Y4mError> {
        let line = read_line(&mut inner, "stream")?.ok_or(Y4mError::NotY4m)?;
        let header = Y4mHeader::parse(&line)?;
        Ok(Self {
            inner,
            header,
            index: 0,
        })
    }

    /// The stream header.
    pub fn header(&self) -> Y4mHeader {
        self.header
    }

    /// The next picture; `None` at the end of the stream.
    pub fn next_frame(&mut self) -> Result<Option<I420Frame>, Y4mError> {
        let Some(line) = read_line(&mut self.inner, "frame")? else {
            return Ok(None);
        };
        let text = std::str::from_utf8(&line)
            .ok()
            .filter(|l| l.is_ascii())
            .ok_or(Y4mError::NotAscii("frame"))?;
        if text != "FRAME" && !text.starts_with("FRAME ") {
            return Err(Y4mError::NotAFrame {
                index: self.index,
                found: text.chars().take(16).collect(),
            });
        }
        let want = self.header.frame_len();
        // Read what arrives rather than allocating what the header claims: a
        // stream that promises 3840x3840 and ends costs only what it sent.
        let mut data = Vec::with_capacity(want.min(1 << 20));
        (&mut self.inner).take(want as u64).read_to_end(&mut data)?;
        if data.len() < want {
            return Err(Y4mError::Truncated {
                index: self.index,
                got: data.len(),
                want,
            });
        }
        self.index += 1;
        Ok(I420Frame::from_packed(
            self.header.width,
            self.header.height,
            data,
        ))
    }
}

/// Writes frames to a Y4M stream.
pub struct Y4mWriter<W: Write> {
    inner: W,
    header: Y4mHeader,
    frames: u64,
}

impl<W: Write> Y4mWriter<W> {
    /// Writes the stream header.
    pub fn new(mut inner: W, header: Y4mHeader) -> Result<Self, Y4mError> {
        inner.write_all(header.line().as_bytes())?;
        Ok(Self {
            inner,
            header,
            frames: 0,
        })
    }

    /// Appends one picture; it must have the stream's size.
    pub fn write_frame(&mut self, frame: &I420Frame) -> Result<(), Y4mError> {
        if frame.width() != self.header.width || frame.height() != self.header.height {
            return Err(Y4mError::BadSize {
                width: frame.width(),
                height: frame.height(),
            });
        }
        self.inner.write_all(b"FRAME\n")?;
        self.inner.write_all(frame.data())?;
        self.frames += 1;
        Ok(())
    }

    /// Pictures written.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Flushes and returns the inner writer.
    pub fn finish(mut self) -> Result<W, Y4mError> {
        self.inner.flush()?;
        Ok(self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Y4mHeader, Y4mError> {
        Y4mHeader::parse(s.as_bytes())
    }

    #[test]
    fn headers_that_cameras_and_ffmpeg_write_are_read() {
        let h = parse("YUV4MPEG2 W640 H480 F30:1 Ip A1:1 C420jpeg XYSCSS=420JPEG").unwrap();
        assert_eq!(h, Y4mHeader::new(640, 480, 30));
        let h = parse("YUV4MPEG2 W1280 H720 F30000:1001").unwrap();
        assert!((h.fps() - 29.97).abs() < 0.01);
        assert_eq!(parse("YUV4MPEG2 W2 H2").unwrap().fps_num, 30);
    }

    #[test]
    fn garbage_gets_a_precise_error() {
        let cases = [
            ("RIFF W1 H1", "not a Y4M stream"),
            ("YUV4MPEG2X W1 H1", "not a Y4M stream"),
            ("YUV4MPEG2 W640 H480 C444", "unsupported colour space C444"),
            (
                "YUV4MPEG2 W640 H480 C420p10",
                "unsupported colour space C420p10",
            ),
            ("YUV4MPEG2 W640 H480 It", "unsupported interlacing It"),
            ("YUV4MPEG2 W640", "picture size 640x0"),
            ("YUV4MPEG2 W99999 H2", "picture size 99999x2"),
            ("YUV4MPEG2 Wx H2", "bad W parameter \"x\""),
            ("YUV4MPEG2 W2 H2 F0:1", "bad F parameter \"0:1\""),
            ("YUV4MPEG2 W2 H2 F1000:1", "bad F parameter"),
            ("YUV4MPEG2 W2 H2 Q7", "bad Q parameter"),
            ("YUV4MPEG2 W2 H2 \u{e9}", "not ASCII"),
        ];
        for (header, want) in cases {
            let err = parse(header).unwrap_err().to_string();
            assert!(err.contains(want), "{header:?}: {err}");
        }
    }

    #[test]
    fn frames_round_trip_and_a_cut_stream_is_refused() {
        let header = Y4mHeader::new(4, 2, 30);
        let mut a = I420Frame::black(4, 2);
        a.y_mut()[3] = 200;
        let b = I420Frame::black(4, 2);
        let mut w = Y4mWriter::new(Vec::new(), header).unwrap();
        w.write_frame(&a).unwrap();
        w.write_frame(&b).unwrap();
        assert!(w.write_frame(&I420Frame::black(2, 2)).is_err());
        let bytes = w.finish().unwrap();
        let mut r = Y4mReader::new(&bytes[..]).unwrap();
        assert_eq!(r.header(), header);
        assert_eq!(r.next_frame().unwrap().unwrap(), a);
        assert_eq!(r.next_frame().unwrap().unwrap(), b);
        assert!(r.next_frame().unwrap().is_none());

        let cut = &bytes[..bytes.len() - 3];
        let mut r = Y4mReader::new(cut).unwrap();
        r.next_frame().unwrap();
        let err = r.next_frame().unwrap_err().to_string();
        assert_eq!(err, "frame 1: stream ends after 9 of 12 picture bytes");

        let mut bad = bytes.clone();
        let second = bytes.len() - 12 - 6;
        bad[second..second + 5].copy_from_slice(b"FRAMX");
        let mut r = Y4mReader::new(&bad[..]).unwrap();
        r.next_frame().unwrap();
        assert!(
            r.next_frame()
                .unwrap_err()
                .to_string()
                .contains("expected \"FRAME\"")
        );
    }

    #[test]
    fn an_endless_header_is_cut_off() {
        let mut long = b"YUV4MPEG2 W2 H2 X".to_vec();
        long.extend(std::iter::repeat_n(b'a', 4096));
        let err = Y4mReader::new(&long[..]).err().unwrap().to_string();
        assert!(err.contains("longer than 512"), "{err}");
    }
}
