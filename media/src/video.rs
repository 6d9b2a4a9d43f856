//! First-frame video thumbnails through ffmpeg, when it is installed.
//!
//! ffmpeg is optional at run time: it is looked for once at start-up, and
//! when absent uploads say plainly that no video thumbnail was made. Untrusted
//! files are opened with the demuxer the sniffer chose (never left to ffmpeg's
//! guess), only the `file` protocol allowed, no stdin, and a time limit after
//! which the process is killed.

use crate::sniff::VideoContainer;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// A working ffmpeg.
#[derive(Debug, Clone)]
pub struct Ffmpeg {
    program: PathBuf,
    timeout: Duration,
}

/// The largest frame JPEG read back from ffmpeg.
const MAX_FRAME_BYTES: usize = 8 << 20;

impl Ffmpeg {
    /// Runs `program -version`; `Err` says why ffmpeg cannot be used.
    pub async fn detect(program: &str, timeout: Duration) -> Result<Self, String> {
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
                timeout,
            }),
            Ok(Ok(status)) => Err(format!("{program} -version exited with {status}")),
            Ok(Err(e)) => Err(format!("{program}: {e}")),
            Err(_) => Err(format!("{program} -version did not answer in 10 s")),
        }
    }

    /// The first video frame of `input`, scaled to fit a `max_px` box, as JPEG.
    pub async fn first_frame(
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
        let (status, out, err) = tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| format!("ffmpeg took longer than {} s", self.timeout.as_secs()))??;
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
