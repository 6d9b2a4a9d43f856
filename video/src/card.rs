//! A moving test card whose every picture carries its own frame number, and
//! the reader for that number. Tests and benchmarks use it as the camera: the
//! receiver reads the number back from what it decoded (or from a browser's
//! `<video>` through a canvas), so it knows which source picture it shows,
//! whether pictures were skipped, and how long one stayed on screen.
//!
//! The number is drawn as two rows of 16 cells across the top eighth of the
//! picture: the first row holds the 16 bits (most significant first, white =
//! 1), the second their complement. A reading counts only when the rows
//! disagree in every cell, so a smeared or half-decoded picture reads as
//! nothing rather than as a wrong number. Cells are placed in fractions of the
//! picture, so the stamp survives scaling.

use crate::frame::I420Frame;

const BITS: u32 = 16;
/// Cells across: 16 bits and one cell of margin each side.
const COLUMNS: u32 = BITS + 2;
const WHITE: u8 = 235;
const BLACK: u8 = 16;

/// Draws test card `number` at `width`x`height`: smooth moving waves, a
/// bouncing square, colour gradients, and the stamp.
pub fn test_card(width: u32, height: u32, number: u32) -> I420Frame {
    let mut f = I420Frame::black(width, height);
    let (w, h) = (width as usize, height as usize);
    let n = number as f64;
    // Separable waves: one table per axis keeps this cheap in debug builds.
    let cols: Vec<i32> = (0..w)
        .map(|x| (60.0 * ((x as f64 + 3.0 * n) / 37.0).sin()) as i32)
        .collect();
    let rows: Vec<i32> = (0..h)
        .map(|y| (50.0 * ((y as f64 + 2.0 * n) / 29.0).cos()) as i32)
        .collect();
    // A square that bounces across the lower part of the picture.
    let side = (h / 5).max(2);
    let span_x = w.saturating_sub(side).max(1);
    let span_y = (h - h / 8).saturating_sub(side).max(1);
    let bounce = |t: usize, span: usize| {
        let p = t % (2 * span);
        if p < span { p } else { 2 * span - p }
    };
    let sx = bounce(number as usize * 7, span_x);
    let sy = h / 8 + bounce(number as usize * 5, span_y);
    let y = f.y_mut();
    for (row, r) in rows.iter().enumerate() {
        for (col, c) in cols.iter().enumerate() {
            let inside = (sx..sx + side).contains(&col) && (sy..sy + side).contains(&row);
            let v = if inside {
                // A coarse checker inside the square gives the encoder edges to keep.
                if ((col - sx) / 8 + (row - sy) / 8) % 2 == 0 {
                    220
                } else {
                    60
                }
            } else {
                128 + r + c
            };
            y[row * w + col] = v.clamp(16, 235) as u8;
        }
    }
    let (cw, ch) = (f.chroma_width() as usize, f.chroma_height() as usize);
    let (u, v) = f.uv_mut();
    for row in 0..ch {
        for col in 0..cw {
            let i = row * cw + col;
            u[i] = (64 + (col * 128) / cw.max(1)) as u8;
            v[i] = (64 + ((row + number as usize) % ch.max(1)) * 128 / ch.max(1)) as u8;
        }
    }
    stamp(&mut f, number);
    f
}

/// The stamp's cell `(column, row)` as pixel ranges (x, y), for a picture
/// `width`x`height`. Row 0 is the number, row 1 its complement.
fn cell(
    width: u32,
    height: u32,
    column: u32,
    row: u32,
) -> (std::ops::Range<u32>, std::ops::Range<u32>) {
    let x0 = (column + 1) * width / COLUMNS;
    let x1 = (column + 2) * width / COLUMNS;
    let y0 = row * height / 16;
    let y1 = (row + 1) * height / 16;
    (x0..x1, y0..y1)
}

/// Writes `number`'s stamp into `frame` (chroma neutral under it).
pub fn stamp(frame: &mut I420Frame, number: u32) {
    let (w, h) = (frame.width(), frame.height());
    let stride = w as usize;
    // The band behind the stamp is mid-grey, the stamp's own margin.
    let band = (h / 8) as usize;
    frame.y_mut()[..band * stride].fill(128);
    for row in 0..2 {
        for bit in 0..BITS {
            let one = (number >> (BITS - 1 - bit)) & 1 == 1;
            let lit = if row == 0 { one } else { !one };
            let (xs, ys) = cell(w, h, bit, row);
            let y = frame.y_mut();
            for py in ys {
                let line = py as usize * stride;
                y[line + xs.start as usize..line + xs.end as usize].fill(if lit {
                    WHITE
                } else {
                    BLACK
                });
            }
        }
    }
    let (cw, ch) = (
        frame.chroma_width() as usize,
        frame.chroma_height() as usize,
    );
    let cband = (band.div_ceil(2)).min(ch);
    let (u, v) = frame.uv_mut();
    u[..cband * cw].fill(128);
    v[..cband * cw].fill(128);
}

/// Reads the frame number stamped on a picture: `None` when the stamp is not
/// readable (both rows must agree, cell for cell, as complements).
pub fn read_stamp(frame: &I420Frame) -> Option<u32> {
    let (w, h) = (frame.width(), frame.height());
    if w < COLUMNS * 2 || h < 32 {
        return None;
    }
    let luma = frame.y();
    // The middle half of a cell, away from edges that compression smears.
    let mean = |column: u32, row: u32| {
        let (xs, ys) = cell(w, h, column, row);
        let (qx, qy) = ((xs.end - xs.start) / 4, (ys.end - ys.start) / 4);
        let (mut sum, mut count) = (0u64, 0u64);
        for py in ys.start + qy..ys.end - qy {
            for px in xs.start + qx..xs.end - qx {
                sum += u64::from(luma[(py * w + px) as usize]);
                count += 1;
            }
        }
        sum.checked_div(count).unwrap_or(0)
    };
    read_cells(mean)
}

/// Decodes a stamp from a cell-brightness function (0–255 luma); shared with
/// readers of other pixel layouts (an RGB canvas).
pub fn read_cells(mut mean: impl FnMut(u32, u32) -> u64) -> Option<u32> {
    let mut number = 0u32;
    for bit in 0..BITS {
        let a = mean(bit, 0);
        let b = mean(bit, 1);
        let (one, zero) = (a > 150 && b < 90, a < 90 && b > 150);
        if !(one || zero) {
            return None;
        }
        number = (number << 1) | u32::from(one);
    }
    Some(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_read_back_at_any_size() {
        for (w, h) in [(640, 480), (1280, 720), (320, 240), (176, 144)] {
            for n in [0, 1, 599, 0xA5A5, 65_535] {
                let f = test_card(w, h, n);
                assert_eq!(read_stamp(&f), Some(n), "{w}x{h} #{n}");
            }
        }
    }

    #[test]
    fn the_number_wraps_at_16_bits_and_a_blank_picture_reads_as_nothing() {
        assert_eq!(read_stamp(&test_card(320, 240, 65_536 + 7)), Some(7));
        assert_eq!(read_stamp(&I420Frame::black(320, 240)), None);
        let mut half = test_card(320, 240, 12);
        // Smear the complement row: the reading is refused, not guessed.
        let band = 320 * 30;
        half.y_mut()[320 * 15..band].fill(128);
        assert_eq!(read_stamp(&half), None);
    }

    #[test]
    fn consecutive_cards_differ_below_the_stamp() {
        let a = test_card(320, 240, 10);
        let b = test_card(320, 240, 11);
        let below = 320 * 40;
        assert_ne!(a.y()[below..], b.y()[below..]);
    }
}
