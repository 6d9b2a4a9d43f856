//! Fuzz target bodies (feature `fuzzing`, and compiled in tests so the seed
//! corpora in `video/fuzz/seeds/` replay under `cargo test`). Each must return
//! without panicking for any input.

use crate::rtp::{Assembler, MAX_FRAME_BYTES};
use crate::{Decoded, Vp8Decoder, Y4mReader, Y4mWriter};
use bytes::Bytes;
use std::time::{Duration, Instant};

/// A Y4M stream as a camera file would be read: header, then frames (at
/// most 4). Every frame read has the header's size, and writing what was
/// read gives a stream that reads back the same.
pub fn y4m(data: &[u8]) {
    let Ok(mut reader) = Y4mReader::new(data) else {
        return;
    };
    let header = reader.header();
    let mut frames = Vec::new();
    while frames.len() < 4 {
        match reader.next_frame() {
            Ok(Some(f)) => {
                assert_eq!((f.width(), f.height()), (header.width, header.height));
                frames.push(f);
            }
            Ok(None) | Err(_) => break,
        }
    }
    let mut w = Y4mWriter::new(Vec::new(), header).expect("writing to memory");
    for f in &frames {
        w.write_frame(f).expect("a frame of the stream's size");
    }
    let bytes = w.finish().expect("flush to memory");
    let mut again = Y4mReader::new(&bytes[..]).expect("our own header reads back");
    assert_eq!(again.header().width, header.width);
    for f in &frames {
        assert_eq!(again.next_frame().ok().flatten().as_ref(), Some(f));
    }
}

/// Compressed pictures from an untrusted sender, through libvpx and our
/// copy out of its buffers: the input is frames, each after a 2-byte
/// little-endian length. Pictures that come out are never empty or oversized.
pub fn vp8_decode(data: &[u8]) {
    let Ok(mut dec) = Vp8Decoder::new() else {
        return;
    };
    let mut rest = data;
    for _ in 0..8 {
        let Some((len, tail)) = rest.split_first_chunk::<2>() else {
            break;
        };
        let len = usize::from(u16::from_le_bytes(*len)).min(tail.len());
        let (chunk, tail) = tail.split_at(len);
        rest = tail;
        if let Ok(Decoded::Picture(p)) = dec.decode(chunk) {
            assert!(p.width() > 0 && p.height() > 0);
            assert!(p.width() <= 16_384 && p.height() <= 16_384);
        }
    }
}

/// Received RTP packets from an untrusted sender, through reassembly and the
/// decoder. Each packet is a little header from the input — sequence step,
/// timestamp step, marker, payload length — then its payload; time moves
/// on 10 ms per packet. Frames that come out are within the size limit.
pub fn vp8_rtp(data: &[u8]) {
    vp8_rtp_run(data);
}

fn vp8_rtp_run(data: &[u8]) -> crate::rtp::AssemblyStats {
    let mut a = Assembler::new(Duration::from_millis(100));
    let mut dec = Vp8Decoder::new().ok();
    let t0 = Instant::now();
    let (mut seq, mut ts) = (0u16, 0u32);
    let mut rest = data;
    let mut n = 0u32;
    while rest.len() >= 4 && n < 256 {
        let (head, tail) = rest.split_at(4);
        // Steps of -8..=7: losses, duplicates and reordering.
        seq = seq.wrapping_add_signed(i16::from(head[0] as i8) / 16);
        ts = ts.wrapping_add(u32::from(head[1]) * 300);
        let marker = head[2] & 1 == 1;
        let len = usize::from(head[3]).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        n += 1;
        let now = t0 + Duration::from_millis(u64::from(n) * 10);
        for f in a.push(seq, ts, marker, &Bytes::copy_from_slice(payload), now) {
            assert!(f.data.len() <= MAX_FRAME_BYTES);
            if let Some(d) = dec.as_mut()
                && !matches!(d.decode(&f.data), Ok(Decoded::Picture(_)))
            {
                a.decoder_failed();
            }
        }
        let _ = a.poll(now);
    }
    let s = a.stats();
    assert!(s.frames <= u64::from(n));
    s
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    fn seeds_dir() -> PathBuf {
        PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("fuzz/seeds")
    }

    fn replay(target: &str, f: fn(&[u8])) {
        let dir = seeds_dir().join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            f(&data);
            for cut in (0..data.len()).step_by((data.len() / 64).max(1)) {
                f(&data[..cut]);
            }
            n += 1;
        }
        assert!(n >= 3, "{target}: only {n} seeds in {}", dir.display());
    }

    #[test]
    fn the_rtp_seeds_carry_real_frames() {
        let seed = |name: &str| std::fs::read(seeds_dir().join("vp8_rtp").join(name)).unwrap();
        let clean = super::vp8_rtp_run(&seed("in-order.bin"));
        assert_eq!((clean.frames, clean.keyframes), (4, 2), "{clean:?}");
        // One packet of the first (key)frame lost: nothing decodable until
        // the next keyframe (the fourth frame).
        let lossy = super::vp8_rtp_run(&seed("one-lost.bin"));
        assert_eq!(lossy.keyframes, 1, "{lossy:?}");
        assert!(lossy.packets_lost >= 1, "{lossy:?}");
    }

    #[test]
    fn seeds_replay_without_panics() {
        replay("y4m", super::y4m);
        replay("vp8_decode", super::vp8_decode);
        replay("vp8_rtp", super::vp8_rtp);
    }
}
