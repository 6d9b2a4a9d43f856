//! Thumbnailing at finalisation, and what bounds it: image decodes wait for
//! one of `media.thumbnail_concurrency` slots and for their memory from the
//! process-wide decode budget (`crate::budget`), always in that order; ffmpeg
//! runs wait (boundedly) for one of `media.ffmpeg_concurrency` slots, then for
//! the budget to decode their frame. Every path takes the budget last, so no
//! two of them wait on each other.

use super::Media;
use crate::blob::{ObjectKey, UploadId};
use crate::error::MediaError;
use crate::sniff::{self, Kind, Sniffed};
use crate::thumb::{self, Thumbnails};
use std::path::PathBuf;
use std::time::Instant;

/// First bytes read to find an image header; grown up to [`MAX_HEADER_READ`].
const HEADER_READ: u64 = 64 << 10;
/// JPEG headers can sit behind large EXIF/ICC segments; past this we give up.
const MAX_HEADER_READ: u64 = 1 << 20;

/// What finalisation learned about the content.
pub(super) struct Processed {
    pub(super) width: Option<u32>,
    pub(super) height: Option<u32>,
    pub(super) thumbs: Option<Thumbnails>,
    pub(super) note: Option<String>,
}

impl Processed {
    pub(super) fn none(note: impl Into<String>) -> Self {
        Self {
            width: None,
            height: None,
            thumbs: None,
            note: Some(note.into()),
        }
    }
}

impl Media {
    /// Thumbnails what can be thumbnailed; refuses bombs and corrupt images.
    pub(super) async fn process(
        &self,
        id: &UploadId,
        sniffed: &Sniffed,
        len: u64,
    ) -> Result<Processed, MediaError> {
        match sniffed.kind {
            Kind::Image(format) => {
                let processed = self.process_image(id, format, len).await;
                // Every refused image is counted here, whichever check refused it
                // (header, pixel limit found in the header or while decoding, the
                // decoder itself).
                match &processed {
                    Err(MediaError::CorruptImage(_)) => {
                        metrics::counter!("media_images_refused_total", "reason" => "corrupt")
                            .increment(1);
                    }
                    Err(MediaError::ImageTooLarge { .. }) => {
                        metrics::counter!("media_images_refused_total", "reason" => "too_many_pixels")
                            .increment(1);
                    }
                    Err(MediaError::DecodeBudget { .. }) => {
                        metrics::counter!("media_images_refused_total", "reason" => "decode_memory")
                            .increment(1);
                    }
                    _ => {}
                }
                processed
            }
            Kind::Video(container) => Ok(self.process_video(id, container, len).await),
            Kind::OtherImage => Ok(Processed::none(format!(
                "no thumbnail: {} images are stored but not decoded by this server",
                sniffed.mime
            ))),
            Kind::Audio | Kind::Other => Ok(Processed::none("no thumbnail: not an image or video")),
        }
    }

    async fn read_range(&self, key: &ObjectKey, end: u64) -> Result<Vec<u8>, MediaError> {
        use futures_util::TryStreamExt;
        let read = self
            .blobs
            .get(key, Some(0..end))
            .await?
            .ok_or_else(|| MediaError::internal("staging object vanished"))?;
        let mut out = Vec::with_capacity(end as usize);
        let mut body = read.body;
        while let Some(chunk) = body.try_next().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    async fn process_image(
        &self,
        id: &UploadId,
        format: sniff::ImageFormat,
        len: u64,
    ) -> Result<Processed, MediaError> {
        let key = ObjectKey::Staging(id.clone());
        // The bomb check reads the header only: never a decode of an image
        // whose declared size is over the limit.
        let mut want = HEADER_READ.min(len);
        let header = loop {
            let head = self.read_range(&key, want).await?;
            match crate::header::parse(format, &head) {
                Ok(h) => break h,
                Err(crate::header::HeaderError::Incomplete(_))
                    if want < len && want < MAX_HEADER_READ =>
                {
                    want = (want * 4).min(len).min(MAX_HEADER_READ);
                }
                Err(crate::header::HeaderError::Incomplete(_)) => {
                    return Err(MediaError::CorruptImage(format!(
                        "no image header within the first {} bytes",
                        want.min(len)
                    )));
                }
                Err(e) => return Err(MediaError::CorruptImage(e.to_string())),
            }
        };
        if header.pixels() > self.cfg.max_image_pixels {
            let (width, height) = header.largest_size();
            return Err(MediaError::ImageTooLarge {
                width,
                height,
                max: self.cfg.max_image_pixels,
            });
        }
        // What this decode may hold, the file included; refused at once when
        // it could never fit, rather than after queueing for a slot.
        let need = thumb::decode_cost(&header, len);
        let over_budget = |e: crate::budget::BudgetError| match e {
            crate::budget::BudgetError::TooLarge { need, budget } => {
                MediaError::DecodeBudget { need, budget }
            }
            crate::budget::BudgetError::Closed => MediaError::internal(e),
        };
        self.decode_budget.check(need).map_err(over_budget)?;
        let slot = self
            .thumb_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| MediaError::internal("thumbnail semaphore closed"))?;
        let memory = self
            .decode_budget
            .reserve(need)
            .await
            .map_err(over_budget)?;
        let data = self
            .blobs
            .read_all(&key, len)
            .await?
            .ok_or_else(|| MediaError::internal("staging object vanished"))?;
        let opts = self.thumb_options();
        let started = Instant::now();
        let made = tokio::task::spawn_blocking(move || {
            // Held by the decoding thread, so they are given back when the
            // decode ends even if this future is dropped first.
            let _held = (slot, memory);
            thumb::thumbnails(&data, &header, &opts)
        })
        .await
        .map_err(|_| MediaError::CorruptImage("the decoder failed on this data".into()))?;
        metrics::histogram!("media_thumbnail_seconds", "kind" => "image")
            .record(started.elapsed().as_secs_f64());
        match made {
            Ok(t) => {
                let (w, h) = header.display_size();
                Ok(Processed {
                    width: Some(w),
                    height: Some(h),
                    thumbs: Some(t),
                    note: None,
                })
            }
            Err(thumb::ThumbError::TooManyPixels { width, height, max }) => {
                Err(MediaError::ImageTooLarge { width, height, max })
            }
            Err(thumb::ThumbError::Corrupt(m)) => Err(MediaError::CorruptImage(m)),
        }
    }

    async fn process_video(
        &self,
        id: &UploadId,
        container: sniff::VideoContainer,
        len: u64,
    ) -> Processed {
        if !self.cfg.video_thumbnails {
            return Processed::none(
                "no video thumbnail: video thumbnails are switched off on this server",
            );
        }
        let ffmpeg = match &self.ffmpeg {
            Ok(f) => f,
            Err(why) => {
                return Processed::none(format!(
                    "no video thumbnail: ffmpeg is not available on this server ({why})"
                ));
            }
        };
        // The slot comes first: a video that finds none is not even fetched
        // from S3 to scratch, and scratch copies are bounded by the cap too.
        let slot = match ffmpeg.slot().await {
            Ok(slot) => slot,
            Err(e) => {
                // Operators see it in the logs, the uploader in `thumbnail.reason`.
                tracing::warn!(upload = %id, error = %e, "media: video stored without a thumbnail");
                return Processed::none(format!("no video thumbnail: {e}"));
            }
        };
        let key = ObjectKey::Staging(id.clone());
        let (path, scratch) = match self.blobs.local_path(&key) {
            Some(p) => (p, false),
            None => match self.fetch_to_scratch(&key, id, len).await {
                Ok(p) => (p, true),
                Err(e) => {
                    tracing::warn!(error = %e, "media: could not fetch a video for ffmpeg");
                    return Processed::none(
                        "no video thumbnail: the video could not be read back for ffmpeg",
                    );
                }
            },
        };
        let started = Instant::now();
        let frame = ffmpeg
            .first_frame(slot, &path, container, self.cfg.thumbnail_px)
            .await;
        if scratch {
            let _ = tokio::fs::remove_file(&path).await;
        }
        let frame = match frame {
            Ok(f) => f,
            Err(e) => return Processed::none(format!("no video thumbnail: {e}")),
        };
        // The frame is decoded like any image: its memory comes from the budget.
        let header = match crate::header::parse(sniff::ImageFormat::Jpeg, &frame) {
            Ok(h) => h,
            Err(e) => return Processed::none(format!("no video thumbnail: {e}")),
        };
        let memory = match self
            .decode_budget
            .reserve(thumb::decode_cost(&header, frame.len() as u64))
            .await
        {
            Ok(m) => m,
            Err(e) => return Processed::none(format!("no video thumbnail: {e}")),
        };
        let opts = self.thumb_options();
        let made = tokio::task::spawn_blocking(move || {
            let _held = memory;
            thumb::from_frame(&frame, &opts)
        })
        .await;
        metrics::histogram!("media_thumbnail_seconds", "kind" => "video")
            .record(started.elapsed().as_secs_f64());
        match made {
            Ok(Ok(t)) => Processed {
                width: None,
                height: None,
                thumbs: Some(t),
                note: None,
            },
            Ok(Err(e)) => Processed::none(format!("no video thumbnail: {e}")),
            Err(_) => Processed::none("no video thumbnail: the frame could not be decoded"),
        }
    }

    async fn fetch_to_scratch(
        &self,
        key: &ObjectKey,
        id: &UploadId,
        len: u64,
    ) -> Result<PathBuf, MediaError> {
        use futures_util::TryStreamExt;
        use tokio::io::AsyncWriteExt;
        tokio::fs::create_dir_all(&self.tmp_dir)
            .await
            .map_err(MediaError::internal)?;
        let path = self.tmp_dir.join(format!("{id}.video"));
        let read = self
            .blobs
            .get(key, Some(0..len))
            .await?
            .ok_or_else(|| MediaError::internal("staging object vanished"))?;
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(MediaError::internal)?;
        let mut body = read.body;
        let copied = async {
            while let Some(chunk) = body.try_next().await? {
                file.write_all(&chunk).await.map_err(MediaError::internal)?;
            }
            file.flush().await.map_err(MediaError::internal)
        }
        .await;
        if let Err(e) = copied {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e);
        }
        Ok(path)
    }
}
