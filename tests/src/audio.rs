//! Checks on recorded call audio: the dominant frequency, the signal-to-noise
//! ratio of a tone, and the longest silent gap inside a tone.

/// The frequency (Hz) with the most energy between `lo` and `hi`, to about
/// 0.25 Hz: a coarse Goertzel scan in 5 Hz steps, then a fine one.
pub fn dominant_frequency(x: &[i16], rate: u32, lo: f64, hi: f64) -> f64 {
    let xs: Vec<f64> = x.iter().map(|&s| f64::from(s)).collect();
    let scan = |from: f64, to: f64, step: f64| {
        let mut best = (from, 0.0);
        let mut f = from;
        while f <= to {
            let p = goertzel_power(&xs, rate, f);
            if p > best.1 {
                best = (f, p);
            }
            f += step;
        }
        best.0
    };
    let coarse = scan(lo, hi, 5.0);
    scan((coarse - 6.0).max(lo), (coarse + 6.0).min(hi), 0.25)
}

/// Power of `x` at `hz` (Goertzel).
fn goertzel_power(x: &[f64], rate: u32, hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / f64::from(rate);
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s0 = v + c * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - c * s1 * s2
}

/// SNR (dB) of a tone at `hz`: the least-squares sinusoid at `hz` is the
/// signal, everything else (codec noise, clicks, concealment) the noise.
pub fn tone_snr_db(x: &[i16], rate: u32, hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / f64::from(rate);
    let (mut ss, mut sc, mut cc, mut xs, mut xc) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (i, &v) in x.iter().enumerate() {
        let (s, c) = (w * i as f64).sin_cos();
        let v = f64::from(v);
        ss += s * s;
        sc += s * c;
        cc += c * c;
        xs += v * s;
        xc += v * c;
    }
    let det = ss * cc - sc * sc;
    let a = (xs * cc - xc * sc) / det;
    let b = (xc * ss - xs * sc) / det;
    let (mut sig, mut noise) = (0.0, 0.0);
    for (i, &v) in x.iter().enumerate() {
        let (s, c) = (w * i as f64).sin_cos();
        let fit = a * s + b * c;
        sig += fit * fit;
        noise += (f64::from(v) - fit).powi(2);
    }
    10.0 * (sig / noise.max(1e-9)).log10()
}

/// The loud part of a recording: from the first 10 ms block whose RMS is over
/// `threshold` to the last such block.
pub fn loud_span(x: &[i16], rate: u32, threshold: f64) -> Option<(usize, usize)> {
    let block = (rate / 100) as usize;
    let loud: Vec<bool> = x.chunks(block).map(|b| rms(b) > threshold).collect();
    let first = loud.iter().position(|&l| l)?;
    let last = loud.iter().rposition(|&l| l)?;
    Some((first * block, ((last + 1) * block).min(x.len())))
}

/// Longest run of quiet 10 ms blocks (RMS under `threshold`) in `x`, in ms.
pub fn longest_quiet_ms(x: &[i16], rate: u32, threshold: f64) -> u64 {
    let block = (rate / 100) as usize;
    let (mut run, mut best) = (0u64, 0u64);
    for b in x.chunks(block) {
        if rms(b) < threshold {
            run += 10;
            best = best.max(run);
        } else {
            run = 0;
        }
    }
    best
}

/// Root mean square.
pub fn rms(x: &[i16]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f64, n: usize, amp: f64) -> Vec<i16> {
        (0..n)
            .map(|i| (amp * (2.0 * std::f64::consts::PI * hz * i as f64 / 16_000.0).sin()) as i16)
            .collect()
    }

    #[test]
    fn finds_tones_and_measures_noise_and_gaps() {
        let mut x = tone(440.0, 16_000, 10_000.0);
        assert!((dominant_frequency(&x, 16_000, 100.0, 4_000.0) - 440.0).abs() < 1.0);
        assert!(tone_snr_db(&x, 16_000, 440.0) > 60.0);
        // Add noise at 1/10 of the amplitude: about 17 dB (sine vs uniform noise).
        let mut seed = 1u32;
        for v in x.iter_mut() {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *v += ((seed >> 16) as i16 as f64 / 32768.0 * 1_000.0 * 1.732) as i16;
        }
        let snr = tone_snr_db(&x, 16_000, 440.0);
        assert!((snr - 17.0).abs() < 1.5, "{snr}");
        let mut y = tone(1000.0, 16_000, 8_000.0);
        for v in &mut y[4_000..6_000] {
            *v = 0;
        }
        assert_eq!(longest_quiet_ms(&y, 16_000, 300.0), 120);
        assert_eq!(loud_span(&y, 16_000, 300.0), Some((0, 16_000)));
    }
}
