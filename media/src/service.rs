//! Wiring: builds the media service from configuration and runs its
//! background jobs (garbage collection, expired resumable uploads).

use crate::api::MediaState;
use crate::blob::{BlobStore, FsBlobStore, S3BlobStore};
use crate::config::{BackendKind, MediaConfig};
use crate::engine::Media;
use crate::sign::UrlSigner;
use crate::store::{self, MediaStore};
use crate::video::{Ffmpeg, FfmpegLimits};
use natter_common::token::TokenKeys;
use natter_common::{Db, SharedClock, Shutdown};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What the binary needs to run media.
pub struct MediaService {
    state: MediaState,
}

impl MediaService {
    /// Validates the configuration, opens the metadata store (migrating when
    /// asked) and the blob backend (checking that an S3 bucket answers), reads
    /// or generates the URL-signing key, and looks for ffmpeg.
    pub async fn build(
        cfg: MediaConfig,
        db: &Db,
        migrate: bool,
        data_dir: &Path,
        clock: SharedClock,
        tokens: Arc<TokenKeys>,
        public_url: String,
    ) -> Result<Self, String> {
        cfg.validate()?;
        let store: Arc<dyn MediaStore> = store::for_db(db);
        if migrate {
            store
                .migrate()
                .await
                .map_err(|e| format!("media: migrations failed: {e}"))?;
        }
        let blobs: Arc<dyn BlobStore> = match cfg.backend {
            BackendKind::Fs => {
                let dir = if cfg.fs.dir.as_os_str().is_empty() {
                    data_dir.join("media")
                } else {
                    cfg.fs.dir.clone()
                };
                Arc::new(FsBlobStore::new(dir).map_err(|e| format!("media.fs.dir: {e}"))?)
            }
            BackendKind::S3 => Arc::new(S3BlobStore::connect(&cfg.s3).await?),
        };
        let key = natter_common::secrets_file::configured_or_generated(
            &cfg.signing_key,
            data_dir,
            "media-url-key",
        )
        .map_err(|e| format!("media.signing_key: {e}"))?;
        for key in &cfg.previous_signing_keys {
            natter_common::secrets_file::check_configured("media.previous_signing_keys[..]", key)
                .map_err(|e| e.to_string())?;
        }
        let previous: Vec<&[u8]> = cfg
            .previous_signing_keys
            .iter()
            .map(|k| k.expose().as_bytes())
            .collect();
        let signer = UrlSigner::new(key.expose().as_bytes(), &previous);
        let ffmpeg = if cfg.video_thumbnails {
            Ffmpeg::detect(&cfg.ffmpeg_path, FfmpegLimits::from(&cfg)).await
        } else {
            Err("video thumbnails are switched off".into())
        };
        match &ffmpeg {
            Ok(_) => tracing::info!(
                ffmpeg = %cfg.ffmpeg_path,
                concurrency = cfg.ffmpeg_concurrency,
                "media: video thumbnails enabled"
            ),
            Err(why) => tracing::info!(reason = %why, "media: no video thumbnails"),
        }
        tracing::info!(backend = blobs.backend(), "media: blob store ready");
        let media = Arc::new(Media::new(
            cfg,
            store,
            blobs,
            signer,
            clock,
            public_url,
            ffmpeg,
            data_dir.join("tmp"),
        ));
        Ok(Self {
            state: MediaState::new(
                media,
                tokens,
                Arc::new(natter_common::credentials::LiveCredentials::new(
                    db.clone(),
                    natter_common::credentials::LIVE_CACHE_TTL,
                )),
            ),
        })
    }

    /// The HTTP routes (`/v1/media…`).
    pub fn router(&self) -> axum::Router {
        crate::api::router(self.state.clone())
    }

    /// The engine, for in-process callers (references from other services
    /// wired by the binary, tests).
    pub fn media(&self) -> &Arc<Media> {
        self.state.media()
    }

    /// A readiness probe: the blob backend answers (a metadata request for an
    /// object that does not exist; for S3 one HEAD).
    pub fn readiness(
        &self,
    ) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
    + Send
    + Sync
    + 'static {
        let media = self.state.media().clone();
        move || {
            let media = media.clone();
            Box::pin(async move {
                let probe = crate::blob::ObjectKey::Blob(crate::BlobHash::from_bytes([0; 32]));
                media
                    .blobs()
                    .size(&probe)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("media blob store: {e}"))
            })
        }
    }

    /// Runs the garbage collector every `media.gc_interval_secs` until
    /// shutdown: expired resumable uploads, expired blobs and thumbnails,
    /// crashed uploads and orphaned staging objects.
    pub fn spawn_background(&self, shutdown: Shutdown) -> Vec<natter_common::parts::Part> {
        let media = self.state.media().clone();
        let every = Duration::from_secs(u64::from(media.config().gc_interval_secs));
        vec![natter_common::parts::Part::spawn("media-gc", async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        match media.collect_garbage().await {
                            Ok(r) if r != Default::default() => tracing::info!(
                                blobs = r.blobs, bytes = r.bytes, uploads = r.uploads, staging = r.staging,
                                "media: garbage collected"
                            ),
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "media: garbage collection failed"),
                        }
                    }
                }
            }
        })]
    }
}
