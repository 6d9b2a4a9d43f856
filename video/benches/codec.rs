//! VP8 as a call uses it, on the moving test card: CPU per picture to encode
//! and to decode (the process's CPU time over each pass, from /proc/self/stat),
//! bitrate and PSNR, at 640×480 and 1280×720, 30 fps, 10 s; then the same
//! clip through ffmpeg's libvpx encoder with the same settings (one pass, CBR
//! at the same bitrate, real-time deadline, speed 8, error resilient, no
//! look-ahead, the same thread count) as the reference, in the same run.
//!
//! cargo bench -p natter-video --bench codec

use natter_video::card::test_card;
use natter_video::{Decoded, EncoderSettings, Vp8Decoder, Vp8Encoder, Y4mHeader, Y4mWriter, psnr};
use std::process::Command;

const FPS: u32 = 30;
const SECONDS: u32 = 10;

/// This process's CPU time so far (user + system, every thread: libvpx's
/// encoder threads too), nanoseconds, from /proc/self/stat (10 ms ticks).
fn process_cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the ")" that ends the command name; utime and stime are
    // the 14th and 15th fields of the whole line.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (the state), so utime (14) is index 11 and
    // stime (15) index 12.
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    (field(11) + field(12)) * 10_000_000
}

fn main() {
    println!(
        "| size | encoder | threads | encode ms/frame (CPU) | decode ms/frame (CPU) | bitrate kbit/s (target) | PSNR dB (mean) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (w, h) in [(640u32, 480u32), (1280, 720)] {
        let frames: Vec<_> = (0..FPS * SECONDS).map(|n| test_card(w, h, n)).collect();
        let settings = EncoderSettings::for_call(w, h, FPS);
        let mut enc = Vp8Encoder::new(settings).expect("encoder");
        let mut dec = Vp8Decoder::new().expect("decoder");
        // Encode everything, then decode everything: each pass's process
        // CPU time is that codec's alone.
        let t = process_cpu_ns();
        let encoded: Vec<_> = frames
            .iter()
            .map(|f| enc.encode(f, false).expect("encode"))
            .collect();
        let enc_ns = process_cpu_ns() - t;
        let bytes: usize = encoded.iter().map(|e| e.data.len()).sum();
        let t = process_cpu_ns();
        let decoded: Vec<_> = encoded
            .iter()
            .map(|e| match dec.decode(&e.data).expect("decode") {
                Decoded::Picture(p) => p,
                _ => panic!("a picture did not decode"),
            })
            .collect();
        let dec_ns = process_cpu_ns() - t;
        let psnr_sum: f64 = frames
            .iter()
            .zip(&decoded)
            .map(|(f, p)| psnr(f, p).unwrap_or(0.0).min(99.0))
            .sum();
        let n = frames.len() as f64;
        let kbps = bytes as f64 * 8.0 / f64::from(SECONDS) / 1000.0;
        println!(
            "| {w}×{h} | natter-video (libvpx) | {} | {:.2} | {:.2} | {:.0} ({}) | {:.2} |",
            settings.threads,
            enc_ns as f64 / n / 1e6,
            dec_ns as f64 / n / 1e6,
            kbps,
            settings.bitrate_bps / 1000,
            psnr_sum / n
        );
        ffmpeg_reference(w, h, &frames, settings);
    }
}

/// The same clip through `ffmpeg -c:v libvpx` with the same settings.
fn ffmpeg_reference(w: u32, h: u32, frames: &[natter_video::I420Frame], s: EncoderSettings) {
    let dir = std::env::temp_dir().join(format!("natter-codec-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let src = dir.join("card.y4m");
    let out = dir.join("out.ivf");
    let file = std::fs::File::create(&src).expect("card");
    let mut wr =
        Y4mWriter::new(std::io::BufWriter::new(file), Y4mHeader::new(w, h, FPS)).expect("y4m");
    for f in frames {
        wr.write_frame(f).expect("write");
    }
    wr.finish().expect("flush");
    let kbps = format!("{}k", s.bitrate_bps / 1000);
    let run = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-benchmark", "-y", "-i"])
        .arg(&src)
        .args([
            "-c:v",
            "libvpx",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-b:v",
            &kbps,
            "-minrate",
            &kbps,
            "-maxrate",
            &kbps,
            "-bufsize",
            &kbps,
            "-undershoot-pct",
            "100",
            "-overshoot-pct",
            "15",
            "-qmin",
            "2",
            "-qmax",
            "56",
            "-lag-in-frames",
            "0",
            "-error-resilient",
            "1",
            "-static-thresh",
            "1",
            "-noise-sensitivity",
            "0",
            "-g",
            "3000",
            "-threads",
        ])
        .arg(s.threads.to_string())
        .arg(&out)
        .output();
    let Ok(run) = run else {
        println!("| {w}×{h} | ffmpeg libvpx | – | ffmpeg not found | | | |");
        return;
    };
    let err = String::from_utf8_lossy(&run.stderr);
    // "bench: utime=1.234s stime=… rtime=…": CPU time of the whole run
    // (reading the file and writing IVF are small beside encoding).
    let utime = err
        .lines()
        .find_map(|l| {
            l.split("utime=")
                .nth(1)?
                .split('s')
                .next()?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(f64::NAN);
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    let psnr_run = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-i"])
        .arg(&out)
        .arg("-i")
        .arg(&src)
        .args(["-lavfi", "psnr", "-f", "null", "-"])
        .output()
        .expect("ffmpeg psnr");
    let perr = String::from_utf8_lossy(&psnr_run.stderr);
    let avg = perr
        .lines()
        .find_map(|l| {
            l.split("average:")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(f64::NAN);
    println!(
        "| {w}×{h} | ffmpeg libvpx (same settings) | {} | {:.2} (whole run) | – | {:.0} ({}) | {:.2} |",
        s.threads,
        utime * 1000.0 / frames.len() as f64,
        size as f64 * 8.0 / f64::from(SECONDS) / 1000.0,
        s.bitrate_bps / 1000,
        avg
    );
    let _ = std::fs::remove_dir_all(&dir);
}
