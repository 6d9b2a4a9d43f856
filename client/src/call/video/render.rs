//! The screen: decoded pictures become a constant-rate recording, as a
//! display would show them. Slot k of the recording is the picture on screen
//! at `first picture + k / fps`; while nothing new arrives the last picture
//! stays (a freeze shows as repeats). Pictures of another size than the
//! recording (a sender that scaled down under load) are scaled to it.

use natter_video::{I420Frame, Y4mError, Y4mHeader, Y4mWriter};
use std::io::Write;
use std::time::{Duration, Instant};

/// Figures about what was shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenderStats {
    /// Pictures decoded and shown.
    pub pictures: u64,
    /// Slots written to the recording.
    pub slots: u64,
    /// Longest time one picture stayed on screen, in milliseconds.
    pub longest_freeze_ms: u64,
    /// Width and height of the last picture.
    pub last_size: (u32, u32),
}

/// Turns decoded pictures into a constant-rate recording.
pub(crate) struct Renderer<W: Write> {
    writer: Option<Y4mWriter<W>>,
    header: Option<Y4mHeader>,
    sink: Option<W>,
    fps: u32,
    first: Option<Instant>,
    last_change: Option<Instant>,
    current: Option<I420Frame>,
    stats: RenderStats,
}

impl<W: Write> Renderer<W> {
    /// A renderer writing to `sink` (or only counting, without one) at `fps`;
    /// the recording takes the size of the first picture.
    pub(crate) fn new(sink: Option<W>, fps: u32) -> Self {
        Self {
            writer: None,
            header: None,
            sink,
            fps: fps.max(1),
            first: None,
            last_change: None,
            current: None,
            stats: RenderStats::default(),
        }
    }

    #[cfg(test)]
    pub(crate) fn stats(&self) -> RenderStats {
        self.stats
    }

    fn slot_time(&self, first: Instant, k: u64) -> Instant {
        first + Duration::from_secs_f64(k as f64 / f64::from(self.fps))
    }

    /// Writes every slot that began before `now` with the picture on screen.
    fn fill_until(&mut self, now: Instant) -> Result<(), Y4mError> {
        let (Some(first), Some(current)) = (self.first, self.current.as_ref()) else {
            return Ok(());
        };
        while self.slot_time(first, self.stats.slots) < now {
            if let Some(w) = self.writer.as_mut() {
                w.write_frame(current)?;
            }
            self.stats.slots += 1;
        }
        Ok(())
    }

    /// A decoded picture arrived at `now`.
    pub(crate) fn show(&mut self, picture: I420Frame, now: Instant) -> Result<(), Y4mError> {
        self.fill_until(now)?;
        if self.first.is_none() {
            self.first = Some(now);
            let header = Y4mHeader::new(picture.width(), picture.height(), self.fps);
            self.header = Some(header);
            if let Some(sink) = self.sink.take() {
                self.writer = Some(Y4mWriter::new(sink, header)?);
            }
        }
        if let Some(prev) = self.last_change {
            let held = now.duration_since(prev).as_millis() as u64;
            self.stats.longest_freeze_ms = self.stats.longest_freeze_ms.max(held);
        }
        self.last_change = Some(now);
        self.stats.pictures += 1;
        self.stats.last_size = (picture.width(), picture.height());
        let picture = match self.header {
            Some(h) if (h.width, h.height) != (picture.width(), picture.height()) => {
                scale(&picture, h.width, h.height)
            }
            _ => picture,
        };
        self.current = Some(picture);
        Ok(())
    }

    /// The call ended at `now`: writes the remaining slots and flushes.
    /// Returns the figures and the sink.
    pub(crate) fn finish(mut self, now: Instant) -> Result<(RenderStats, Option<W>), Y4mError> {
        self.fill_until(now)?;
        if let Some(prev) = self.last_change {
            let held = now.duration_since(prev).as_millis() as u64;
            self.stats.longest_freeze_ms = self.stats.longest_freeze_ms.max(held);
        }
        let sink = match self.writer.take() {
            Some(w) => Some(w.finish()?),
            None => self.sink.take(),
        };
        Ok((self.stats, sink))
    }
}

/// Nearest-neighbour scaling to `width`x`height` (only to keep a recording's
/// size fixed; quality is not the point).
pub(crate) fn scale(src: &I420Frame, width: u32, height: u32) -> I420Frame {
    let mut out = I420Frame::black(width, height);
    let plane = |dst: &mut [u8], dw: u32, dh: u32, s: &[u8], sw: u32, sh: u32| {
        for y in 0..dh {
            let sy = (u64::from(y) * u64::from(sh) / u64::from(dh)) as usize;
            for x in 0..dw {
                let sx = (u64::from(x) * u64::from(sw) / u64::from(dw)) as usize;
                dst[(y * dw + x) as usize] = s[sy * sw as usize + sx];
            }
        }
    };
    plane(
        out.y_mut(),
        width,
        height,
        src.y(),
        src.width(),
        src.height(),
    );
    let (cw, ch) = (out.chroma_width(), out.chroma_height());
    let (scw, sch) = (src.chroma_width(), src.chroma_height());
    let (u, v) = out.uv_mut();
    plane(u, cw, ch, src.u(), scw, sch);
    plane(v, cw, ch, src.v(), scw, sch);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use natter_video::Y4mReader;
    use natter_video::card::{read_stamp, test_card};

    #[test]
    fn a_freeze_shows_as_repeats_at_a_constant_rate() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut r = Renderer::new(Some(Vec::new()), 10);
        r.show(test_card(64, 48, 0), t).unwrap();
        r.show(test_card(64, 48, 1), t + ms(100)).unwrap();
        // Picture 2 is 450 ms late.
        r.show(test_card(64, 48, 2), t + ms(550)).unwrap();
        let (stats, sink) = r.finish(t + ms(700)).unwrap();
        let sink = sink.unwrap();
        assert_eq!(stats.pictures, 3);
        assert_eq!(stats.longest_freeze_ms, 450);
        let mut rd = Y4mReader::new(&sink[..]).unwrap();
        let mut numbers = Vec::new();
        while let Some(f) = rd.next_frame().unwrap() {
            numbers.push(read_stamp(&f).unwrap());
        }
        // Slots at 0, 100, …, 600 ms: 0, then 1 held through 500 ms, then 2.
        assert_eq!(numbers, [0, 1, 1, 1, 1, 1, 2]);
    }

    #[test]
    fn a_smaller_picture_is_scaled_to_the_recording() {
        let t = Instant::now();
        let mut r = Renderer::new(Some(Vec::new()), 30);
        r.show(test_card(320, 240, 5), t).unwrap();
        r.show(test_card(160, 120, 6), t + Duration::from_millis(40))
            .unwrap();
        assert_eq!(r.stats().last_size, (160, 120));
        let (stats, _) = r.finish(t + Duration::from_millis(80)).unwrap();
        assert_eq!(stats.slots, 3);
        let scaled = scale(&test_card(160, 120, 9), 320, 240);
        assert_eq!(read_stamp(&scaled), Some(9));
    }
}
