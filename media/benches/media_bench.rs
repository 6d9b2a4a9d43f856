//! Media benchmark (not a test): upload throughput with hashing, download
//! throughput, and the time to thumbnail a 12-megapixel JPEG measured in the
//! same run as libvips' `vipsthumbnail` on the same file.
//!
//! `cargo bench -p natter-media --bench media_bench` (release). Installs
//! `libvips-tools` with apt when `vipsthumbnail` is missing and the bench runs
//! as root. Prints Markdown for BENCHMARKS.md.
//!
//! Environment: `MEDIA_BENCH_MB` (upload size, default 1024), `MEDIA_BENCH_DIR`
//! (where the fs backend writes; default: the system temp dir),
//! `MEDIA_BENCH_ROUNDS` (default 3).

use natter_common::clock::SystemClock;
use natter_common::testing::{TempDir, TestDb};
use natter_common::token::{Claims, TokenKeys};
use natter_media::MediaConfig;
use natter_media::header;
use natter_media::service::MediaService;
use natter_media::sniff::ImageFormat;
use natter_media::thumb::{self, ThumbOptions};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

/// CPU seconds (user + system) this process has used so far.
fn cpu_secs() -> f64 {
    // /proc/self/stat fields 14 and 15 (after the parenthesised name): clock ticks.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Field 14 is index 11 after the state field (index 0 = field 3); CLK_TCK is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let rounds = env_num("MEDIA_BENCH_ROUNDS", 3).max(1) as usize;
    println!("## media\n");
    machine();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut dirs = vec![("tmpfs", std::path::PathBuf::from("/dev/shm"))];
    dirs.push((
        "disk",
        std::env::var("MEDIA_BENCH_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| std::env::temp_dir()),
    ));
    for (label, dir) in dirs {
        if dir.is_dir() {
            rt.block_on(transfer(rounds, label, &dir));
        }
    }
    thumbnails(rounds.max(9));
}

fn machine() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "Machine: {cores} cores ({cpu}), {:.0} GiB, Linux {}.\n",
        mem as f64 / 1024.0 / 1024.0,
        kernel.trim()
    );
}

/// Pseudo-random bytes: incompressible, so nothing flatters the pipeline.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

async fn transfer(rounds: usize, label: &str, base_dir: &std::path::Path) {
    let mb = env_num("MEDIA_BENCH_MB", 512) as usize;
    let size = mb * 1024 * 1024;
    let dir = TempDir::new(&base_dir.join("natter-media-bench").display().to_string());
    let db = TestDb::sqlite().await;
    // Media checks tokens against auth's devices: its real schema and one device.
    natter_auth::store::for_db(&db.db)
        .migrate()
        .await
        .expect("auth's migrations");
    if let natter_common::Db::Sqlite(p) = &db.db {
        sqlx::raw_sql(
            "INSERT INTO accounts (user_id, number, created_at) VALUES ('bench', '+bench', 0);
             INSERT INTO devices (user_id, device_id, name, created_at, last_seen_at, generation)
             VALUES ('bench', 1, 'bench', 0, 0, 1);",
        )
        .execute(p)
        .await
        .expect("bench device");
    }
    let cfg = MediaConfig {
        max_upload_bytes: (size as u64).max(1 << 20),
        quota_bytes_per_user: 0,
        ..MediaConfig::default()
    };
    let tokens = Arc::new(TokenKeys::new(b"bench-signing-key-0123456789", &[]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let service = MediaService::build(
        cfg,
        &db.db,
        true,
        dir.path(),
        Arc::new(SystemClock),
        tokens.clone(),
        base.clone(),
    )
    .await
    .expect("media service");
    let app = service.router();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let token = tokens.sign(&Claims {
        sub: "bench".into(),
        dev: 1,
        generation: 1,
        iat: now,
        exp: now + 3600,
    });
    let http = reqwest::Client::new();
    println!(
        "Upload and download over HTTP/1.1 on loopback, client and server in one process \
         (2 tokio workers), fs backend on {label} ({}), SQLite metadata; {mb} MiB of random \
         bytes per request; {rounds} rounds.\n",
        base_dir.display()
    );
    let mut up = Vec::new();
    let mut up_cpu = Vec::new();
    let mut tus = Vec::new();
    let mut down = Vec::new();
    let mut last_hash: String;
    for round in 0..rounds {
        let data = bytes::Bytes::from(noise(size, round as u64 + 1));
        // Simple upload: stream, hash, sniff, write, fsync, rename.
        let cpu0 = cpu_secs();
        let t = Instant::now();
        let r = http
            .post(format!("{base}/v1/media"))
            .bearer_auth(&token)
            .body(data.clone())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "upload failed: {}", r.status());
        let v: serde_json::Value = r.json().await.unwrap();
        up.push(size as f64 / t.elapsed().as_secs_f64());
        up_cpu.push((cpu_secs() - cpu0) / (size as f64 / 1e9));
        last_hash = v["hash"].as_str().unwrap().to_owned();
        // Resumable: one PATCH with the whole file (different bytes: no dedupe).
        let data2 = bytes::Bytes::from(noise(size, 1000 + round as u64));
        let t = Instant::now();
        let r = http
            .post(format!("{base}/v1/media/uploads"))
            .bearer_auth(&token)
            .header("tus-resumable", "1.0.0")
            .header("upload-length", size.to_string())
            .send()
            .await
            .unwrap();
        let loc = r.headers()["location"].to_str().unwrap().to_owned();
        let r = http
            .patch(&loc)
            .bearer_auth(&token)
            .header("tus-resumable", "1.0.0")
            .header("upload-offset", "0")
            .header("content-type", "application/offset+octet-stream")
            .body(data2)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204, "PATCH failed");
        tus.push(size as f64 / t.elapsed().as_secs_f64());
        // Download with a token, counting bytes as they arrive.
        let t = Instant::now();
        let mut r = http
            .get(format!("{base}/v1/media/{last_hash}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let mut n = 0usize;
        while let Some(chunk) = r.chunk().await.unwrap() {
            n += chunk.len();
        }
        assert_eq!(n, size);
        down.push(size as f64 / t.elapsed().as_secs_f64());
    }
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max) / 1e9;
    let med = |v: &[f64]| median(v.to_vec()) / 1e9;
    println!("| transfer ({label}) | best GB/s | median GB/s |\n|---|---|---|");
    println!(
        "| simple upload (`POST /v1/media`): SHA-256 while streaming, sniff, write, fsync, rename | {:.2} | {:.2} |",
        best(&up),
        med(&up)
    );
    println!(
        "| resumable upload (TUS creation + one PATCH), same work plus the upload row | {:.2} | {:.2} |",
        best(&tus),
        med(&tus)
    );
    println!(
        "| download (`GET /v1/media/{{hash}}`) | {:.2} | {:.2} |",
        best(&down),
        med(&down)
    );
    println!(
        "\nCPU cost of a simple upload, client and server together (user + system, from \
         /proc/self/stat): {:.2} CPU-seconds per GB (median), i.e. {:.2} GB/s per fully used core.\n",
        median(up_cpu.clone()),
        1.0 / median(up_cpu)
    );
    // References: hashing alone, and the storage's own write + fsync speed.
    let data = noise(256 << 20, 9);
    let t = Instant::now();
    let h = natter_media::BlobHash::of(&data);
    let el = t.elapsed().as_secs_f64();
    let raw = dir.path().join("raw-write-test");
    let t = Instant::now();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&raw).unwrap();
        for c in data.chunks(4 << 20) {
            f.write_all(c).unwrap();
        }
        f.sync_all().unwrap();
    }
    let wl = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&raw);
    println!(
        "For reference in the same run: SHA-256 alone {:.2} GB/s on one core ({}…); writing 256 MiB + fsync to {label} {:.2} GB/s.\n",
        data.len() as f64 / el / 1e9,
        &h.to_hex()[..8],
        data.len() as f64 / wl / 1e9
    );
    db.cleanup().await;
}

/// A 4000 × 3000 (12 MP) photo-like JPEG: smooth gradients and shapes with
/// sensor-like noise, quality 90, so it compresses like a camera picture.
fn photo_jpeg() -> Vec<u8> {
    let (w, h) = (4000u32, 3000u32);
    let mut seed = 0x1234_5678_9ABC_DEF1u64;
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let n = (seed & 15) as i32 - 8;
        let fx = x as f32 / w as f32;
        let fy = y as f32 / h as f32;
        let r = 128.0 + 100.0 * (fx * 9.0 + fy * 3.0).sin();
        let g = 120.0 + 90.0 * (fy * 7.0 - fx * 2.0).cos();
        let b = 110.0 + 80.0 * ((fx - 0.5).hypot(fy - 0.5) * 40.0).sin();
        let px = |v: f32| (v as i32 + n).clamp(0, 255) as u8;
        image::Rgb([px(r), px(g), px(b)])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode(img.as_raw(), w, h, image::ExtendedColorType::Rgb8)
        .expect("encode the test photo");
    out
}

fn vipsthumbnail() -> Option<String> {
    let found = |p: &str| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if found("vipsthumbnail") {
        return Some("vipsthumbnail".into());
    }
    println!("(vipsthumbnail not found: installing libvips-tools with apt-get)\n");
    let _ = Command::new("apt-get").args(["update", "-qq"]).status();
    let _ = Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "libvips-tools",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    found("vipsthumbnail").then(|| "vipsthumbnail".into())
}

fn thumbnails(rounds: usize) {
    let dir = TempDir::new("natter-media-bench-thumb");
    let photo = photo_jpeg();
    let path = dir.path().join("photo-12mp.jpg");
    std::fs::write(&path, &photo).unwrap();
    let tiny = dir.path().join("tiny.jpg");
    let mut small = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut small, 90)
        .encode(
            &[128u8; 16 * 16 * 3],
            16,
            16,
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    std::fs::write(&tiny, &small).unwrap();
    println!(
        "Thumbnail of a 4000 × 3000 (12 MP) JPEG ({:.1} MB, quality 90, generated by the bench) \
         to a 320-pixel JPEG, median of {rounds} runs after one warm-up, same file, same run.\n",
        photo.len() as f64 / 1e6
    );
    let opts = ThumbOptions::default();
    let h = header::parse(ImageFormat::Jpeg, &photo).unwrap();
    let first = thumb::thumbnails(&photo, &h, &opts).unwrap();
    assert_eq!((first.thumb.width, first.thumb.height), (320, 240));
    std::fs::write(dir.path().join("natter-thumb.jpg"), &first.thumb.bytes).unwrap();
    let ours = || {
        // From the file, as vipsthumbnail does.
        let t = Instant::now();
        let data = std::fs::read(&path).unwrap();
        let _ = thumb::thumbnails(&data, &h, &opts).unwrap();
        t.elapsed().as_secs_f64() * 1e3
    };
    let general = || {
        // The general decoder's DCT-scaled path (progressive JPEGs take it).
        let t = Instant::now();
        let mut d = jpeg_decoder::Decoder::new(std::io::Cursor::new(&photo));
        d.scale(320, 320).unwrap();
        assert!(!d.decode().unwrap().is_empty());
        t.elapsed().as_secs_f64() * 1e3
    };
    println!(
        "| thumbnailer | min ms | median ms | median ratio to vipsthumbnail |\n|---|---|---|---|"
    );
    let Some(vips) = vipsthumbnail() else {
        let v: Vec<f64> = (0..rounds).map(|_| ours()).collect();
        println!("| natter | {:.1} | {:.1} | — |", min(&v), median(v.clone()));
        println!("| vipsthumbnail | not available (libvips-tools could not be installed) | | |");
        return;
    };
    let out = dir.path().join("vips.jpg");
    let run_vips = |input: &std::path::Path| {
        let t = Instant::now();
        let s = Command::new(&vips)
            .arg(input)
            .args(["--size", "320"])
            .arg("-o")
            .arg(format!("{}[Q=80]", out.display()))
            .status()
            .expect("run vipsthumbnail");
        assert!(s.success(), "vipsthumbnail failed");
        t.elapsed().as_secs_f64() * 1e3
    };
    let _ = run_vips(&path);
    // Interleaved, so both see the same load on a shared machine.
    let (mut o, mut g, mut v, mut st) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        o.push(ours());
        v.push(run_vips(&path));
        g.push(general());
        st.push(run_vips(&tiny));
    }
    let version = Command::new(&vips)
        .arg("--version")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default();
    let vm = median(v.clone());
    let row = |name: &str, x: &[f64]| {
        println!(
            "| {name} | {:.1} | {:.1} | {:.2} |",
            min(x),
            median(x.to_vec()),
            median(x.to_vec()) / vm
        );
    };
    row(
        "natter: read file, DC-only shrink-on-load decode, Lanczos-3 to 320 px, JPEG q80, plus the 32-px preview",
        &o,
    );
    row(
        "(natter's fallback for progressive JPEGs: jpeg-decoder DCT-scaled decode alone)",
        &g,
    );
    row(
        &format!("`vipsthumbnail photo.jpg --size 320 -o out.jpg[Q=80]` ({version}), wall time"),
        &v,
    );
    row(
        "`vipsthumbnail` start-up alone (same command on a 16 × 16 JPEG)",
        &st,
    );
    let pure: Vec<f64> = v.iter().zip(&st).map(|(a, b)| (a - b).max(0.001)).collect();
    println!(
        "\nvipsthumbnail minus its start-up, per round: median {:.1} ms; natter / that = {:.2}.",
        median(pure.clone()),
        median(o.clone()) / median(pure)
    );
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}
