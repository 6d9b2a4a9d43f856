//! The media side of a call: one webrtc-rs peer connection with one Opus
//! audio track each way. Audio is 16 kHz mono (wideband) in 20 ms frames,
//! in-band FEC on by default; the RTP clock is Opus's 48 kHz as RFC 7587
//! requires. A WAV file (or silence) is the microphone; what arrives is
//! decoded (FEC, then concealment, for lost packets) into a recording.
//!
//! A video call adds one VP8 track each way ([`super::video`]). Every call
//! negotiates NACK, PLI/FIR and transport-wide congestion control feedback,
//! and runs Google congestion control, whose estimate sets the video
//! encoder's bitrate.
//!
//! webrtc-rs callbacks become channel messages here, at the driver edge.

pub use super::audio::{FRAME, MediaError, RATE};
use super::feedback::{FecPlan, FeedbackTap, ReportedLoss};
use super::playout::Recorder;
use super::video::{self, ReceiveState, SendControl, VideoOptions, VideoStats};

mod camera;
use super::wav::Pcm;
use crate::api::IceServer;
use rtc::interceptor::{
    CongestionControlBuilder, Gcc, NackGeneratorBuilder, NackResponderBuilder, Slot,
    TwccReceiverBuilder, TwccSenderBuilder,
};
use rtc::media::Sample;
use rtc::peer_connection::configuration::interceptor_registry::configure_rtcp_reports;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpHeaderExtensionCapability};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::RTCStatsReportEntry;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceServer, RTCIceTransportPolicy,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription, Registry,
    StatsSelector,
};

pub(crate) const FRAME_TIME: Duration = Duration::from_millis(20);
/// Opus's RTP payload type in our offers (any dynamic type works; 111 is what browsers use).
const OPUS_PT: u8 = 111;

/// Audio settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioOptions {
    /// In-band forward error correction (the decoder rebuilds a lost frame
    /// from the next packet).
    pub fec: bool,
    /// Encoder bitrate, bits per second.
    pub bitrate: i32,
    /// Loss the encoder plans FEC for at first, in percent; from the first
    /// receiver report on, the plan follows the loss the other side reports.
    pub expected_loss_percent: i32,
}

impl Default for AudioOptions {
    fn default() -> Self {
        Self {
            fec: true,
            bitrate: 32_000,
            expected_loss_percent: 10,
        }
    }
}

fn rtc_err(e: impl std::fmt::Display) -> MediaError {
    MediaError::Webrtc(e.to_string())
}

/// What the peer connection tells the call.
#[derive(Debug)]
pub(crate) enum MediaEvent {
    /// A local ICE candidate, as JSON for `call.ice`.
    Candidate(String),
    /// Connection state.
    State(RTCPeerConnectionState),
}

/// Figures about the media path and the received audio.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaStats {
    /// Local and remote candidate types of the selected pair (`relay`, `host`, …).
    pub selected_pair: Option<(String, String)>,
    /// RTP packets received.
    pub packets_received: u64,
    /// Frames sent.
    pub frames_sent: u64,
    /// Frames lost in transit.
    pub lost: u64,
    /// Of those, rebuilt from FEC.
    pub recovered: u64,
    /// Longest wait between two received packets, in milliseconds.
    pub max_gap_ms: u64,
    /// The loss (percent) our encoder last planned its FEC for, from what the
    /// other side reported.
    pub fec_planned_percent: i32,
    /// The video figures, in a video call.
    pub video: Option<VideoStats>,
}

/// One peer connection with its audio.
pub(crate) struct Media {
    pc: Arc<dyn PeerConnection>,
    track: Arc<TrackLocalStaticSample>,
    sender: Arc<dyn webrtc::rtp_transceiver::RtpSender>,
    ssrc: u32,
    opts: AudioOptions,
    recorder: Arc<Mutex<Recorder>>,
    frames_sent: Arc<std::sync::atomic::AtomicU64>,
    /// Loss the other side reports about our streams.
    reported_loss: Arc<ReportedLoss>,
    fec_planned: Arc<std::sync::atomic::AtomicI32>,
    /// Video: settings, the camera (when one is on), what was received.
    video: VideoSide,
    stop: CancellationToken,
}

/// The video half of a call (idle in a voice call until video is added or
/// arrives).
struct VideoSide {
    opts: VideoOptions,
    /// Video was part of the call at some point (its figures are reported).
    used: std::sync::atomic::AtomicBool,
    /// The camera's track while it is on.
    camera: Mutex<Option<camera::Camera>>,
    codec: RTCRtpCodec,
    stream_id: String,
    control: Arc<SendControl>,
    received: Arc<ReceiveState>,
}

struct Handler {
    events: mpsc::UnboundedSender<MediaEvent>,
    recorder: Arc<Mutex<Recorder>>,
    video: (VideoOptions, Arc<ReceiveState>),
    stop: CancellationToken,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json()
            && let Ok(json) = serde_json::to_string(&init)
        {
            let _ = self.events.send(MediaEvent::Candidate(json));
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.events.send(MediaEvent::State(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        if track.kind().await == RtpCodecKind::Video {
            let (opts, state) = &self.video;
            tokio::spawn(video::receive(
                track,
                opts.clone(),
                state.clone(),
                self.stop.clone(),
            ));
            return;
        }
        let recorder = self.recorder.clone();
        let stop = self.stop.clone();
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = stop.cancelled() => break,
                    ev = track.poll() => ev,
                };
                match ev {
                    Some(TrackRemoteEvent::OnRtpPacket(p)) => {
                        let mut r = recorder.lock().unwrap_or_else(|e| e.into_inner());
                        r.push(p.header.sequence_number, &p.payload, Instant::now());
                    }
                    Some(TrackRemoteEvent::OnEnded) | None => break,
                    Some(_) => {}
                }
            }
        });
    }
}

impl Media {
    /// A peer connection with the ICE servers (relay only when asked), a
    /// send-receive Opus track and, in a video call, a VP8 track (send-receive
    /// with a camera, receive-only without).
    pub(crate) async fn new(
        ice: &[IceServer],
        relay_only: bool,
        bind: &str,
        opts: AudioOptions,
        video: Option<VideoOptions>,
    ) -> Result<(Media, mpsc::UnboundedReceiver<MediaEvent>), MediaError> {
        let opus = RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: format!("minptime=10;useinbandfec={}", u8::from(opts.fec)),
                rtcp_feedback: vec![],
            },
            payload_type: OPUS_PT,
        };
        let reported_loss = Arc::new(ReportedLoss::default());
        let vp8 = RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_VP8.to_owned(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![RTCPFeedback {
                    typ: "ccm".to_owned(),
                    parameter: "fir".to_owned(),
                }],
            },
            payload_type: video::VP8_PT,
        };
        let mut engine = MediaEngine::default();
        engine
            .register_codec(opus.clone(), RtpCodecKind::Audio)
            .map_err(rtc_err)?;
        // VP8 is always on offer, so video can be added mid-call.
        engine
            .register_codec(vp8.clone(), RtpCodecKind::Video)
            .map_err(rtc_err)?;
        // NACK + PLI feedback for video, sender and receiver reports, and send-side
        // congestion control (transport-wide feedback, GCC, a pacer).
        let max_bps = video.as_ref().map_or(2_500_000, |v| v.max_bitrate_bps);
        for parameter in ["", "pli"] {
            engine.register_feedback(
                RTCPFeedback {
                    typ: "nack".to_owned(),
                    parameter: parameter.to_owned(),
                },
                RtpCodecKind::Video,
            );
        }
        // NACKs go out every 40 ms (webrtc-rs's default is 100 ms): on a
        // lossy mobile path a retransmission must land well inside the
        // receiver's patience, sometimes after a second NACK.
        let registry = configure_rtcp_reports(
            Registry::new()
                .with(Slot::NackResponder, NackResponderBuilder::new().build())
                .with(
                    Slot::NackGenerator,
                    NackGeneratorBuilder::new()
                        .with_interval(Duration::from_millis(40))
                        .build(),
                ),
        );
        // Send-side congestion control: transport-wide sequence numbers on
        // every packet, the remote's feedback into Google congestion control,
        // our own arrivals reported back. Not webrtc-rs's pacer: it releases
        // at exactly the estimate and queues up to 4096 packets, so packet
        // overhead, keyframes and retransmissions above the estimate pile up
        // as seconds of delay (measured: the picture froze for good on a 5 %
        // lossy path). The encoder's bitrate follows the estimate instead.
        for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
            engine.register_feedback(
                RTCPFeedback {
                    typ: "transport-cc".to_owned(),
                    parameter: String::new(),
                },
                kind,
            );
            engine
                .register_header_extension(
                    RTCRtpHeaderExtensionCapability {
                        uri: rtc::sdp::extmap::TRANSPORT_CC_URI.to_owned(),
                    },
                    kind,
                    None,
                )
                .map_err(rtc_err)?;
        }
        let registry = registry
            .with(
                Slot::CongestionControl,
                CongestionControlBuilder::new(Gcc::new(
                    800_000.0,
                    100_000.0,
                    f64::from(max_bps) + 200_000.0,
                ))
                .build(),
            )
            .with(Slot::TwccSender, TwccSenderBuilder::new().build())
            .with(Slot::TwccReceiver, TwccReceiverBuilder::new().build())
            .with(Slot::from(14_000), FeedbackTap::new(reported_loss.clone()));
        let servers = ice
            .iter()
            .map(|s| RTCIceServer {
                urls: s.urls.clone(),
                username: s.username.clone().unwrap_or_default(),
                credential: s.credential.clone().unwrap_or_default(),
            })
            .collect();
        let config = RTCConfigurationBuilder::new()
            .with_ice_servers(servers)
            .with_ice_transport_policy(if relay_only {
                RTCIceTransportPolicy::Relay
            } else {
                RTCIceTransportPolicy::All
            })
            .build();
        let (tx, rx) = mpsc::unbounded_channel();
        let recorder = Arc::new(Mutex::new(Recorder::new(opts.fec)?));
        let stop = CancellationToken::new();
        let received = Arc::new(ReceiveState::default());
        let handler = Arc::new(Handler {
            events: tx,
            recorder: recorder.clone(),
            video: (video.clone().unwrap_or_default(), received.clone()),
            stop: stop.clone(),
        });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(config)
            .with_media_engine(engine)
            .with_interceptor_registry(registry)
            .with_handler(handler)
            .with_udp_addrs(vec![bind.to_owned()])
            .build()
            .await
            .map_err(rtc_err)?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let ssrc: u32 = rand_u32();
        // Track ids unique to this end: webrtc-rs routes RTCP by track id,
        // and a remote track of the same id would take our sender's PLIs.
        let stream_id = format!("natter-{}", uuid::Uuid::new_v4().simple());
        let track = Arc::new(
            TrackLocalStaticSample::new(
                Instant::now(),
                MediaStreamTrack::new(
                    stream_id.clone(),
                    format!("audio-{stream_id}"),
                    "natter-audio".to_owned(),
                    RtpCodecKind::Audio,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            ..Default::default()
                        },
                        codec: opus.rtp_codec.clone(),
                        ..Default::default()
                    }],
                ),
            )
            .map_err(rtc_err)?,
        );
        let sender = pc
            .add_track(track.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(rtc_err)?;
        let video_side = VideoSide {
            used: (video.is_some()).into(),
            opts: video.clone().unwrap_or_default(),
            camera: Mutex::new(None),
            codec: vp8.rtp_codec.clone(),
            stream_id: stream_id.clone(),
            control: Arc::default(),
            received,
        };
        match &video {
            Some(v) if v.camera.is_some() => {
                let cam = camera::Camera::add(&pc, &video_side.codec, &stream_id).await?;
                *video_side.camera.lock().unwrap_or_else(|e| e.into_inner()) = Some(cam);
            }
            // Receive only: offer (or accept) video without sending any.
            Some(_) => {
                pc.add_transceiver_from_kind(
                    RtpCodecKind::Video,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Recvonly,
                        ..Default::default()
                    }),
                )
                .await
                .map_err(rtc_err)?;
            }
            None => {}
        }
        Ok((
            Media {
                pc,
                track,
                sender,
                ssrc,
                opts,
                recorder,
                frames_sent: Arc::default(),
                reported_loss,
                fec_planned: Arc::new(std::sync::atomic::AtomicI32::new(if opts.fec {
                    opts.expected_loss_percent
                } else {
                    0
                })),
                video: video_side,
                stop,
            },
            rx,
        ))
    }

    /// Creates the offer and sets it locally; returns its SDP.
    pub(crate) async fn offer(&self) -> Result<String, MediaError> {
        let offer = self.pc.create_offer(None).await.map_err(rtc_err)?;
        self.pc
            .set_local_description(offer)
            .await
            .map_err(rtc_err)?;
        self.local_sdp().await
    }

    /// Takes the remote offer and answers it; returns the answer's SDP.
    pub(crate) async fn answer(&self, offer_sdp: &str) -> Result<String, MediaError> {
        let offer = RTCSessionDescription::offer(offer_sdp.to_owned()).map_err(rtc_err)?;
        self.pc
            .set_remote_description(offer)
            .await
            .map_err(rtc_err)?;
        let answer = self.pc.create_answer(None).await.map_err(rtc_err)?;
        self.pc
            .set_local_description(answer)
            .await
            .map_err(rtc_err)?;
        self.local_sdp().await
    }

    /// The remote answer to our offer.
    pub(crate) async fn accept_answer(&self, sdp: &str) -> Result<(), MediaError> {
        let answer = RTCSessionDescription::answer(sdp.to_owned()).map_err(rtc_err)?;
        self.pc
            .set_remote_description(answer)
            .await
            .map_err(rtc_err)
    }

    /// An ICE-restart offer: fresh credentials, candidates gathered again.
    pub(crate) async fn restart_offer(&self) -> Result<String, MediaError> {
        self.pc.restart_ice().await.map_err(rtc_err)?;
        self.offer().await
    }

    /// A renegotiation offer from the peer (`call.update`); returns our answer.
    pub(crate) async fn update_answer(&self, sdp: &str) -> Result<String, MediaError> {
        self.answer(sdp).await
    }

    /// A remote candidate from `call.ice` (empty: end of candidates).
    pub(crate) async fn add_candidate(&self, json: &str) -> Result<(), MediaError> {
        if json.is_empty() {
            return Ok(());
        }
        let init: RTCIceCandidateInit = serde_json::from_str(json)
            .map_err(|e| MediaError::Webrtc(format!("candidate: {e}")))?;
        if init.candidate.is_empty() {
            return Ok(());
        }
        self.pc.add_ice_candidate(init).await.map_err(rtc_err)
    }

    async fn local_sdp(&self) -> Result<String, MediaError> {
        self.pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| MediaError::Webrtc("no local description".into()))
    }

    /// Starts sending `play` (then silence) in 20 ms Opus frames.
    pub(crate) async fn start_sending(&self, play: Option<Pcm>) -> Result<(), MediaError> {
        let pt = self
            .sender
            .get_parameters()
            .await
            .map_err(rtc_err)?
            .rtp_parameters
            .codecs
            .first()
            .map(|c| c.payload_type)
            .unwrap_or(OPUS_PT);
        let mut enc = opus::Encoder::new(RATE, opus::Channels::Mono, opus::Application::Voip)?;
        enc.set_inband_fec(self.opts.fec)?;
        enc.set_packet_loss_perc(if self.opts.fec {
            self.opts.expected_loss_percent
        } else {
            0
        })?;
        enc.set_bitrate(opus::Bitrate::Bits(self.opts.bitrate))?;
        if let Some(file) = self.video.opts.camera.clone() {
            self.start_camera(file)?;
        }
        let samples = play.map(|p| p.resample(RATE).samples).unwrap_or_default();
        let track = self.track.clone();
        let ssrc = self.ssrc;
        let stop = self.stop.clone();
        let sent = self.frames_sent.clone();
        let reported = self.reported_loss.clone();
        let mut fec_plan = FecPlan::new(self.opts.expected_loss_percent);
        let fec = self.opts.fec;
        let fec_planned = self.fec_planned.clone();
        let base_bitrate = self.opts.bitrate;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FRAME_TIME);
            let mut pos = 0;
            let mut buf = vec![0u8; 1500];
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                // Once a second, plan FEC for the loss the receiver reports.
                if fec && sent.load(std::sync::atomic::Ordering::Relaxed) % 50 == 49 {
                    let before = fec_plan.planned();
                    let now = fec_plan.update(reported.percent(ssrc));
                    if now != before && enc.set_packet_loss_perc(now).is_ok() {
                        tracing::debug!(planned = now, "FEC planned for {now} % loss");
                        fec_planned.store(now, std::sync::atomic::Ordering::Relaxed);
                        // FEC's redundant copy comes out of the bitrate; on a
                        // lossy path give it a quarter more so the main signal
                        // keeps its quality.
                        let bps = if now > 0 {
                            base_bitrate + base_bitrate / 4
                        } else {
                            base_bitrate
                        };
                        let _ = enc.set_bitrate(opus::Bitrate::Bits(bps));
                    }
                }
                let mut frame = [0i16; FRAME];
                if pos < samples.len() {
                    let n = (samples.len() - pos).min(FRAME);
                    frame[..n].copy_from_slice(&samples[pos..pos + n]);
                    pos += n;
                }
                let Ok(len) = enc.encode(&frame, &mut buf) else {
                    continue;
                };
                let sample = Sample {
                    data: bytes::Bytes::copy_from_slice(&buf[..len]),
                    duration: FRAME_TIME,
                    ..Sample::new(Instant::now())
                };
                if track
                    .sample_writer(ssrc, pt)
                    .write_sample(&sample)
                    .await
                    .is_err()
                {
                    tracing::debug!("audio track closed");
                    break;
                }
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        Ok(())
    }

    /// The selected candidate pair's types and the audio figures.
    pub(crate) async fn stats(&self) -> MediaStats {
        let report = self.pc.get_stats(Instant::now(), StatsSelector::None).await;
        let mut selected_id = None;
        for e in report.iter() {
            if let RTCStatsReportEntry::Transport(t) = e
                && !t.selected_candidate_pair_id.is_empty()
            {
                selected_id = Some(t.selected_candidate_pair_id.clone());
            }
        }
        let pair = report.iter().find_map(|e| match e {
            RTCStatsReportEntry::IceCandidatePair(p)
                if selected_id.as_deref() == Some(e.id())
                    || (selected_id.is_none() && p.nominated) =>
            {
                Some((p.local_candidate_id.clone(), p.remote_candidate_id.clone()))
            }
            _ => None,
        });
        // Candidate entries are named `RTCLocalIceCandidate_<id>` / `RTCRemoteIceCandidate_<id>`
        // while pairs name them by `<id>`.
        let kind_of = |id: &str, local: bool| {
            report.iter().find_map(|e| match e {
                RTCStatsReportEntry::LocalCandidate(c) if local && names(e.id(), id) => {
                    Some(c.candidate_type.to_string())
                }
                RTCStatsReportEntry::RemoteCandidate(c) if !local && names(e.id(), id) => {
                    Some(c.candidate_type.to_string())
                }
                _ => None,
            })
        };
        // The stats list only remote candidates that arrived by signalling. A
        // remote candidate first seen in the peer's own connectivity check
        // (peer-reflexive: its check overtook its trickled candidate, as on a
        // loaded machine) has no entry, and is named for what it is.
        let mut selected_pair = pair.and_then(|(l, r)| {
            let remote = kind_of(&r, false).unwrap_or_else(|| "prflx".to_owned());
            Some((kind_of(&l, true)?, remote))
        });
        if let Some((_, remote)) = &mut selected_pair
            && remote == "prflx"
            && let Some(signalled) = self.signalled_type_of_selected_remote().await
        {
            *remote = signalled;
        }
        let video = self.video_stats();
        let r = self.recorder.lock().unwrap_or_else(|e| e.into_inner());
        MediaStats {
            selected_pair,
            packets_received: r.packets,
            frames_sent: self.frames_sent.load(std::sync::atomic::Ordering::Relaxed),
            lost: r.lost,
            recovered: r.recovered,
            max_gap_ms: r.max_gap.as_millis() as u64,
            fec_planned_percent: self.fec_planned.load(std::sync::atomic::Ordering::Relaxed),
            video,
        }
    }

    /// The type the peer signalled for the selected pair's remote address, once
    /// its trickled candidate has arrived. A candidate first learned from the
    /// peer's connectivity check is peer-reflexive by name only: when the peer
    /// later signals a candidate at the same address (its relay, for a relay-only
    /// peer), that is what it is.
    async fn signalled_type_of_selected_remote(&self) -> Option<String> {
        for sender in self.pc.get_senders().await {
            let Ok(Some(dtls)) = sender.transport().await else {
                continue;
            };
            let ice = dtls.ice_transport();
            let Ok(Some(pair)) = ice.get_selected_candidate_pair().await else {
                continue;
            };
            let remote = pair.remote();
            let Ok(signalled) = ice.get_remote_candidates().await else {
                continue;
            };
            if let Some(c) = signalled
                .iter()
                .find(|c| c.address == remote.address && c.port == remote.port)
            {
                return Some(c.typ.to_string());
            }
        }
        None
    }

    /// What was received so far, 16 kHz mono.
    pub(crate) fn recording(&self) -> Pcm {
        let mut r = self.recorder.lock().unwrap_or_else(|e| e.into_inner());
        r.flush();
        Pcm {
            rate: RATE,
            samples: r.pcm.clone(),
        }
    }

    /// Feeds the bandwidth estimate to the video encoder: the estimate less
    /// what audio and packet overhead take.
    pub(crate) async fn follow_bandwidth_estimate(&self) {
        let v = &self.video;
        if !v.used.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let report = self.pc.get_stats(Instant::now(), StatsSelector::None).await;
        let estimate = report
            .iter()
            .filter_map(|e| match e {
                RTCStatsReportEntry::OutboundRtp(o) if o.target_bitrate > 0.0 => {
                    Some(o.target_bitrate)
                }
                _ => None,
            })
            .fold(0.0f64, f64::max);
        let mut counters = video::TransportCounters::default();
        for e in report.iter() {
            match e {
                RTCStatsReportEntry::OutboundRtp(o)
                    if o.sent_rtp_stream_stats.rtp_stream_stats.kind == RtpCodecKind::Video =>
                {
                    counters.nacks_received += u64::from(o.nack_count);
                    counters.retransmitted += o.retransmitted_packets_sent;
                }
                RTCStatsReportEntry::InboundRtp(i)
                    if i.received_rtp_stream_stats.rtp_stream_stats.kind == RtpCodecKind::Video =>
                {
                    counters.nacks_sent += u64::from(i.nack_count);
                }
                _ => {}
            }
        }
        v.control.set_counters(counters);
        if estimate > 0.0 {
            v.control.record_estimate(estimate);
            // Audio in 20 ms packets carries about 100 bytes of RTP, SRTP,
            // TURN and IP headers each: 40 kbit/s beside its payload.
            let audio = f64::from(self.opts.bitrate) + 40_000.0;
            // Video packets' own headers, retransmissions and keyframes
            // above the average need room too.
            let share = ((estimate - audio) * 0.8).max(0.0) as u32;
            v.control
                .set_bitrate(share.clamp(v.opts.min_bitrate_bps, v.opts.max_bitrate_bps));
        }
    }

    /// The video figures (final once [`close`](Self::close) has returned).
    pub(crate) fn video_stats(&self) -> Option<VideoStats> {
        let v = &self.video;
        let used = v.used.load(std::sync::atomic::Ordering::Relaxed) || v.received.started();
        used.then(|| {
            let mut s = v.received.stats(Some(&v.control));
            let r = self.recorder.lock().unwrap_or_else(|e| e.into_inner());
            s.av_offset_ms = v.received.av_offset_ms(&r.timeline);
            s
        })
    }

    /// Stops sending and closes the connection; waits (briefly) for the
    /// video recording to be written out.
    pub(crate) async fn close(&self) {
        self.stop.cancel();
        let _ = self.pc.close().await;
        self.video.received.finished(Duration::from_secs(10)).await;
    }
}

/// Whether stats entry `entry_id` is the object `id`.
fn names(entry_id: &str, id: &str) -> bool {
    entry_id == id || entry_id.strip_suffix(id).is_some_and(|p| p.ends_with('_'))
}

fn rand_u32() -> u32 {
    let b = uuid::Uuid::new_v4();
    let b = b.as_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}
