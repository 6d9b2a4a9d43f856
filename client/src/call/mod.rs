//! Voice and video calls: signaling over the chat socket (`call.*` frames)
//! and media with webrtc-rs, Opus ([`media`]) and VP8 ([`video`]). A headless
//! peer can use a WAV file as its microphone and a Y4M file as its camera,
//! and record what it receives ([`wav`], [`natter_video::y4m`]).
//!
//! ```no_run
//! # async fn demo(account: natter_client::Account) -> Result<(), natter_client::call::CallError> {
//! use natter_client::{Chat, ConnectOptions};
//! use natter_client::call::{CallOptions, place};
//! let (chat, mut events) = Chat::connect(account.clone(), ConnectOptions::default());
//! let opts = CallOptions { hangup_after: Some(std::time::Duration::from_secs(5)), ..CallOptions::default() };
//! let report = place(&chat, &mut events, &account, natter_proto::UserId::new("u-bob"), opts).await?;
//! report.recording.write("out.wav".as_ref()).ok();
//! # Ok(()) }
//! ```

mod audio;
mod feedback;
pub mod media;
mod playout;
pub mod video;
pub mod wav;

use crate::{Account, Chat, Event, Events};
use media::{Media, MediaEvent, MediaStats};
use natter_proto::{
    CallAnswer, CallClientFrame, CallIce, CallId, CallMedia, CallOffer, CallRef, CallUpdate,
    EndReason, SdpKind, ServerFrame, UserId,
};
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;
use wav::Pcm;
use webrtc::peer_connection::RTCPeerConnectionState;

pub use media::AudioOptions;
pub use video::{VideoOptions, VideoStats};

/// How to run a call.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// Audio encoder settings.
    pub audio: AudioOptions,
    /// The microphone: played once, then silence. `None`: silence.
    pub play: Option<Pcm>,
    /// A video call (`None`: voice only).
    pub video: Option<VideoOptions>,
    /// STUN/TURN servers to use instead of asking the server for them (an
    /// app with its own TURN, or a test routing media through a bad path).
    pub ice_servers: Option<Vec<crate::IceServer>>,
    /// Things to do to the video during the call, each this long after
    /// media connected (a headless client's script of what a user taps).
    pub video_actions: Vec<(Duration, VideoAction)>,
    /// Only relay (TURN) candidates, as a privacy-minded app would (and as the
    /// tests force, to check the relay path).
    pub relay_only: bool,
    /// Hang up this long after media connected (`None`: wait for the other side).
    pub hangup_after: Option<Duration>,
    /// Give up if the call is not connected after this.
    pub setup_timeout: Duration,
    /// Local UDP address for media.
    pub bind: String,
    /// Restart ICE this long after media connected (as after a network
    /// change; tests use it). The caller also restarts ICE by itself when the
    /// connection drops to `disconnected`.
    pub ice_restart_after: Option<Duration>,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            audio: AudioOptions::default(),
            play: None,
            video: None,
            ice_servers: None,
            video_actions: Vec::new(),
            relay_only: false,
            hangup_after: None,
            setup_timeout: Duration::from_secs(75),
            bind: "0.0.0.0:0".into(),
            ice_restart_after: None,
        }
    }
}

/// Something done to the video during a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoAction {
    /// Camera off: black pictures, no renegotiation (as a browser sends for
    /// a disabled track).
    CameraOff,
    /// Camera back on.
    CameraOn,
    /// Add video, with this Y4M file as the camera (a renegotiation; the
    /// caller's side only, so two offers never cross).
    Start(std::path::PathBuf),
    /// Take video out of the call (a renegotiation; the caller's side only).
    Stop,
}

/// How a call went.
#[derive(Debug, Clone)]
pub struct CallReport {
    /// The call.
    pub call_id: CallId,
    /// The other party.
    pub peer: UserId,
    /// Why it ended, as the server said (`None` when this side hung up).
    pub ended_by_peer: Option<EndReason>,
    /// Media connected.
    pub connected: bool,
    /// From offer (or incoming) to media connected.
    pub setup_time: Option<Duration>,
    /// Media figures (selected candidate pair, packets, losses).
    pub stats: MediaStats,
    /// ICE restarts done (offers sent or answered).
    pub ice_restarts: u32,
    /// What was received, 16 kHz mono.
    pub recording: Pcm,
}

/// Why a call could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The server or the SDK failed.
    #[error(transparent)]
    Client(#[from] crate::Error),
    /// Media failed.
    #[error(transparent)]
    Media(#[from] media::MediaError),
    /// The server refused a frame.
    #[error("server refused {0}")]
    Refused(String),
    /// The call ended before media connected.
    #[error("call ended: {}", .0.as_str())]
    Ended(EndReason),
    /// Waited too long.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The connection to the server closed.
    #[error("chat connection closed")]
    Closed,
}

/// The call's peer connection, with the caller's own ICE servers or fresh
/// ones from the server.
async fn open_media(
    account: &Account,
    opts: &CallOptions,
) -> Result<(Media, tokio::sync::mpsc::UnboundedReceiver<MediaEvent>), CallError> {
    let ice = match &opts.ice_servers {
        Some(s) => s.clone(),
        None => {
            let token = account.token().await?;
            account.api().ice_servers(&token).await?.ice_servers
        }
    };
    let media = Media::new(
        &ice,
        opts.relay_only,
        &opts.bind,
        opts.audio,
        opts.video.clone(),
    )
    .await?;
    Ok(media)
}

/// Calls `to` and runs the call until either side hangs up.
pub async fn place(
    chat: &Chat,
    events: &mut Events,
    account: &Account,
    to: UserId,
    opts: CallOptions,
) -> Result<CallReport, CallError> {
    let (media, media_events) = open_media(account, &opts).await?;
    let call_id = CallId::new(uuid::Uuid::new_v4().simple().to_string());
    let sdp = media.offer().await?;
    let started = Instant::now();
    chat.call_frame(CallClientFrame::Offer(CallOffer {
        call_id: call_id.clone(),
        to: to.clone(),
        media: if opts.video.is_some() {
            CallMedia::Video
        } else {
            CallMedia::Audio
        },
        sdp,
    }));
    let span = tracing::info_span!("call", call_id = %call_id, peer = %to);
    run(
        chat,
        events,
        media,
        media_events,
        call_id,
        to,
        opts,
        started,
        true,
    )
    .instrument(span)
    .await
}

/// Waits for an incoming call (from `from`, if given), answers it, and runs
/// it until either side hangs up.
pub async fn answer(
    chat: &Chat,
    events: &mut Events,
    account: &Account,
    from: Option<UserId>,
    opts: CallOptions,
    wait: Duration,
) -> Result<CallReport, CallError> {
    let deadline = Instant::now() + wait;
    let incoming = loop {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| CallError::Timeout("no incoming call"))?
            .ok_or(CallError::Closed)?;
        if let Event::Call(ServerFrame::CallIncoming(c)) = ev
            && from.as_ref().is_none_or(|f| *f == c.from.user)
        {
            break c;
        }
    };
    let started = Instant::now();
    let (media, media_events) = open_media(account, &opts).await?;
    let sdp = media.answer(&incoming.sdp).await?;
    chat.call_frame(CallClientFrame::Answer(CallAnswer {
        call_id: incoming.call_id.clone(),
        sdp,
    }));
    let span = tracing::info_span!("call", call_id = %incoming.call_id, peer = %incoming.from.user);
    run(
        chat,
        events,
        media,
        media_events,
        incoming.call_id,
        incoming.from.user,
        opts,
        started,
        false,
    )
    .instrument(span)
    .await
}

/// The shared part of a call: relay candidates both ways, start sending once
/// connected, hang up on time, stop on `call.ended`.
#[allow(clippy::too_many_arguments)] // one internal entry point for both directions
async fn run(
    chat: &Chat,
    events: &mut Events,
    media: Media,
    mut media_events: tokio::sync::mpsc::UnboundedReceiver<MediaEvent>,
    call_id: CallId,
    peer: UserId,
    opts: CallOptions,
    started: Instant,
    caller: bool,
) -> Result<CallReport, CallError> {
    let mut connected_at: Option<Instant> = None;
    let mut answered = !caller;
    let mut ended_by_peer = None;
    let setup_deadline = started + opts.setup_timeout;
    let mut play = opts.play.clone();
    let mut first_pair = None;
    let mut pair_check_at: Option<Instant> = None;
    let mut ice_restarts = 0u32;
    // Only the caller starts renegotiations, so two offers never cross.
    let mut restart_at = None;
    let never = || Instant::now() + Duration::from_secs(86_400);
    // The bandwidth estimate reaches the video encoder twice a second.
    let mut estimate_tick = tokio::time::interval(Duration::from_millis(500));
    let mut actions = opts.video_actions.clone();
    actions.sort_by_key(|a| a.0);
    let mut actions = std::collections::VecDeque::from(actions);
    let result = loop {
        let hangup_at = match (connected_at, opts.hangup_after) {
            (Some(c), Some(after)) => c + after,
            (None, _) => setup_deadline,
            _ => Instant::now() + Duration::from_secs(86_400),
        };
        let action_at = match (connected_at, actions.front()) {
            (Some(c), Some((after, _))) => Some(c + *after),
            _ => None,
        };
        tokio::select! {
            _ = estimate_tick.tick(), if connected_at.is_some() => {
                media.follow_bandwidth_estimate().await;
            }
            _ = tokio::time::sleep_until(action_at.unwrap_or_else(never)), if action_at.is_some() => {
                let Some((_, action)) = actions.pop_front() else { continue };
                tracing::info!(?action, "video action");
                let offer = match action {
                    VideoAction::CameraOff => { media.set_camera_muted(true); None }
                    VideoAction::CameraOn => { media.set_camera_muted(false); None }
                    VideoAction::Start(_) | VideoAction::Stop if !caller => {
                        tracing::warn!("only the caller adds or removes video");
                        None
                    }
                    VideoAction::Start(file) => Some(media.add_video(file).await?),
                    VideoAction::Stop => Some(media.remove_video().await?),
                };
                if let Some(sdp) = offer {
                    chat.call_frame(CallClientFrame::Update(CallUpdate {
                        call_id: call_id.clone(),
                        kind: SdpKind::Offer,
                        sdp,
                    }));
                }
            }
            _ = tokio::time::sleep_until(pair_check_at.unwrap_or_else(never)), if pair_check_at.is_some() => {
                first_pair = media.stats().await.selected_pair;
                pair_check_at = first_pair
                    .is_none()
                    .then(|| Instant::now() + Duration::from_millis(100));
            }
            _ = tokio::time::sleep_until(restart_at.unwrap_or_else(never)), if restart_at.is_some() => {
                restart_at = None;
                tracing::info!("restarting ICE");
                let sdp = media.restart_offer().await?;
                ice_restarts += 1;
                chat.call_frame(CallClientFrame::Update(CallUpdate {
                    call_id: call_id.clone(),
                    kind: SdpKind::Offer,
                    sdp,
                }));
            }
            _ = tokio::time::sleep_until(hangup_at) => {
                chat.call_frame(CallClientFrame::Hangup(CallRef { call_id: call_id.clone() }));
                if connected_at.is_none() {
                    break Err(CallError::Timeout("media did not connect"));
                }
                break Ok(());
            }
            ev = media_events.recv() => match ev {
                Some(MediaEvent::Candidate(c)) => chat.call_frame(CallClientFrame::Ice(CallIce {
                    call_id: call_id.clone(),
                    candidate: c,
                })),
                Some(MediaEvent::State(RTCPeerConnectionState::Connected)) if connected_at.is_none() => {
                    tracing::info!(setup_ms = started.elapsed().as_millis() as u64, "media connected");
                    connected_at = Some(Instant::now());
                    if caller {
                        restart_at = opts.ice_restart_after.map(|d| Instant::now() + d);
                    }
                    media.start_sending(play.take()).await?;
                    // The pair in use: read while connected (after a hang-up the
                    // transport may be gone); the stats may lag the state change.
                    pair_check_at = Some(Instant::now());
                }
                Some(MediaEvent::State(RTCPeerConnectionState::Disconnected))
                    if caller && connected_at.is_some() && restart_at.is_none() =>
                {
                    // A network change: restart ICE at once.
                    restart_at = Some(Instant::now());
                }
                Some(MediaEvent::State(RTCPeerConnectionState::Failed)) => {
                    chat.call_frame(CallClientFrame::Hangup(CallRef { call_id: call_id.clone() }));
                    break Err(media::MediaError::Webrtc("ICE failed".into()).into());
                }
                Some(_) => {}
                None => break Err(CallError::Closed),
            },
            ev = events.recv() => match ev {
                None => break Err(CallError::Closed),
                Some(Event::Call(f)) => match f {
                    ServerFrame::CallAnswered(a) if a.call_id == call_id && !answered => {
                        answered = true;
                        media.accept_answer(&a.sdp).await?;
                    }
                    ServerFrame::CallUpdate(u) if u.call_id == call_id => match u.kind {
                        SdpKind::Offer => {
                            let sdp = media.update_answer(&u.sdp).await?;
                            ice_restarts += 1;
                            chat.call_frame(CallClientFrame::Update(CallUpdate {
                                call_id: call_id.clone(),
                                kind: SdpKind::Answer,
                                sdp,
                            }));
                        }
                        SdpKind::Answer => media.accept_answer(&u.sdp).await?,
                    },
                    ServerFrame::CallIce(i) if i.call_id == call_id => {
                        if let Err(e) = media.add_candidate(&i.candidate).await {
                            tracing::warn!(error = %e, "remote candidate refused");
                        }
                    }
                    ServerFrame::CallEnded(e) if e.call_id == call_id => {
                        ended_by_peer = Some(e.reason);
                        if connected_at.is_none() {
                            break Err(CallError::Ended(e.reason));
                        }
                        break Ok(());
                    }
                    _ => {}
                },
                Some(Event::Error(e)) if e.ref_type.as_deref().is_some_and(|t| t.starts_with("call.")) => {
                    break Err(CallError::Refused(format!("{}: {}", e.code, e.message)));
                }
                Some(_) => {}
            },
        }
    };
    let mut stats = media.stats().await;
    if stats.selected_pair.is_none() {
        stats.selected_pair = first_pair;
    }
    let recording = media.recording();
    media.close().await;
    // The video recording is complete only once the connection is closed.
    if stats.video.is_some() {
        stats.video = media.video_stats();
    }
    result?;
    Ok(CallReport {
        call_id,
        peer,
        ended_by_peer,
        connected: connected_at.is_some(),
        setup_time: connected_at.map(|c| c - started),
        stats,
        ice_restarts,
        recording,
    })
}
