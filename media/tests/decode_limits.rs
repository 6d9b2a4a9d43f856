//! The limits on thumbnailing over real HTTP, on both backends: the ffmpeg
//! concurrency cap (with a stand-in ffmpeg that waits to be released), the
//! process-wide decode memory budget, and image headers that declare their
//! size twice (a second JPEG frame header, a GIF frame larger than its screen).

#[macro_use]
mod common;

use common::*;
use reqwest::StatusCode;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

both_backends!(
    videos_wait_for_a_free_ffmpeg_slot_and_are_stored_without_a_thumbnail_when_none_frees,
    images_needing_more_than_the_whole_decode_budget_are_refused,
    a_jpeg_with_a_second_larger_frame_header_is_refused,
    a_gif_frame_larger_than_its_screen_is_held_to_the_pixel_limit,
);

/// A stand-in for ffmpeg in `dir`: answers `-version`; otherwise marks itself
/// running, waits for a `release` file (20 s at most) and prints `frame.jpg`.
fn fake_ffmpeg(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(dir.join("frame.jpg"), jpeg(320, 180)).unwrap();
    let script = format!(
        r#"#!/bin/sh
case "$*" in *-version*) exit 0 ;; esac
d='{}'
touch "$d/running.$$"
echo started >> "$d/log"
i=0
while [ ! -e "$d/release" ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done
rm -f "$d/running.$$"
cat "$d/frame.jpg"
"#,
        dir.display()
    );
    let path = dir.join("ffmpeg");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn running(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("running."))
        })
        .count()
}

/// Bytes that sniff as an MP4 (ffmpeg here is a stand-in and never reads them).
fn mp4(seed: u64) -> Vec<u8> {
    let mut v = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom".to_vec();
    v.extend(noise(4096, seed));
    v
}

async fn videos_wait_for_a_free_ffmpeg_slot_and_are_stored_without_a_thumbnail_when_none_frees(
    b: Backend,
) {
    let fake = natter_common::testing::TempDir::new("natter-fake-ffmpeg");
    let dir = fake.path().to_path_buf();
    let program = fake_ffmpeg(&dir);
    let srv = Server::with(b, |c| {
        c.ffmpeg_path = program.to_string_lossy().into_owned();
        c.ffmpeg_concurrency = 1;
        c.ffmpeg_queue_secs = 1;
    })
    .await;
    let first_video = mp4(1);
    let first = srv.upload("alice", &first_video, "");
    let second = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while running(&dir) < 1 {
            assert!(Instant::now() < deadline, "ffmpeg never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The only slot is taken: this one waits a second, then goes without.
        let r = srv.upload("bob", &mp4(2), "").await;
        let ran = std::fs::read_to_string(dir.join("log")).unwrap();
        std::fs::write(dir.join("release"), b"").unwrap();
        (r, ran.lines().count())
    };
    let (first, (second, started)) = tokio::join!(first, second);
    assert_eq!(started, 1, "a second ffmpeg was started past the cap");
    assert_eq!(second.status, StatusCode::CREATED);
    let v = second.json();
    assert_eq!(v["thumbnail"]["status"], "none", "{v}");
    let reason = v["thumbnail"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("no video thumbnail: the server was busy making other video thumbnails (1 at once, media.ffmpeg_concurrency) for 1 s"),
        "{reason}"
    );
    // The run that had the slot made its thumbnail.
    assert_eq!(first.status, StatusCode::CREATED);
    let v = first.json();
    assert_eq!(v["thumbnail"]["status"], "created", "{v}");
    assert_eq!(v["thumbnail"]["width"], 320);
    assert_eq!(running(&dir), 0);
    srv.cleanup().await;
}

async fn images_needing_more_than_the_whole_decode_budget_are_refused(b: Backend) {
    // The smallest budget the pixel limit allows: 100 000 pixels × 12 bytes,
    // plus 200 KiB.
    let srv = Server::with(b, |c| {
        c.max_image_pixels = 100_000;
        c.decode_memory_bytes = 1_200_000 + (200 << 10);
    })
    .await;
    // 300 × 300 needs 1.08 MB for its pixels, plus the file.
    let photo = jpeg(300, 300);
    let r = srv.upload("alice", &photo, "").await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["thumbnail"]["status"], "created");
    // The same picture with 400 KB after its end: the file is held in memory
    // while it decodes, so it no longer fits the whole budget.
    let mut padded = photo.clone();
    padded.extend(noise(400_000, 9));
    let r = srv.upload("alice", &padded, "").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "image_too_large"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let message = r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("decodes at most 1404928 bytes at once"),
        "{message}"
    );
    assert_eq!(srv.staging_count().await, 0);
    srv.cleanup().await;
}

async fn a_jpeg_with_a_second_larger_frame_header_is_refused(b: Backend) {
    let srv = Server::start(b).await;
    let photo = jpeg(64, 48);
    // After the scan, before the end of image: a progressive frame header
    // declaring 60000 × 60000.
    let mut tricked = photo[..photo.len() - 2].to_vec();
    tricked.extend([0xFF, 0xC2, 0x00, 0x11, 0x08, 0xEA, 0x60, 0xEA, 0x60]);
    tricked.extend([3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1, 0xFF, 0xD9]);
    let r = srv.upload("alice", &tricked, "").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "corrupt_image")
    );
    let message = r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("frame headers declare different dimensions"),
        "{message}"
    );
    assert_eq!(srv.staging_count().await, 0);
    srv.cleanup().await;
}

async fn a_gif_frame_larger_than_its_screen_is_held_to_the_pixel_limit(b: Backend) {
    let srv = Server::start(b).await;
    // A 10 × 10 logical screen whose image descriptor declares 12000 × 12000
    // (144 megapixels, over the default limit of 100).
    let mut gif = b"GIF89a\x0a\x00\x0a\x00\x00\x00\x00".to_vec();
    gif.extend([0x21, 0xF9, 4, 0, 0, 0, 0, 0]);
    gif.extend([0x2C, 0, 0, 0, 0]);
    gif.extend(12000u16.to_le_bytes());
    gif.extend(12000u16.to_le_bytes());
    gif.extend([0, 2, 2, 0x44, 0x01, 0, 0x3B]);
    let r = srv.upload("alice", &gif, "").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "image_too_large")
    );
    let message = r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("12000×12000"), "{message}");
    assert_eq!(srv.staging_count().await, 0);
    srv.cleanup().await;
}
