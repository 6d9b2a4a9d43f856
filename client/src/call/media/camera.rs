//! The camera's side of a call's media: its track, starting and stopping
//! it, muting it, and adding or removing video in a running call (which
//! needs a renegotiation: the returned offer goes out as `call.update`).

use super::{Media, MediaError, rand_u32, rtc_err};
use crate::call::video;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::peer_connection::PeerConnection;
use webrtc::rtp_transceiver::RtpSender;

/// A camera track on the peer connection.
pub(crate) struct Camera {
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    sender: Arc<dyn RtpSender>,
    /// Stops this camera's thread and tasks (a child of the call's token).
    stop: Option<CancellationToken>,
}

impl Camera {
    /// A VP8 track added to `pc` (sending starts with [`Media::start_camera`]).
    pub(crate) async fn add(
        pc: &Arc<dyn PeerConnection>,
        codec: &RTCRtpCodec,
        stream_id: &str,
    ) -> Result<Self, MediaError> {
        let ssrc = rand_u32();
        let track = Arc::new(
            TrackLocalStaticSample::new(
                Instant::now(),
                MediaStreamTrack::new(
                    stream_id.to_owned(),
                    format!("video-{stream_id}-{ssrc}"),
                    "natter-video".to_owned(),
                    RtpCodecKind::Video,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            ..Default::default()
                        },
                        codec: codec.clone(),
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
        Ok(Self {
            track,
            ssrc,
            sender,
            stop: None,
        })
    }
}

impl Media {
    /// Starts the camera track (added before) playing `file`.
    pub(crate) fn start_camera(&self, file: PathBuf) -> Result<(), MediaError> {
        let v = &self.video;
        let mut camera = v.camera.lock().unwrap_or_else(|e| e.into_inner());
        let Some(cam) = camera.as_mut() else {
            return Ok(());
        };
        if cam.stop.is_some() {
            return Ok(());
        }
        let stop = self.stop.child_token();
        video::start_sending(
            file,
            &v.opts,
            cam.track.clone(),
            cam.ssrc,
            video::VP8_PT,
            v.control.clone(),
            stop.clone(),
        )
        .map_err(|e| MediaError::Webrtc(format!("camera: {e}")))?;
        cam.stop = Some(stop);
        Ok(())
    }

    /// Turns the camera off (black pictures) or on, without renegotiating.
    pub(crate) fn set_camera_muted(&self, muted: bool) {
        self.video.control.set_muted(muted);
    }

    /// Adds video to a running call with `file` as the camera; returns the
    /// renegotiation offer.
    pub(crate) async fn add_video(&self, file: PathBuf) -> Result<String, MediaError> {
        video::check_camera(&file).map_err(|e| MediaError::Webrtc(format!("camera: {e}")))?;
        if self
            .video
            .camera
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return Err(MediaError::Webrtc("the camera is already on".into()));
        }
        let cam = Camera::add(&self.pc, &self.video.codec, &self.video.stream_id).await?;
        *self.video.camera.lock().unwrap_or_else(|e| e.into_inner()) = Some(cam);
        self.video.used.store(true, Ordering::Relaxed);
        self.start_camera(file)?;
        self.offer().await
    }

    /// Takes video out of a running call; returns the renegotiation offer.
    pub(crate) async fn remove_video(&self) -> Result<String, MediaError> {
        let cam = self
            .video
            .camera
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| MediaError::Webrtc("no camera to remove".into()))?;
        if let Some(stop) = &cam.stop {
            stop.cancel();
        }
        self.pc.remove_track(&cam.sender).await.map_err(rtc_err)?;
        self.offer().await
    }
}
