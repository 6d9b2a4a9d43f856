//! Resumable uploads (TUS 1.0): creation, PATCH (with its lease), and
//! termination.

use super::{Finalize, Media, PatchDone, Progress, PumpEnd, Stored, drain, record_upload};
use crate::blob::{PartialState, UploadId};
use crate::error::MediaError;
use crate::hash::{BlobHash, ResumableSha256};
use crate::sniff::{self, SNIFF_LEN};
use crate::store::{UploadCreated, UploadProgress, UploadRow};
use crate::tus::UploadMetadata;
use bytes::Bytes;
use futures_util::Stream;
use std::sync::Arc;
use std::time::Instant;

impl Media {
    /// TUS creation: reserves `length` bytes of the owner's quota.
    pub async fn tus_create(
        &self,
        owner: &str,
        length: u64,
        meta: UploadMetadata,
    ) -> Result<UploadRow, MediaError> {
        self.admit(owner, meta.opaque, meta.sha256.as_ref())?;
        let max = self.cfg.max_upload_bytes;
        if length > max {
            return Err(MediaError::TooLarge { max });
        }
        let id = UploadId::random();
        let state = self.blobs.begin(&id).await?;
        let now = self.now();
        let row = UploadRow {
            id: id.to_string(),
            user_id: owner.to_owned(),
            length: length as i64,
            received: 0,
            opaque: meta.opaque,
            claimed_hash: meta.sha256.map(|h| h.to_hex()),
            metadata: meta.raw,
            hash_state: ResumableSha256::new().save(),
            head: Vec::new(),
            backend_state: serde_json::to_string(&state).map_err(MediaError::internal)?,
            created_at: now,
            expires_at: now + i64::from(self.cfg.upload_expiry_secs) * 1000,
            lease_token: None,
            lease_until: 0,
            completed_hash: None,
        };
        let created = self
            .store
            .create_upload(&row, self.quota(), self.cfg.max_open_uploads_per_user)
            .await;
        let refused = match created {
            Ok(UploadCreated::Created) => None,
            Ok(UploadCreated::QuotaExceeded { used, quota }) => {
                Some(MediaError::QuotaExceeded { used, quota })
            }
            Ok(UploadCreated::TooManyOpen(open)) => Some(MediaError::TooManyOpenUploads { open }),
            Err(e) => Some(e.into()),
        };
        if let Some(e) = refused {
            let _ = self.blobs.discard(&id, Some(&state)).await;
            return Err(e);
        }
        metrics::counter!("media_resumable_created_total").increment(1);
        Ok(row)
    }

    /// The caller's upload, checked for ownership (others' uploads do not exist
    /// for it) and expiry.
    pub async fn tus_upload(&self, owner: &str, id: &UploadId) -> Result<UploadRow, MediaError> {
        let row = self
            .store
            .upload(id.as_str())
            .await?
            .filter(|r| r.user_id == owner);
        let row = row.ok_or(MediaError::UploadNotFound)?;
        if row.completed_hash.is_none() && row.expires_at <= self.now() {
            return Err(MediaError::UploadExpired);
        }
        Ok(row)
    }

    /// TUS PATCH: appends a body at `offset`.
    pub async fn tus_patch<S, E>(
        self: &Arc<Self>,
        owner: &str,
        id: &UploadId,
        offset: u64,
        content_length: Option<u64>,
        checksum: Option<crate::tus::Checksum>,
        body: S,
    ) -> Result<PatchDone, MediaError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let checked = self.patch_precheck(owner, id, offset, content_length).await;
        let (row, token) = match checked {
            Ok(Ok(leased)) => leased,
            Ok(Err(done)) => {
                drain(body, content_length).await;
                return Ok(done);
            }
            Err(e) => {
                drain(body, content_length).await;
                return Err(e);
            }
        };
        let this = self.clone();
        let id = id.clone();
        let started = Instant::now();
        let result = tokio::spawn(async move {
            let r = this.patch_task(&row, &id, &token, checksum, body).await;
            if r.is_err() {
                // Best effort: a row deleted by termination has no lease to give back.
                let _ = this.store.release_upload(id.as_str(), &token).await;
            }
            r
        })
        .await
        .unwrap_or_else(|e| Err(MediaError::internal(format!("upload task failed: {e}"))));
        match &result {
            Ok(PatchDone {
                stored: Some(_), ..
            }) => record_upload("resumable", None, started),
            Err(e) => record_upload("resumable", Some(e), started),
            Ok(_) => {}
        }
        result
    }

    /// A PATCH's checks before any byte is read, and its lease: `Ok(Ok(..))` to
    /// go on, `Ok(Err(done))` for a replay of a finished upload.
    async fn patch_precheck(
        &self,
        owner: &str,
        id: &UploadId,
        offset: u64,
        content_length: Option<u64>,
    ) -> Result<Result<(UploadRow, String), PatchDone>, MediaError> {
        let row = self.tus_upload(owner, id).await?;
        let length = row.length as u64;
        if let Some(hash) = &row.completed_hash {
            // A retry of the final PATCH whose response was lost.
            if offset != length {
                return Err(MediaError::OffsetMismatch {
                    expected: length,
                    given: offset,
                });
            }
            let record = self
                .store
                .blob(hash)
                .await?
                .ok_or(MediaError::UploadNotFound)?;
            return Ok(Err(PatchDone {
                offset: length,
                stored: Some(Stored {
                    record,
                    deduplicated: false,
                }),
                expires_at: row.expires_at,
            }));
        }
        if offset != row.received as u64 {
            return Err(MediaError::OffsetMismatch {
                expected: row.received as u64,
                given: offset,
            });
        }
        if content_length.is_some_and(|n| offset.saturating_add(n) > length) {
            return Err(MediaError::ExceedsLength { length });
        }
        let token = natter_common::random::token();
        let now = self.now();
        let lease_until = now + i64::from(self.cfg.upload_lease_secs) * 1000;
        // A lease still recorded (it can only be a lapsed one, or we would not
        // get ours) means a writer may still be running.
        let stale_writer = row.lease_token.is_some();
        let Some(row) = self
            .store
            .lease_upload(id.as_str(), &token, now, lease_until)
            .await?
        else {
            return Err(MediaError::UploadBusy);
        };
        if stale_writer && !row.backend_state.is_empty() {
            let state: PartialState =
                serde_json::from_str(&row.backend_state).map_err(MediaError::internal)?;
            if !state.sealed {
                self.blobs.take_over(id, &state).await?;
            }
        }
        if row.received as u64 != offset {
            // Another PATCH finished between our read and the lease.
            self.store.release_upload(id.as_str(), &token).await?;
            return Err(MediaError::OffsetMismatch {
                expected: row.received as u64,
                given: offset,
            });
        }
        Ok(Ok((row, token)))
    }

    async fn patch_task<S, E>(
        &self,
        row: &UploadRow,
        id: &UploadId,
        token: &str,
        checksum: Option<crate::tus::Checksum>,
        mut body: S,
    ) -> Result<PatchDone, MediaError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let length = row.length as u64;
        let state: PartialState =
            serde_json::from_str(&row.backend_state).map_err(MediaError::internal)?;
        let hasher = ResumableSha256::restore(&row.hash_state)
            .ok_or_else(|| MediaError::internal("bad saved hash state"))?;
        let mut p = Progress {
            hasher,
            len: row.received as u64,
            type_checked: row.head.len() >= SNIFF_LEN,
            head: row.head.clone(),
        };
        let mut new_state = state.clone();
        let mut cut_off: Option<String> = None;
        if !state.sealed {
            let mut appender = self.blobs.append(id, &state).await?;
            let mut sum = checksum.as_ref().map(|c| c.start());
            let end = self
                .pump(
                    &mut body,
                    &mut appender,
                    &mut p,
                    length,
                    || MediaError::ExceedsLength { length },
                    row.opaque,
                    sum.as_mut(),
                )
                .await;
            match end {
                Err(e @ MediaError::UnsupportedType { .. }) => {
                    appender.abort().await;
                    // The wrong type will never become right: drop the whole upload.
                    self.terminate(id, Some(&state)).await;
                    return Err(e);
                }
                Err(e) => {
                    appender.abort().await;
                    return Err(e);
                }
                Ok(PumpEnd::BodyError(reason)) if sum.is_some() => {
                    // A checksummed body must arrive whole to be verified.
                    appender.abort().await;
                    return Err(MediaError::Truncated {
                        received: p.len - row.received as u64,
                        reason,
                    });
                }
                Ok(PumpEnd::BodyError(reason)) => cut_off = Some(reason),
                Ok(PumpEnd::Eof) => {}
            }
            if let Some(sum) = sum
                && !sum.matches()
            {
                appender.abort().await;
                return Err(MediaError::ChecksumMismatch);
            }
            let complete = p.len == length;
            if complete && !row.opaque && !p.type_checked {
                // Shorter than the sniff window: checked now that all of it is in.
                if let Err(e) = self.check_type(&sniff::sniff(&p.head)) {
                    appender.abort().await;
                    self.terminate(id, Some(&state)).await;
                    return Err(e);
                }
            }
            new_state = appender.finish(complete).await?;
            let progress = UploadProgress {
                received: p.len as i64,
                hash_state: p.hasher.save(),
                head: p.head.clone(),
                backend_state: serde_json::to_string(&new_state).map_err(MediaError::internal)?,
                expires_at: self.now() + i64::from(self.cfg.upload_expiry_secs) * 1000,
            };
            // An unfinished upload's lease goes back with its progress; a
            // complete one keeps it through finalisation.
            if !self
                .store
                .save_upload_progress(id.as_str(), token, row.received, &progress, !complete)
                .await?
            {
                // Our lease lapsed and another request took over.
                return Err(MediaError::UploadBusy);
            }
            if !complete {
                if let Some(reason) = &cut_off {
                    tracing::info!(upload = %id, received = p.len, reason = %reason, "media: resumable upload interrupted; bytes kept");
                }
                return Ok(PatchDone {
                    offset: p.len,
                    stored: None,
                    expires_at: progress.expires_at,
                });
            }
        }
        let claimed = match &row.claimed_hash {
            Some(h) => Some(h.parse::<BlobHash>().map_err(MediaError::internal)?),
            None => None,
        };
        let finalized = self
            .finalize(Finalize {
                id,
                progress: p.clone(),
                claimed,
                opaque: row.opaque,
                owner: &row.user_id,
                upload: Some(id.as_str()),
            })
            .await;
        match finalized {
            Ok(stored) => {
                self.store
                    .complete_upload(id.as_str(), &stored.record.hash)
                    .await?;
                Ok(PatchDone {
                    offset: length,
                    stored: Some(stored),
                    expires_at: row.expires_at,
                })
            }
            Err(e) if e.is_client_error() => {
                // Mismatched hash, corrupt or bomb image, quota: the bytes can
                // never be accepted, so nothing of them stays.
                self.terminate(id, Some(&new_state)).await;
                Err(e)
            }
            // Server-side trouble: keep the sealed bytes; a PATCH at the final
            // offset retries the finalisation.
            Err(e) => Err(e),
        }
    }

    /// Removes an upload's row and bytes (best effort; the collector retries).
    async fn terminate(&self, id: &UploadId, state: Option<&PartialState>) {
        if let Err(e) = self.store.delete_upload(id.as_str()).await {
            tracing::warn!(error = %e, upload = %id, "media: could not delete an upload row");
        }
        if let Err(e) = self.blobs.discard(id, state).await {
            tracing::warn!(error = %e, upload = %id, "media: could not discard an upload's bytes");
        }
    }

    /// TUS termination.
    pub async fn tus_terminate(&self, owner: &str, id: &UploadId) -> Result<(), MediaError> {
        let row = self
            .store
            .upload(id.as_str())
            .await?
            .filter(|r| r.user_id == owner);
        let row = row.ok_or(MediaError::UploadNotFound)?;
        if row.lease_token.is_some() && row.lease_until > self.now() {
            return Err(MediaError::UploadBusy);
        }
        let state: Option<PartialState> = serde_json::from_str(&row.backend_state).ok();
        self.store.delete_upload(id.as_str()).await?;
        if row.completed_hash.is_none() {
            self.blobs.discard(id, state.as_ref()).await?;
        }
        Ok(())
    }
}
