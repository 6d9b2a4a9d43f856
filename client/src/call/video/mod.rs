//! Video in calls: VP8 (libvpx) over the call's peer connection.
//!
//! - **Sending**: a Y4M file is the camera (played in a loop, as a webcam
//!   never ends). A thread reads and encodes one picture per frame interval;
//!   a keyframe goes out when the receiver asks (PLI/FIR) and at the start;
//!   the encoder's bitrate follows the connection's bandwidth estimate
//!   (Google congestion control over transport-wide feedback), so it falls
//!   under loss or a narrow path and climbs back after. Muting the camera
//!   sends black pictures without renegotiating, as a browser does for a
//!   disabled track.
//! - **Receiving**: packets are reassembled into frames ([`natter_video::rtp`]),
//!   retransmissions (NACK, answered by the sender's interceptor) are waited
//!   for, a loss that is not recovered stops the picture until a keyframe,
//!   which is asked for with a PLI; decoded pictures go to a constant-rate
//!   recording ([`render`]).

pub mod render;

use natter_video::rtp::Assembler;
use natter_video::{Decoded, EncoderSettings, I420Frame, Vp8Decoder, Vp8Encoder, Y4mReader};
use render::{RenderStats, Renderer};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

/// VP8's RTP payload type in our offers (what browsers use).
pub(crate) const VP8_PT: u8 = 96;
/// How long a gap in the received packets is waited for: a retransmission
/// needs the NACK interval plus a round trip, and on a lossy path sometimes
/// a second NACK. Longer than this and the wait itself is a visible freeze.
const PATIENCE: Duration = Duration::from_millis(500);
/// Fewest milliseconds between two keyframe requests (PLI) from a receiver:
/// a keyframe needs a round trip and its own packets to arrive, and asking
/// again before then only makes the sender spend bandwidth on another one.
const PLI_RETRY: Duration = Duration::from_millis(700);
/// Fewest milliseconds between two keyframes a sender makes on request.
const KEYFRAME_INTERVAL: Duration = Duration::from_millis(300);

/// Video settings of a call.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoOptions {
    /// The camera: a Y4M file (4:2:0), played in a loop. `None`: no camera,
    /// receive only.
    pub camera: Option<PathBuf>,
    /// Where to write the received video (Y4M, constant rate).
    pub record: Option<PathBuf>,
    /// Frames per second of the recording.
    pub record_fps: u32,
    /// The encoder's bitrate never goes below this, bits per second.
    pub min_bitrate_bps: u32,
    /// …nor above this.
    pub max_bitrate_bps: u32,
    /// Start with the camera off (black pictures).
    pub start_muted: bool,
}

impl Default for VideoOptions {
    fn default() -> Self {
        Self {
            camera: None,
            record: None,
            record_fps: 30,
            min_bitrate_bps: 100_000,
            max_bitrate_bps: 2_500_000,
            start_muted: false,
        }
    }
}

/// Figures about a call's video.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VideoStats {
    /// Pictures encoded and sent.
    pub frames_sent: u64,
    /// Of those, keyframes.
    pub keyframes_sent: u64,
    /// Keyframe requests (PLI/FIR) received.
    pub keyframe_requests_received: u64,
    /// Encoder bitrate over the call: (milliseconds since sending began, bit/s),
    /// one entry per change.
    pub bitrate_log: Vec<(u64, u32)>,
    /// The connection's bandwidth estimate, twice a second: (milliseconds
    /// since sending began, bit/s).
    pub estimate_log: Vec<(u64, u32)>,
    /// Mean encode time per picture, microseconds.
    pub encode_us_per_frame: u64,
    /// Whole frames received.
    pub frames_received: u64,
    /// Of those, keyframes.
    pub keyframes_received: u64,
    /// Packets given up on after waiting for a retransmission.
    pub packets_lost: u64,
    /// Frames dropped because an earlier loss left them undecodable.
    pub frames_skipped: u64,
    /// Keyframe requests (PLI) sent.
    pub keyframe_requests_sent: u64,
    /// Mean decode time per picture, microseconds.
    pub decode_us_per_frame: u64,
    /// NACKs this side sent for missing video packets.
    pub nacks_sent: u64,
    /// NACKs the other side sent about our video.
    pub nacks_received: u64,
    /// Video packets sent again in answer to NACKs.
    pub retransmitted: u64,
    /// A/V sync: how much later video arrived than the audio captured at the
    /// same moment, in milliseconds (median over the call; negative: video
    /// first). Measured from the RTP timestamps of each stream, counted from
    /// its first packet, against arrival times at this end.
    pub av_offset_ms: Option<i64>,
    /// What was shown.
    pub render: RenderStats,
}

/// What the sending side shares with the call: requests in, figures out.
#[derive(Default)]
pub(crate) struct SendControl {
    keyframe: AtomicBool,
    bitrate: AtomicU32,
    muted: AtomicBool,
    frames: AtomicU64,
    keyframes: AtomicU64,
    requests: AtomicU64,
    encode_us: AtomicU64,
    log: Mutex<Vec<(u64, u32)>>,
    estimates: Mutex<Vec<(u64, u32)>>,
    began: Mutex<Option<Instant>>,
    counters: Mutex<TransportCounters>,
}

/// Retransmission figures read from the peer connection's statistics.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TransportCounters {
    pub(crate) nacks_sent: u64,
    pub(crate) nacks_received: u64,
    pub(crate) retransmitted: u64,
}

impl SendControl {
    /// Mutes or unmutes the camera (black pictures, no renegotiation).
    pub(crate) fn set_muted(&self, muted: bool) {
        self.muted.store(muted, Ordering::Relaxed);
    }

    /// The bandwidth estimate moved: the share left for video, in bit/s.
    pub(crate) fn set_bitrate(&self, bps: u32) {
        self.bitrate.store(bps, Ordering::Relaxed);
    }

    /// Records the connection's estimate (for the call's figures).
    pub(crate) fn record_estimate(&self, bps: f64) {
        let Some(began) = *self.began.lock().unwrap_or_else(|e| e.into_inner()) else {
            return;
        };
        self.estimates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((began.elapsed().as_millis() as u64, bps as u32));
    }

    /// The latest retransmission figures (they are kept after the
    /// connection closes, when its statistics are gone).
    pub(crate) fn set_counters(&self, c: TransportCounters) {
        *self.counters.lock().unwrap_or_else(|e| e.into_inner()) = c;
    }

    fn fill(&self, stats: &mut VideoStats) {
        let c = *self.counters.lock().unwrap_or_else(|e| e.into_inner());
        stats.nacks_sent = c.nacks_sent;
        stats.nacks_received = c.nacks_received;
        stats.retransmitted = c.retransmitted;
        stats.frames_sent = self.frames.load(Ordering::Relaxed);
        stats.keyframes_sent = self.keyframes.load(Ordering::Relaxed);
        stats.keyframe_requests_received = self.requests.load(Ordering::Relaxed);
        stats.encode_us_per_frame = self
            .encode_us
            .load(Ordering::Relaxed)
            .checked_div(stats.frames_sent)
            .unwrap_or(0);
        stats.bitrate_log = self.log.lock().unwrap_or_else(|e| e.into_inner()).clone();
        stats.estimate_log = self
            .estimates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
    }
}

/// Opens the camera file; its header gives the size and rate the track sends.
pub(crate) fn open_camera(
    path: &std::path::Path,
) -> Result<Y4mReader<std::io::BufReader<std::fs::File>>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Y4mReader::new(std::io::BufReader::with_capacity(1 << 20, file))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Starts the camera: a thread reads and encodes, a task writes the frames
/// to the track and listens for keyframe requests.
pub(crate) fn start_sending(
    camera: PathBuf,
    opts: &VideoOptions,
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    payload_type: u8,
    control: Arc<SendControl>,
    stop: CancellationToken,
) -> Result<(), String> {
    let mut reader = open_camera(&camera)?;
    let header = reader.header();
    let fps = (header.fps().round() as u32).clamp(1, 120);
    let mut settings = EncoderSettings::for_call(header.width, header.height, fps);
    settings.bitrate_bps = settings
        .bitrate_bps
        .clamp(opts.min_bitrate_bps, opts.max_bitrate_bps);
    let mut encoder = Vp8Encoder::new(settings).map_err(|e| e.to_string())?;
    control.set_muted(opts.start_muted);
    control.set_bitrate(settings.bitrate_bps);
    let (min_bps, max_bps) = (opts.min_bitrate_bps, opts.max_bitrate_bps);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<u8>, Instant)>(4);
    let interval = Duration::from_secs_f64(1.0 / f64::from(fps));
    let thread_control = control.clone();
    let thread_stop = stop.clone();
    std::thread::Builder::new()
        .name("natter-camera".into())
        .spawn(move || {
            let control = thread_control;
            let began = Instant::now();
            *control.began.lock().unwrap_or_else(|e| e.into_inner()) = Some(began);
            let black = I420Frame::black(header.width, header.height);
            let mut last_key: Option<Instant> = None;
            let mut bitrate = settings.bitrate_bps;
            for k in 0u64.. {
                if thread_stop.is_cancelled() {
                    break;
                }
                let due = began + interval.mul_f64(k as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let picture = match reader.next_frame() {
                    Ok(Some(p)) => p,
                    // The end of the file: play it again, as a camera never stops.
                    Ok(None) => match open_camera(&camera).and_then(|mut r| {
                        r.next_frame()
                            .map_err(|e| e.to_string())?
                            .ok_or_else(|| "empty camera file".to_owned())
                            .map(|p| (r, p))
                    }) {
                        Ok((r, p)) => {
                            reader = r;
                            p
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "camera stopped");
                            break;
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "camera stopped");
                        break;
                    }
                };
                let wanted = control
                    .bitrate
                    .load(Ordering::Relaxed)
                    .clamp(min_bps, max_bps);
                if wanted != bitrate && encoder.set_bitrate(wanted).is_ok() {
                    bitrate = wanted;
                    control
                        .log
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((began.elapsed().as_millis() as u64, wanted));
                }
                let now = Instant::now();
                let may_key = last_key.is_none_or(|t| now.duration_since(t) >= KEYFRAME_INTERVAL);
                let keyframe = last_key.is_none()
                    || (may_key && control.keyframe.swap(false, Ordering::Relaxed));
                let shown = if control.muted.load(Ordering::Relaxed) {
                    &black
                } else {
                    &picture
                };
                let started = Instant::now();
                let encoded = match encoder.encode(shown, keyframe) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(error = %e, "encoder failed");
                        break;
                    }
                };
                control
                    .encode_us
                    .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                if encoded.keyframe {
                    last_key = Some(now);
                    control.keyframes.fetch_add(1, Ordering::Relaxed);
                }
                control.frames.fetch_add(1, Ordering::Relaxed);
                if encoded.data.is_empty() {
                    continue;
                }
                if tx.blocking_send((encoded.data, due)).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| format!("camera thread: {e}"))?;
    // Frames to the track.
    let writer_track = track.clone();
    let writer_stop = stop.clone();
    tokio::spawn(async move {
        loop {
            let (data, captured) = tokio::select! {
                _ = writer_stop.cancelled() => break,
                f = rx.recv() => match f { Some(f) => f, None => break },
            };
            let sample = rtc::media::Sample {
                data: bytes::Bytes::from(data),
                duration: interval,
                ..rtc::media::Sample::new(captured)
            };
            if writer_track
                .sample_writer(ssrc, payload_type)
                .write_sample(&sample)
                .await
                .is_err()
            {
                tracing::debug!("video track closed");
                break;
            }
        }
    });
    // Keyframe requests from the receiver.
    tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => break,
                ev = track.poll() => ev,
            };
            match ev {
                Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                    if super::feedback::asks_for_keyframe(&packets) {
                        control.requests.fetch_add(1, Ordering::Relaxed);
                        control.keyframe.store(true, Ordering::Relaxed);
                    }
                }
                Some(_) => {}
                None => break,
            }
        }
    });
    Ok(())
}

/// The receiving side's figures, shared with the call.
#[derive(Default)]
pub(crate) struct ReceiveState {
    /// A remote video track arrived.
    started: AtomicBool,
    /// (milliseconds of the sender's video, arrival), twice a second.
    timeline: Mutex<Timeline>,
    stats: Mutex<VideoStats>,
    done: tokio::sync::Notify,
    finished: AtomicBool,
}

/// Receives one remote video track until it ends or `stop`.
pub(crate) async fn receive(
    track: Arc<dyn TrackRemote>,
    opts: VideoOptions,
    state: Arc<ReceiveState>,
    stop: CancellationToken,
) {
    if state.started.swap(true, Ordering::Relaxed) {
        // A second remote video track (video removed and added again): the
        // recording belongs to the first; this one is read and not shown.
        while tokio::select! {
            _ = stop.cancelled() => false,
            ev = track.poll() => !matches!(ev, Some(TrackRemoteEvent::OnEnded) | None),
        } {}
        return;
    }
    let sink = match opts.record.as_ref().map(std::fs::File::create).transpose() {
        Ok(f) => f.map(|f| std::io::BufWriter::with_capacity(1 << 20, f)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot write the video recording");
            None
        }
    };
    // Decoding and writing run on a thread: a 720p picture is 1.4 MB to write.
    let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, Instant)>(64);
    let (fail_tx, mut fail_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let fps = opts.record_fps;
    let worker = std::thread::Builder::new()
        .name("natter-screen".into())
        .spawn(move || {
            let mut renderer = Renderer::new(sink, fps);
            let mut decoder = Vp8Decoder::new().ok();
            let (mut decoded, mut decode_us) = (0u64, 0u64);
            while let Ok((data, at)) = rx.recv() {
                let Some(dec) = decoder.as_mut() else { break };
                let started = Instant::now();
                match dec.decode(&data) {
                    Ok(Decoded::Picture(p)) => {
                        decode_us += started.elapsed().as_micros() as u64;
                        decoded += 1;
                        if let Err(e) = renderer.show(p, at) {
                            tracing::warn!(error = %e, "video recording failed");
                        }
                    }
                    Ok(Decoded::Nothing) => {}
                    Ok(Decoded::Corrupt) | Err(_) => {
                        let _ = fail_tx.send(());
                    }
                }
            }
            let stats = renderer
                .finish(Instant::now())
                .map(|(s, _)| s)
                .unwrap_or_default();
            (stats, decode_us.checked_div(decoded).unwrap_or(0))
        });
    let Ok(worker) = worker else {
        return;
    };
    let mut assembler = Assembler::new(PATIENCE);
    let mut last_pli: Option<Instant> = None;
    let mut plis = 0u64;
    let mut media_ssrc = 0u32;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        let frames = tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => assembler.poll(Instant::now()),
            Some(()) = fail_rx.recv() => {
                assembler.decoder_failed();
                Vec::new()
            }
            ev = track.poll() => match ev {
                Some(TrackRemoteEvent::OnRtpPacket(p)) => {
                    media_ssrc = p.header.ssrc;
                    state.note_arrival(p.header.timestamp, Instant::now());
                    assembler.push(
                        p.header.sequence_number,
                        p.header.timestamp,
                        p.header.marker,
                        &p.payload,
                        Instant::now(),
                    )
                }
                Some(TrackRemoteEvent::OnEnded) | None => break,
                Some(_) => Vec::new(),
            },
        };
        let now = Instant::now();
        for f in frames {
            if tx.try_send((f.data, now)).is_err() {
                // The screen thread is behind: this frame is lost to it, and
                // the ones after it need a keyframe.
                assembler.decoder_failed();
            }
        }
        if assembler.needs_keyframe()
            && media_ssrc != 0
            && last_pli.is_none_or(|t| now.duration_since(t) >= PLI_RETRY)
        {
            last_pli = Some(now);
            plis += 1;
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            };
            if let Err(e) = track.write_rtcp(vec![Box::new(pli)]).await {
                tracing::warn!(error = %e, "keyframe request not sent");
            }
        }
        let a = assembler.stats();
        let mut s = state.stats.lock().unwrap_or_else(|e| e.into_inner());
        s.frames_received = a.frames;
        s.keyframes_received = a.keyframes;
        s.packets_lost = a.packets_lost;
        s.frames_skipped = a.frames_skipped;
        s.keyframe_requests_sent = plis;
    }
    drop(tx);
    let joined = tokio::task::spawn_blocking(move || worker.join()).await;
    if let Ok(Ok((render, decode_us))) = joined {
        let mut s = state.stats.lock().unwrap_or_else(|e| e.into_inner());
        s.render = render;
        s.decode_us_per_frame = decode_us;
    }
    state.finished.store(true, Ordering::Relaxed);
    state.done.notify_waiters();
}

#[derive(Default)]
struct Timeline {
    first_ts: Option<u32>,
    last_ms: Option<u64>,
    points: Vec<(u64, Instant)>,
}

impl ReceiveState {
    /// A video packet with RTP timestamp `ts` (90 kHz) arrived at `now`.
    fn note_arrival(&self, ts: u32, now: Instant) {
        let mut t = self.timeline.lock().unwrap_or_else(|e| e.into_inner());
        let first = *t.first_ts.get_or_insert(ts);
        let ms = u64::from(ts.wrapping_sub(first)) / 90;
        // Twice a second of media; a timestamp before the first (reordered)
        // wraps to a huge value and is skipped.
        if ms < 1 << 31
            && t.last_ms.is_none_or(|l| ms >= l + 500)
            && t.points.len() < crate::call::playout::MAX_TIMELINE
        {
            t.last_ms = Some(ms);
            t.points.push((ms, now));
        }
    }

    /// How much later video arrives than audio captured at the same moment,
    /// in milliseconds (median over the call; negative: video first). Both
    /// timelines start at the sender's first packet, which it sends for
    /// both streams when media connects.
    pub(crate) fn av_offset_ms(&self, audio: &[(u64, Instant)]) -> Option<i64> {
        let t = self.timeline.lock().unwrap_or_else(|e| e.into_inner());
        let mut diffs: Vec<i64> = t
            .points
            .iter()
            .filter_map(|&(ms, tv)| {
                // Audio's arrival for the same media time, interpolated.
                let i = audio.partition_point(|&(am, _)| am <= ms);
                let (&(m0, t0), &(m1, t1)) = (audio.get(i.checked_sub(1)?)?, audio.get(i)?);
                let frac = (ms - m0) as f64 / (m1 - m0).max(1) as f64;
                let span = t1.checked_duration_since(t0)?.as_secs_f64();
                let ta = t0 + Duration::from_secs_f64(span * frac);
                let d = if tv >= ta {
                    tv.duration_since(ta).as_millis() as i64
                } else {
                    -(ta.duration_since(tv).as_millis() as i64)
                };
                Some(d)
            })
            .collect();
        diffs.sort_unstable();
        diffs.get(diffs.len() / 2).copied()
    }

    /// Whether a remote video track arrived.
    pub(crate) fn started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }

    /// Waits (up to `limit`) for the receiver to finish its recording.
    pub(crate) async fn finished(&self, limit: Duration) {
        let wait = self.done.notified();
        if !self.started() || self.finished.load(Ordering::Relaxed) {
            return;
        }
        let _ = tokio::time::timeout(limit, wait).await;
    }

    /// The call's video figures, with the sender's.
    pub(crate) fn stats(&self, send: Option<&SendControl>) -> VideoStats {
        let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(c) = send {
            c.fill(&mut s);
        }
        s
    }
}

/// Checks that `path` is a Y4M file a camera can play (before a call starts).
pub fn check_camera(path: &std::path::Path) -> Result<natter_video::Y4mHeader, String> {
    let mut reader = open_camera(path)?;
    let header = reader.header();
    match reader.next_frame() {
        Ok(Some(_)) => Ok(header),
        Ok(None) => Err(format!("{}: no pictures", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn av_offset_is_video_arrival_minus_audio_arrival_at_the_same_media_time() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let state = ReceiveState::default();
        // Video timestamps at 90 kHz from a random base: media time 0, 0.5 s, 1 s…
        let base = u32::MAX - 20_000;
        for k in 0..5u32 {
            // Each picture arrives 60 ms after audio of the same moment.
            state.note_arrival(
                base.wrapping_add(k * 45_000),
                t + ms(u64::from(k) * 500 + 60),
            );
        }
        let audio: Vec<_> = (0..6).map(|k| (k * 500, t + ms(k * 500))).collect();
        assert_eq!(state.av_offset_ms(&audio), Some(60));
        // Video ahead of audio gives a negative offset.
        let late_audio: Vec<_> = (0..6).map(|k| (k * 500, t + ms(k * 500 + 100))).collect();
        assert_eq!(state.av_offset_ms(&late_audio), Some(-40));
        assert_eq!(state.av_offset_ms(&[]), None);
    }
}
