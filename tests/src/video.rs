//! Reading a received video recording back: which test-card pictures it
//! shows (by their stamped frame numbers), how long one stayed on screen, and
//! how close each is to the source picture (PSNR against the same card,
//! drawn again).

use natter_video::card::{read_stamp, test_card};
use natter_video::{Y4mReader, psnr};
use std::path::Path;

/// What a recording of the test card shows.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    /// Slots (pictures) in the recording.
    pub slots: u64,
    /// Frames per second of the recording.
    pub fps: f64,
    /// Slots whose stamp could be read.
    pub readable: u64,
    /// First and last frame number seen.
    pub first: Option<u32>,
    /// Last frame number seen.
    pub last: Option<u32>,
    /// Distinct frame numbers seen.
    pub distinct: u64,
    /// Times the frame number went backwards (it must not).
    pub backwards: u64,
    /// Longest run of one picture, in milliseconds (a freeze).
    pub longest_freeze_ms: u64,
    /// Where that run began, in milliseconds from the start of the recording.
    pub longest_freeze_at_ms: u64,
    /// Every run of one picture longer than 300 ms: (start, length) in
    /// milliseconds from the start of the recording.
    pub freezes: Vec<(u64, u64)>,
    /// PSNR of each distinct picture against its source, dB.
    pub psnr: Vec<f64>,
}

impl Analysis {
    /// Mean PSNR over the distinct pictures (identical pictures count as 99 dB).
    pub fn mean_psnr(&self) -> f64 {
        if self.psnr.is_empty() {
            return 0.0;
        }
        self.psnr.iter().map(|p| p.min(99.0)).sum::<f64>() / self.psnr.len() as f64
    }

    /// The lowest PSNR over the distinct pictures.
    pub fn min_psnr(&self) -> f64 {
        self.psnr.iter().copied().fold(f64::INFINITY, f64::min)
    }

    /// One line for the test log.
    pub fn summary(&self) -> String {
        format!(
            "{} slots at {} fps, {} readable, frames {:?}..{:?} ({} distinct, {} backwards), \
             longest freeze {} ms at {} ms, freezes over 300 ms {:?}, PSNR mean {:.1} dB min {:.1} dB",
            self.slots,
            self.fps,
            self.readable,
            self.first,
            self.last,
            self.distinct,
            self.backwards,
            self.longest_freeze_ms,
            self.longest_freeze_at_ms,
            self.freezes,
            self.mean_psnr(),
            self.min_psnr()
        )
    }
}

/// Reads a Y4M recording of the test card. `source_size`: the card's size at
/// the sender (a recording at another size is compared after scaling the
/// card the same way is not attempted: PSNR is only computed at equal size).
pub fn analyse(path: &Path, source_size: (u32, u32)) -> anyhow::Result<Analysis> {
    let file = std::fs::File::open(path)?;
    let mut reader = Y4mReader::new(std::io::BufReader::with_capacity(1 << 20, file))?;
    let header = reader.header();
    let slot_ms = 1000.0 / header.fps();
    let mut a = Analysis {
        fps: header.fps(),
        ..Analysis::default()
    };
    let mut run_start = 0u64;
    let mut current: Option<u32> = None;
    let mut seen = std::collections::BTreeSet::new();
    while let Some(picture) = reader.next_frame()? {
        let index = a.slots;
        a.slots += 1;
        let Some(n) = read_stamp(&picture) else {
            continue;
        };
        a.readable += 1;
        if current == Some(n) {
            continue;
        }
        // A new picture: the previous one's run ends here.
        let run = ((index - run_start) as f64 * slot_ms) as u64;
        if current.is_some() && run > 300 {
            a.freezes.push(((run_start as f64 * slot_ms) as u64, run));
        }
        if current.is_some() && run > a.longest_freeze_ms {
            a.longest_freeze_ms = run;
            a.longest_freeze_at_ms = (run_start as f64 * slot_ms) as u64;
        }
        if current.is_some_and(|c| n < c) {
            a.backwards += 1;
        }
        run_start = index;
        current = Some(n);
        a.first.get_or_insert(n);
        a.last = Some(n);
        if seen.insert(n) && (picture.width(), picture.height()) == source_size {
            let source = test_card(source_size.0, source_size.1, n);
            if let Some(p) = psnr(&source, &picture) {
                a.psnr.push(p);
            }
        }
    }
    a.distinct = seen.len() as u64;
    Ok(a)
}
