//! First-frame video thumbnails through ffmpeg, when it is installed.
//!
//! ffmpeg is optional at run time: it is looked for once at start-up, and
//! when absent uploads say plainly that no video thumbnail was made. Untrusted
//! files are opened with the demuxer the sniffer chose (never left to ffmpeg's
//! guess), only the `file` protocol allowed, no stdin, and a time limit after
//! which the process is killed.
//!
//! Each run is a whole process with its own memory and threads, so the number
//! running at once is capped (`media.ffmpeg_concurrency`): a run needs an
//! [`FfmpegSlot`], which [`Ffmpeg::slot`] hands out, waiting at most
//! `media.ffmpeg_queue_secs`. Past that the video is stored without a
//! thumbnail ([`VideoError::Busy`]) rather than queueing without end, since
//! one user could otherwise start a process per upload.

use crate::sniff::VideoContainer;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How ffmpeg may be run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FfmpegLimits {
    /// Longest one run may take (`media.ffmpeg_timeout_secs`).
    pub timeout: Duration,
    /// Runs at once, process-wide (`media.ffmpeg_concurrency`; at least 1).
    pub concurrency: usize,
    /// Longest a run waits for a free slot (`media.ffmpeg_queue_secs`).
    pub queue_wait: Duration,
}

impl From<&crate::MediaConfig> for FfmpegLimits {
    fn from(cfg: &crate::MediaConfig) -> Self {
        Self {
            timeout: Duration::from_secs(u64::from(cfg.ffmpeg_timeout_secs)),
            concurrency: cfg.ffmpeg_concurrency,
            queue_wait: Duration::from_secs(u64::from(cfg.ffmpeg_queue_secs)),
        }
    }
}

/// Why no frame was made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VideoError {
    /// Every slot stayed taken for the whole queue wait.
    #[error(
        "the server was busy making other video thumbnails ({running} at once, media.ffmpeg_concurrency) for {waited_secs} s"
    )]
    Busy {
        /// The cap.
        running: usize,
        /// How long this run waited.
        waited_secs: u64,
    },
    /// ffmpeg could not be started, failed, or took too long.
    #[error("{0}")]
    Failed(String),
}

/// A working ffmpeg.
#[derive(Debug, Clone)]
pub struct Ffmpeg {
    program: PathBuf,
    limits: FfmpegLimits,
    slots: Arc<Semaphore>,
}

/// Leave to start one ffmpeg process; the slot is free again when the run
/// that consumed it ends.
#[derive(Debug)]
pub struct FfmpegSlot {
    _permit: OwnedSemaphorePermit,
}

/// The largest frame JPEG read back from ffmpeg.
const MAX_FRAME_BYTES: usize = 8 << 20;

impl Ffmpeg {
    /// Runs `program -version`; `Err` says why ffmpeg cannot be used.
    pub async fn detect(program: &str, limits: FfmpegLimits) -> Result<Self, String> {
        let run = Command::new(program)
            .args(["-hide_banner", "-version"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status();
        match tokio::time::timeout(Duration::from_secs(10), run).await {
            Ok(Ok(status)) if status.success() => Ok(Self {
                program: PathBuf::from(program),
                limits,
                // A cap of 0 would turn every video away; config validation
                // refuses it, and this keeps the type safe on its own.
                slots: Arc::new(Semaphore::new(limits.concurrency.max(1))),
            }),
            Ok(Ok(status)) => Err(format!("{program} -version exited with {status}")),
            Ok(Err(e)) => Err(format!("{program}: {e}")),
            Err(_) => Err(format!("{program} -version did not answer in 10 s")),
        }
    }

    /// A slot to run ffmpeg, waiting at most the queue wait for one.
    pub async fn slot(&self) -> Result<FfmpegSlot, VideoError> {
        let busy = || VideoError::Busy {
            running: self.limits.concurrency.max(1),
            waited_secs: self.limits.queue_wait.as_secs(),
        };
        // A zero wait still takes a slot that is free right now.
        let permit =
            tokio::time::timeout(self.limits.queue_wait, self.slots.clone().acquire_owned())
                .await
                .map_err(|_| busy())?
                .map_err(|_| busy())?;
        Ok(FfmpegSlot { _permit: permit })
    }

    /// The first video frame of `input`, scaled to fit a `max_px` box, as JPEG.
    /// Needs a slot, which it holds until the process has exited.
    pub async fn first_frame(
        &self,
        slot: FfmpegSlot,
        input: &Path,
        container: VideoContainer,
        max_px: u32,
    ) -> Result<Vec<u8>, VideoError> {
        let frame = self.run(input, container, max_px).await;
        // The child has exited, or was killed when `run` dropped it
        // (`kill_on_drop`): only now may another start.
        drop(slot);
        frame.map_err(VideoError::Failed)
    }

    async fn run(
        &self,
        input: &Path,
        container: VideoContainer,
        max_px: u32,
    ) -> Result<Vec<u8>, String> {
        let demuxer = match container {
            VideoContainer::Mp4 => "mov",
            VideoContainer::Matroska => "matroska",
        };
        let scale = format!("scale=w={max_px}:h={max_px}:force_original_aspect_ratio=decrease");
        let mut child = Command::new(&self.program)
            .args([
                "-nostdin",
                "-hide_banner",
                "-loglevel",
                "error",
                "-protocol_whitelist",
                "file",
                "-f",
                demuxer,
                "-i",
            ])
            .arg(input)
            .args([
                "-map",
                "0:v:0",
                "-frames:v",
                "1",
                "-an",
                "-sn",
                "-dn",
                "-vf",
                &scale,
            ])
            .args(["-f", "image2pipe", "-c:v", "mjpeg", "-q:v", "3", "pipe:1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start ffmpeg: {e}"))?;
        let mut stdout = child.stdout.take().ok_or("ffmpeg has no stdout")?;
        let mut stderr = child.stderr.take().ok_or("ffmpeg has no stderr")?;
        let work = async {
            let mut out = Vec::new();
            let mut err = Vec::new();
            let mut out_r = (&mut stdout).take(MAX_FRAME_BYTES as u64 + 1);
            let mut err_r = (&mut stderr).take(64 * 1024);
            let (r1, r2) = tokio::join!(out_r.read_to_end(&mut out), err_r.read_to_end(&mut err));
            r1.map_err(|e| format!("reading ffmpeg output: {e}"))?;
            r2.map_err(|e| format!("reading ffmpeg errors: {e}"))?;
            let status = child
                .wait()
                .await
                .map_err(|e| format!("waiting for ffmpeg: {e}"))?;
            Ok::<_, String>((status, out, err))
        };
        let timeout = self.limits.timeout;
        let (status, out, err) = tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| format!("ffmpeg took longer than {} s", timeout.as_secs()))??;
        if !status.success() || out.is_empty() {
            let msg = String::from_utf8_lossy(&err);
            let first = msg.lines().next().unwrap_or("no output").trim();
            return Err(format!("ffmpeg could not read a frame: {first}"));
        }
        if out.len() > MAX_FRAME_BYTES {
            return Err("ffmpeg frame is unexpectedly large".into());
        }
        Ok(out)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use natter_common::testing::TempDir;
    use std::time::Instant;

    /// A stand-in for ffmpeg in `dir`: answers `-version`; otherwise marks
    /// itself running (a file per process), logs how many are running, waits
    /// for a `release` file (20 s at most) and prints a fake frame.
    fn fake_ffmpeg(dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let script = format!(
            r#"#!/bin/sh
case "$*" in *-version*) exit 0 ;; esac
d='{}'
touch "$d/running.$$"
ls "$d" | grep -c '^running\.' >> "$d/log"
i=0
while [ ! -e "$d/release" ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done
rm -f "$d/running.$$"
printf frame
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

    async fn wait_for_running(dir: &Path, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while running(dir) < n {
            assert!(
                Instant::now() < deadline,
                "{n} fake ffmpeg runs never started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn fake(dir: &Path, concurrency: usize, queue_secs: u64) -> Ffmpeg {
        let limits = FfmpegLimits {
            timeout: Duration::from_secs(60),
            concurrency,
            queue_wait: Duration::from_secs(queue_secs),
        };
        let program = fake_ffmpeg(dir);
        Ffmpeg::detect(program.to_str().unwrap(), limits)
            .await
            .unwrap()
    }

    fn spawn_run(
        ffmpeg: &Ffmpeg,
        input: &Path,
    ) -> tokio::task::JoinHandle<Result<Vec<u8>, VideoError>> {
        let (ffmpeg, input) = (ffmpeg.clone(), input.to_path_buf());
        tokio::spawn(async move {
            let slot = ffmpeg.slot().await?;
            ffmpeg
                .first_frame(slot, &input, VideoContainer::Mp4, 320)
                .await
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_ffmpeg_processes_than_the_cap_run_at_once() {
        let tmp = TempDir::new("natter-fake-ffmpeg");
        let dir = tmp.path();
        let ffmpeg = fake(dir, 2, 60).await;
        let input = dir.join("input.mp4");
        std::fs::write(&input, b"video").unwrap();
        let runs: Vec<_> = (0..6).map(|_| spawn_run(&ffmpeg, &input)).collect();
        wait_for_running(dir, 2).await;
        // Time for the other four to start, were they not held back.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(running(dir), 2);
        std::fs::write(dir.join("release"), b"").unwrap();
        for run in runs {
            assert_eq!(run.await.unwrap().unwrap(), b"frame");
        }
        let log = std::fs::read_to_string(dir.join("log")).unwrap();
        let seen: Vec<usize> = log.lines().map(|l| l.trim().parse().unwrap()).collect();
        assert_eq!(seen.len(), 6, "every run happened: {seen:?}");
        assert!(
            seen.iter().all(|&n| n <= 2),
            "more than 2 at once: {seen:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_that_finds_no_free_slot_in_time_is_skipped_not_started() {
        let tmp = TempDir::new("natter-fake-ffmpeg");
        let dir = tmp.path();
        let ffmpeg = fake(dir, 1, 1).await;
        let input = dir.join("input.mp4");
        std::fs::write(&input, b"video").unwrap();
        let first = spawn_run(&ffmpeg, &input);
        wait_for_running(dir, 1).await;
        let asked = Instant::now();
        let second = ffmpeg.slot().await.unwrap_err();
        assert!(
            asked.elapsed() >= Duration::from_millis(900),
            "did not wait"
        );
        assert_eq!(
            second,
            VideoError::Busy {
                running: 1,
                waited_secs: 1
            }
        );
        assert!(second.to_string().contains("media.ffmpeg_concurrency"));
        // Nothing was started for it.
        assert_eq!(
            std::fs::read_to_string(dir.join("log"))
                .unwrap()
                .lines()
                .count(),
            1
        );
        std::fs::write(dir.join("release"), b"").unwrap();
        assert_eq!(first.await.unwrap().unwrap(), b"frame");
        // The slot is free again once the run is over; a zero wait takes a free one.
        let no_wait = Ffmpeg {
            limits: FfmpegLimits {
                queue_wait: Duration::ZERO,
                ..ffmpeg.limits
            },
            ..ffmpeg.clone()
        };
        let slot = no_wait.slot().await.unwrap();
        assert!(matches!(no_wait.slot().await, Err(VideoError::Busy { .. })));
        assert_eq!(
            no_wait
                .first_frame(slot, &input, VideoContainer::Mp4, 320)
                .await
                .unwrap(),
            b"frame"
        );
    }
}
