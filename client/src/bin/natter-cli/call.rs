//! `call`, `answer`, `calls` (the call log), `ice-servers`, `test-card`.

use crate::{Ctx, Run};
use clap::Args;
use natter_client::call::wav::Pcm;
use natter_client::call::{AudioOptions, CallOptions, CallReport, VideoAction, VideoOptions};
use natter_client::{Chat, ConnectOptions, Event, Events};
use std::path::PathBuf;
use std::time::Duration;

/// Media flags shared by `call` and `answer`.
#[derive(Args)]
pub(crate) struct MediaArgs {
    /// WAV file to use as the microphone (played once, then silence).
    #[arg(long)]
    play: Option<PathBuf>,
    /// Write what the other side sends to this WAV file (16 kHz mono).
    #[arg(long)]
    record: Option<PathBuf>,
    /// Hang up this many seconds after the call connects (default: when the
    /// --play file has been sent, plus one second; without --play, wait for
    /// the other side).
    #[arg(long)]
    duration: Option<f64>,
    /// Only use TURN relays (hides your address from the other side).
    #[arg(long)]
    relay_only: bool,
    /// Turn Opus in-band FEC off.
    #[arg(long)]
    no_fec: bool,
    /// Opus bitrate in bits per second.
    #[arg(long, default_value_t = 32_000)]
    bitrate: i32,
    /// Local UDP address for media.
    #[arg(long, default_value = "0.0.0.0:0")]
    bind: String,
    /// Make it a video call with this Y4M file (4:2:0) as the camera, played
    /// in a loop; `natter-cli test-card` writes one.
    #[arg(long, value_name = "IN.y4m")]
    video: Option<PathBuf>,
    /// Write the video the other side sends to this Y4M file (a video call
    /// even without --video: receive only).
    #[arg(long, value_name = "OUT.y4m")]
    record_video: Option<PathBuf>,
    /// Start with the camera off (black pictures; no renegotiation).
    #[arg(long)]
    camera_off: bool,
    /// Most bits per second the video encoder may use (the bandwidth
    /// estimate sets it below this).
    #[arg(long, default_value_t = 2_500_000)]
    max_video_bitrate: u32,
    /// Do something to the video SECS after the call connects:
    /// `camera-off`, `camera-on`, `video-on` (adds video with the --video
    /// file; caller only) or `video-off` (caller only). Repeatable, e.g.
    /// `--at 5:video-on --at 20:camera-off`.
    #[arg(long, value_name = "SECS:ACTION")]
    at: Vec<String>,
}

impl MediaArgs {
    fn options(&self) -> anyhow::Result<CallOptions> {
        let play = match &self.play {
            Some(p) => {
                Some(Pcm::read(p).map_err(|e| anyhow::anyhow!("--play {}: {e}", p.display()))?)
            }
            None => None,
        };
        let hangup_after = match (self.duration, &play) {
            (Some(d), _) => Some(Duration::from_secs_f64(d)),
            (None, Some(p)) => Some(Duration::from_secs_f64(
                p.samples.len() as f64 / f64::from(p.rate) + 1.0,
            )),
            (None, None) => None,
        };
        let mut video_actions = Vec::new();
        for a in &self.at {
            let (secs, action) = a
                .split_once(':')
                .and_then(|(t, act)| {
                    Some((
                        t.parse::<f64>()
                            .ok()
                            .filter(|t| (0.0..=86_400.0).contains(t))?,
                        act,
                    ))
                })
                .ok_or_else(|| anyhow::anyhow!("--at {a}: want SECS:ACTION"))?;
            let action = match action {
                "camera-off" => VideoAction::CameraOff,
                "camera-on" => VideoAction::CameraOn,
                "video-off" => VideoAction::Stop,
                "video-on" => VideoAction::Start(
                    self.video
                        .clone()
                        .ok_or_else(|| anyhow::anyhow!("--at {a}: video-on needs --video"))?,
                ),
                other => anyhow::bail!(
                    "--at {a}: unknown action {other:?} (camera-off, camera-on, video-on, video-off)"
                ),
            };
            video_actions.push((Duration::from_secs_f64(secs), action));
        }
        // With a scheduled video-on, the call starts as voice and the camera
        // comes later.
        let starts_with_video = !video_actions
            .iter()
            .any(|(_, a)| matches!(a, VideoAction::Start(_)));
        let camera = self.video.clone().filter(|_| starts_with_video);
        let video = (camera.is_some() || self.record_video.is_some()).then(|| VideoOptions {
            camera,
            record: self.record_video.clone(),
            start_muted: self.camera_off,
            max_bitrate_bps: self.max_video_bitrate.max(100_000),
            ..VideoOptions::default()
        });
        if let Some(camera) = &self.video {
            natter_client::call::video::check_camera(camera)
                .map_err(|e| anyhow::anyhow!("--video {e}"))?;
        }
        Ok(CallOptions {
            video,
            video_actions,
            audio: AudioOptions {
                fec: !self.no_fec,
                bitrate: self.bitrate,
                ..AudioOptions::default()
            },
            play,
            relay_only: self.relay_only,
            hangup_after,
            bind: self.bind.clone(),
            ..CallOptions::default()
        })
    }

    fn finish(&self, r: &CallReport) -> anyhow::Result<()> {
        if let Some(path) = &self.record {
            r.recording
                .write(path)
                .map_err(|e| anyhow::anyhow!("--record {}: {e}", path.display()))?;
        }
        let pair = r
            .stats
            .selected_pair
            .as_ref()
            .map(|(l, rm)| format!("{l}->{rm}"))
            .unwrap_or_else(|| "-".into());
        println!(
            "call {} with {} ended ({}); setup {} ms; path {pair}; received {} packets ({} lost, {} rebuilt by FEC), {:.1} s of audio{}",
            r.call_id,
            r.peer,
            r.ended_by_peer.map_or("hung up here", |e| e.as_str()),
            r.setup_time.map_or(0, |d| d.as_millis()),
            r.stats.packets_received,
            r.stats.lost,
            r.stats.recovered,
            r.recording.samples.len() as f64 / f64::from(r.recording.rate),
            self.record
                .as_ref()
                .map(|p| format!(" -> {}", p.display()))
                .unwrap_or_default(),
        );
        if let Some(v) = &r.stats.video {
            println!(
                "video: sent {} frames ({} keyframes, {} asked for), encoder at {} kbit/s at the end; received {} frames ({} keyframes), {} packets lost, {} frames skipped, {} keyframe requests; {} pictures shown, longest freeze {} ms; A/V offset {}{}",
                v.frames_sent,
                v.keyframes_sent,
                v.keyframe_requests_received,
                v.bitrate_log.last().map_or(0, |b| b.1 / 1000),
                v.frames_received,
                v.keyframes_received,
                v.packets_lost,
                v.frames_skipped,
                v.keyframe_requests_sent,
                v.render.pictures,
                v.render.longest_freeze_ms,
                v.av_offset_ms
                    .map_or("not measured".to_owned(), |o| format!("{o} ms")),
                self.record_video
                    .as_ref()
                    .map(|p| format!(" -> {}", p.display()))
                    .unwrap_or_default(),
            );
        }
        Ok(())
    }
}

/// Closes the socket after what is queued on it has been written, waiting at
/// most 3 s. Why: the call's hang-up is queued just before, and exiting at once
/// could drop it unsent; the server then kept the call for a reconnect (30 s),
/// and the other end waited until its ICE gave up (25 s) and reported a failure.
async fn close_after_flush(chat: &Chat, events: &mut Events) {
    chat.close();
    let closed = async {
        while let Some(ev) = events.recv().await {
            if matches!(ev, Event::Closed { .. }) {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), closed).await;
}

#[derive(Args)]
pub(crate) struct CallCmd {
    /// Who: +<number> or a user id.
    user: String,
    #[command(flatten)]
    media: MediaArgs,
}

impl Run for CallCmd {
    async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let account = ctx.account()?;
        let to = ctx.user(&account, &self.user).await?;
        let opts = self.media.options()?;
        let (chat, mut events) = Chat::connect(account.clone(), ConnectOptions::default());
        wait_connected(&mut events).await?;
        eprintln!("calling {to}…");
        let report = natter_client::call::place(&chat, &mut events, &account, to, opts).await;
        close_after_flush(&chat, &mut events).await;
        self.media.finish(&report?)
    }
}

#[derive(Args)]
pub(crate) struct AnswerCmd {
    /// Only answer calls from this user (+<number> or user id).
    #[arg(long)]
    from: Option<String>,
    /// Give up after this many seconds without an incoming call.
    #[arg(long, default_value_t = 600)]
    wait: u64,
    #[command(flatten)]
    media: MediaArgs,
}

impl Run for AnswerCmd {
    async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let account = ctx.account()?;
        let from = match &self.from {
            Some(f) => Some(ctx.user(&account, f).await?),
            None => None,
        };
        let mut opts = self.media.options()?;
        // The callee waits for the caller to hang up unless told otherwise.
        if self.media.duration.is_none() {
            opts.hangup_after = None;
        }
        let (chat, mut events) = Chat::connect(account.clone(), ConnectOptions::default());
        wait_connected(&mut events).await?;
        eprintln!("waiting for a call…");
        let report = natter_client::call::answer(
            &chat,
            &mut events,
            &account,
            from,
            opts,
            Duration::from_secs(self.wait),
        )
        .await;
        close_after_flush(&chat, &mut events).await;
        self.media.finish(&report?)
    }
}

#[derive(Args)]
pub(crate) struct CallLogCmd {
    /// Most entries.
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

impl Run for CallLogCmd {
    async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let account = ctx.account()?;
        let log = ctx
            .api
            .call_log(&account.token().await?, None, Some(self.limit))
            .await?;
        for c in log.calls {
            println!(
                "{} {} {} {} {} {} ms ({})",
                c.started_at,
                c.direction,
                c.peer,
                c.media.as_str(),
                c.outcome,
                c.duration_ms,
                c.reason.as_str()
            );
        }
        Ok(())
    }
}

#[derive(Args)]
pub(crate) struct IceServersCmd {}

impl Run for IceServersCmd {
    async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let account = ctx.account()?;
        let s = ctx.api.ice_servers(&account.token().await?).await?;
        println!("{}", serde_json::to_string_pretty(&s)?);
        Ok(())
    }
}

async fn wait_connected(events: &mut natter_client::Events) -> anyhow::Result<()> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Some(Event::Synced)) => return Ok(()),
            Ok(Some(Event::Closed { reason, .. })) => anyhow::bail!("connection closed: {reason}"),
            Ok(Some(_)) => {}
            Ok(None) => anyhow::bail!("connection closed"),
            Err(_) => anyhow::bail!("could not connect within 30 s"),
        }
    }
}

/// Writes a moving test card whose pictures carry their frame number, to use
/// as a camera (`call --video`) or a browser's fake camera.
#[derive(Args)]
pub(crate) struct TestCardCmd {
    /// Where to write the Y4M file.
    out: PathBuf,
    /// Picture size, WIDTHxHEIGHT.
    #[arg(long, default_value = "640x480")]
    size: String,
    /// Frames per second.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Length in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
}

impl Run for TestCardCmd {
    async fn run(self, _ctx: &Ctx) -> anyhow::Result<()> {
        let (w, h) = self
            .size
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
            .filter(|&(w, h)| {
                (16..=natter_video::MAX_DIMENSION).contains(&w)
                    && (16..=natter_video::MAX_DIMENSION).contains(&h)
            })
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--size {}: want WIDTHxHEIGHT, 16 to {} each",
                    self.size,
                    natter_video::MAX_DIMENSION
                )
            })?;
        anyhow::ensure!((1..=120).contains(&self.fps), "--fps must be 1 to 120");
        anyhow::ensure!(
            self.seconds > 0.0 && self.seconds <= 3600.0,
            "--seconds must be above 0 and at most 3600"
        );
        let frames = (self.seconds * f64::from(self.fps)).round() as u32;
        let file = std::fs::File::create(&self.out)
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.out.display()))?;
        let mut writer = natter_video::Y4mWriter::new(
            std::io::BufWriter::with_capacity(1 << 20, file),
            natter_video::Y4mHeader::new(w, h, self.fps),
        )?;
        for n in 0..frames {
            writer.write_frame(&natter_video::card::test_card(w, h, n))?;
        }
        writer.finish()?;
        println!(
            "{} frames of {w}x{h} at {} fps -> {}",
            frames,
            self.fps,
            self.out.display()
        );
        Ok(())
    }
}
