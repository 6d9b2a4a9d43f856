//! Just enough WAV (RIFF, 16-bit PCM) to use a file as a microphone and to
//! record what a call receives. Input of any rate and channel count is mixed
//! to mono and resampled (linearly) to the call's 16 kHz.

use std::io::{Read, Write};
use std::path::Path;

/// Why a WAV file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    /// Reading or writing failed.
    #[error("wav: {0}")]
    Io(#[from] std::io::Error),
    /// Not a RIFF/WAVE file of 16-bit PCM.
    #[error("wav: {0}")]
    Format(String),
}

/// Mono 16-bit samples at a rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pcm {
    /// Samples per second.
    pub rate: u32,
    /// Mono samples.
    pub samples: Vec<i16>,
}

impl Pcm {
    /// Reads a WAV file (16-bit PCM, any rate, any channels), mixed to mono.
    pub fn read(path: &Path) -> Result<Pcm, WavError> {
        let mut bytes = Vec::new();
        std::fs::File::open(path)?.read_to_end(&mut bytes)?;
        Self::parse(&bytes)
    }

    /// Parses WAV bytes.
    pub fn parse(bytes: &[u8]) -> Result<Pcm, WavError> {
        let bad = |m: &str| WavError::Format(m.to_owned());
        if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
            return Err(bad("not a RIFF/WAVE file"));
        }
        let (mut rate, mut channels, mut bits) = (0u32, 0u16, 0u16);
        let mut pos = 12;
        while pos + 8 <= bytes.len() {
            let id = &bytes[pos..pos + 4];
            let len = u32::from_le_bytes([
                bytes[pos + 4],
                bytes[pos + 5],
                bytes[pos + 6],
                bytes[pos + 7],
            ]) as usize;
            let body = pos + 8;
            // Streamed WAVs (espeak-ng to a pipe) may declare 0 or 0xFFFFFFFF: take the rest.
            let end = if len == 0 || body + len > bytes.len() {
                bytes.len()
            } else {
                body + len
            };
            match id {
                b"fmt " if end - body >= 16 => {
                    let format = u16::from_le_bytes([bytes[body], bytes[body + 1]]);
                    channels = u16::from_le_bytes([bytes[body + 2], bytes[body + 3]]);
                    rate = u32::from_le_bytes([
                        bytes[body + 4],
                        bytes[body + 5],
                        bytes[body + 6],
                        bytes[body + 7],
                    ]);
                    bits = u16::from_le_bytes([bytes[body + 14], bytes[body + 15]]);
                    if format != 1 && format != 0xFFFE {
                        return Err(bad("only PCM WAV files are supported"));
                    }
                }
                b"data" => {
                    if bits != 16 || channels == 0 || rate == 0 {
                        return Err(bad(
                            "only 16-bit PCM with a fmt chunk before data is supported",
                        ));
                    }
                    let ch = channels as usize;
                    let samples = bytes[body..end]
                        .chunks_exact(2 * ch)
                        .map(|frame| {
                            let sum: i32 = frame
                                .chunks_exact(2)
                                .map(|s| i32::from(i16::from_le_bytes([s[0], s[1]])))
                                .sum();
                            (sum / ch as i32) as i16
                        })
                        .collect();
                    return Ok(Pcm { rate, samples });
                }
                _ => {}
            }
            pos = end + (end - body) % 2;
        }
        Err(bad("no data chunk"))
    }

    /// The same sound at `rate` (linear interpolation; fine for speech and tones).
    pub fn resample(&self, rate: u32) -> Pcm {
        if rate == self.rate || self.samples.is_empty() {
            return Pcm {
                rate,
                samples: self.samples.clone(),
            };
        }
        let n = (self.samples.len() as u64 * u64::from(rate) / u64::from(self.rate)) as usize;
        let step = f64::from(self.rate) / f64::from(rate);
        let samples = (0..n)
            .map(|i| {
                let x = i as f64 * step;
                let j = x as usize;
                let f = x - j as f64;
                let a = f64::from(self.samples[j.min(self.samples.len() - 1)]);
                let b = f64::from(self.samples[(j + 1).min(self.samples.len() - 1)]);
                (a + (b - a) * f).round() as i16
            })
            .collect();
        Pcm { rate, samples }
    }

    /// Writes a mono 16-bit WAV file.
    pub fn write(&self, path: &Path) -> Result<(), WavError> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        let data_len = (self.samples.len() * 2) as u32;
        f.write_all(b"RIFF")?;
        f.write_all(&(36 + data_len).to_le_bytes())?;
        f.write_all(b"WAVEfmt ")?;
        f.write_all(&16u32.to_le_bytes())?;
        f.write_all(&1u16.to_le_bytes())?; // PCM
        f.write_all(&1u16.to_le_bytes())?; // mono
        f.write_all(&self.rate.to_le_bytes())?;
        f.write_all(&(self.rate * 2).to_le_bytes())?;
        f.write_all(&2u16.to_le_bytes())?;
        f.write_all(&16u16.to_le_bytes())?;
        f.write_all(b"data")?;
        f.write_all(&data_len.to_le_bytes())?;
        for s in &self.samples {
            f.write_all(&s.to_le_bytes())?;
        }
        f.flush()?;
        Ok(())
    }

    /// A sine tone (for tests and `natter-cli call --tone`).
    pub fn tone(rate: u32, hz: f64, secs: f64, amplitude: f64) -> Pcm {
        let n = (f64::from(rate) * secs) as usize;
        let samples = (0..n)
            .map(|i| {
                let t = i as f64 / f64::from(rate);
                (amplitude * 32767.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16
            })
            .collect();
        Pcm { rate, samples }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_round_trip_and_resample() {
        let dir = std::env::temp_dir().join(format!("natter-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.wav");
        let tone = Pcm::tone(22_050, 440.0, 0.5, 0.5);
        tone.write(&p).unwrap();
        let back = Pcm::read(&p).unwrap();
        assert_eq!(back, tone);
        let r = back.resample(16_000);
        assert_eq!(r.rate, 16_000);
        assert_eq!(r.samples.len(), 8_000);
        assert!(Pcm::parse(b"RIFF\0\0\0\0WAVEjunk").is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
