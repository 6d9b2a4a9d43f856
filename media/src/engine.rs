//! The media engine: streaming ingest (hash, sniff, limits), resumable uploads,
//! finalisation (verify, thumbnail, dedupe, move into place), references and
//! garbage collection. The HTTP layer (`api`) is a thin shell over it.
//!
//! Ingest work runs in its own task, not in the request's future: if a client
//! disconnects, hyper drops the request future, but the task still records the
//! bytes a resumable upload received, or removes a simple upload's staging
//! object — so nothing is ever left half-stored.
//!
//! Thumbnailing (with its concurrency and memory limits) is in `process`,
//! resumable uploads in `resumable`.

mod process;
mod resumable;

use crate::blob::{Appender, BlobStore, ObjectKey, PartialState, UploadId};
use crate::budget::DecodeBudget;
use crate::config::MediaConfig;
use crate::error::MediaError;
use crate::hash::{BlobHash, ResumableSha256};
use crate::sniff::{self, Kind, OCTET_STREAM, SNIFF_LEN, Sniffed};
use crate::store::{self, BlobRecord, Claim, MediaStore, RefAdded};
use crate::thumb::ThumbOptions;
use crate::tus::ChecksumState;
use crate::video::Ffmpeg;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use natter_common::SharedClock;
use natter_common::ratelimit::KeyedLimiter;
use process::Processed;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// A pending blob older than this is a crashed upload.
const PENDING_GRACE_MS: i64 = 3600 * 1000;
/// Claims retried while another upload of the same bytes finishes.
const CLAIM_ATTEMPTS: u32 = 50;
const CLAIM_RETRY: Duration = Duration::from_millis(200);
/// Chunks queued for the hashing thread (each tens to hundreds of KiB).
const HASH_QUEUE: usize = 64;

/// The engine; shared by handlers and background jobs.
pub struct Media {
    pub(crate) cfg: MediaConfig,
    pub(crate) store: Arc<dyn MediaStore>,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) signer: crate::sign::UrlSigner,
    pub(crate) clock: SharedClock,
    pub(crate) public_url: String,
    /// A usable ffmpeg, or why there is none.
    pub(crate) ffmpeg: Result<Ffmpeg, String>,
    /// Image decodes at once (`media.thumbnail_concurrency`).
    thumb_permits: Arc<Semaphore>,
    /// Memory of all decodes together (`media.decode_memory_bytes`).
    decode_budget: DecodeBudget,
    upload_limiter: KeyedLimiter,
    /// Scratch files (videos fetched from S3 for ffmpeg).
    tmp_dir: PathBuf,
}

/// A blob that an upload ended in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its metadata.
    pub record: BlobRecord,
    /// The same bytes were already stored; this upload only added an owner.
    pub deduplicated: bool,
}

/// After a PATCH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchDone {
    /// Bytes received in all.
    pub offset: u64,
    /// Set when the upload completed.
    pub stored: Option<Stored>,
    /// Expiry, ms.
    pub expires_at: i64,
}

/// Kinds of references.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    /// A message carries the hash: extends the blob's life to `retention` after now.
    Message,
    /// A profile (avatar) uses the blob: holds it until the reference is removed.
    Profile,
}

impl RefKind {
    /// Parses `message` / `profile`.
    pub fn parse(s: &str) -> Result<Self, MediaError> {
        match s {
            "message" => Ok(RefKind::Message),
            "profile" => Ok(RefKind::Profile),
            other => Err(MediaError::InvalidRef(format!(
                "kind must be \"message\" or \"profile\", not {other:?}"
            ))),
        }
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RefKind::Message => "message",
            RefKind::Profile => "profile",
        }
    }

    /// Whether it holds the blob.
    pub fn holds(self) -> bool {
        matches!(self, RefKind::Profile)
    }
}

/// A reference id: 1–128 characters of `[A-Za-z0-9._:-]`.
pub fn check_ref_id(id: &str) -> Result<(), MediaError> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
    {
        return Err(MediaError::InvalidRef(
            "id must be 1-128 characters of A-Z a-z 0-9 . _ : -".into(),
        ));
    }
    Ok(())
}

/// What the collector did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs removed (with their thumbnails).
    pub blobs: u64,
    /// Bytes of blobs removed.
    pub bytes: u64,
    /// Expired resumable uploads removed.
    pub uploads: u64,
    /// Orphaned staging objects removed.
    pub staging: u64,
}

/// Hash, length and first bytes of what was received.
#[derive(Clone)]
struct Progress {
    hasher: ResumableSha256,
    len: u64,
    head: Vec<u8>,
    type_checked: bool,
}

impl Progress {
    fn new() -> Self {
        Self {
            hasher: ResumableSha256::new(),
            len: 0,
            head: Vec::with_capacity(SNIFF_LEN),
            type_checked: false,
        }
    }

    /// Counts a chunk and keeps the first bytes; hashing happens on the
    /// hashing thread (see `pump`).
    fn count(&mut self, chunk: &[u8]) {
        self.len += chunk.len() as u64;
        if self.head.len() < SNIFF_LEN {
            let take = (SNIFF_LEN - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
    }
}

/// How a body stream ended.
enum PumpEnd {
    /// All of it arrived.
    Eof,
    /// The connection broke or the body was malformed.
    BodyError(String),
}

/// Everything finalisation needs.
struct Finalize<'a> {
    id: &'a UploadId,
    progress: Progress,
    claimed: Option<BlobHash>,
    opaque: bool,
    owner: &'a str,
    upload: Option<&'a str>,
}

impl Media {
    /// Builds the engine; `cfg` must have passed `validate`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        cfg: MediaConfig,
        store: Arc<dyn MediaStore>,
        blobs: Arc<dyn BlobStore>,
        signer: crate::sign::UrlSigner,
        clock: SharedClock,
        public_url: String,
        ffmpeg: Result<Ffmpeg, String>,
        tmp_dir: PathBuf,
    ) -> Self {
        let permits = if cfg.thumbnail_concurrency == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        } else {
            cfg.thumbnail_concurrency
        };
        let upload_limiter = KeyedLimiter::new(cfg.limit_uploads_per_user);
        let decode_budget = DecodeBudget::new(cfg.decode_memory_bytes);
        Self {
            cfg,
            store,
            blobs,
            signer,
            clock,
            public_url,
            ffmpeg,
            thumb_permits: Arc::new(Semaphore::new(permits)),
            decode_budget,
            upload_limiter,
            tmp_dir,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &MediaConfig {
        &self.cfg
    }

    /// The metadata store.
    pub fn store(&self) -> &Arc<dyn MediaStore> {
        &self.store
    }

    /// The blob store.
    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    fn retention_ms(&self) -> i64 {
        i64::try_from(self.cfg.retention_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    fn thumb_options(&self) -> ThumbOptions {
        ThumbOptions {
            thumb_px: self.cfg.thumbnail_px,
            preview_px: self.cfg.preview_px,
            thumb_quality: self.cfg.thumbnail_quality,
            preview_quality: self.cfg.preview_quality,
            max_pixels: self.cfg.max_image_pixels,
        }
    }

    fn check_type(&self, sniffed: &Sniffed) -> Result<(), MediaError> {
        if self.cfg.allowed_types.iter().any(|t| t == sniffed.mime) {
            Ok(())
        } else {
            Err(MediaError::UnsupportedType { mime: sniffed.mime })
        }
    }

    /// Rate limit, opaque policy and claimed hash, common to both upload kinds.
    fn admit(
        &self,
        owner: &str,
        opaque: bool,
        claimed: Option<&BlobHash>,
    ) -> Result<(), MediaError> {
        self.upload_limiter
            .check(owner, self.now())
            .map_err(|r| MediaError::RateLimited(r.secs()))?;
        if opaque && !self.cfg.allow_opaque {
            return Err(MediaError::OpaqueNotAllowed);
        }
        if opaque && claimed.is_none() {
            return Err(MediaError::HashRequired);
        }
        Ok(())
    }

    fn quota(&self) -> u64 {
        self.cfg.quota_bytes_per_user
    }

    /// Pumps a body into an appender: hashes, sniffs (refusing a disallowed type
    /// as soon as the first bytes are in), and stops past `limit` bytes in all.
    ///
    /// SHA-256 runs on its own blocking thread, fed through a bounded channel,
    /// so hashing, reading the socket and writing storage overlap; the hash
    /// state comes back into `p` whatever the outcome (a resumable upload saves
    /// it with the bytes kept).
    #[allow(clippy::too_many_arguments)]
    async fn pump<S, E>(
        &self,
        body: &mut S,
        appender: &mut Box<dyn Appender>,
        p: &mut Progress,
        limit: u64,
        over_limit: impl Fn() -> MediaError,
        opaque: bool,
        checksum: Option<&mut ChecksumState>,
    ) -> Result<PumpEnd, MediaError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut hasher = std::mem::take(&mut p.hasher);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(HASH_QUEUE);
        let hashing = tokio::task::spawn_blocking(move || {
            while let Some(chunk) = rx.blocking_recv() {
                hasher.update(&chunk);
            }
            hasher
        });
        let result = self
            .pump_chunks(body, appender, p, limit, over_limit, opaque, checksum, &tx)
            .await;
        drop(tx);
        p.hasher = hashing
            .await
            .map_err(|e| MediaError::internal(format!("hashing thread failed: {e}")))?;
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn pump_chunks<S, E>(
        &self,
        body: &mut S,
        appender: &mut Box<dyn Appender>,
        p: &mut Progress,
        limit: u64,
        over_limit: impl Fn() -> MediaError,
        opaque: bool,
        mut checksum: Option<&mut ChecksumState>,
        hash_tx: &tokio::sync::mpsc::Sender<Bytes>,
    ) -> Result<PumpEnd, MediaError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        while let Some(item) = body.next().await {
            let chunk = match item {
                Ok(c) => c,
                Err(e) => return Ok(PumpEnd::BodyError(e.to_string())),
            };
            if p.len + chunk.len() as u64 > limit {
                return Err(over_limit());
            }
            p.count(&chunk);
            if let Some(c) = checksum.as_deref_mut() {
                c.update(&chunk);
            }
            if !opaque && !p.type_checked && p.head.len() >= SNIFF_LEN {
                self.check_type(&sniff::sniff(&p.head))?;
                p.type_checked = true;
            }
            // A clone of `Bytes` shares the buffer: no copy for the hasher.
            hash_tx
                .send(chunk.clone())
                .await
                .map_err(|_| MediaError::internal("hashing thread stopped"))?;
            appender.write(chunk).await?;
        }
        Ok(PumpEnd::Eof)
    }

    // ---------------------------------------------------------------- simple uploads

    /// Stores a whole body sent in one request.
    pub async fn upload<S, E>(
        self: &Arc<Self>,
        owner: String,
        claimed: Option<BlobHash>,
        opaque: bool,
        content_length: Option<u64>,
        body: S,
    ) -> Result<Stored, MediaError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let admitted = async {
            self.admit(&owner, opaque, claimed.as_ref())?;
            let max = self.cfg.max_upload_bytes;
            if content_length.is_some_and(|n| n > max) {
                return Err(MediaError::TooLarge { max });
            }
            if self.quota() != 0 {
                let usage = self.store.usage(&owner).await?;
                let used = usage.bytes + usage.reserved;
                if used + content_length.unwrap_or(0) > self.quota() {
                    return Err(MediaError::QuotaExceeded {
                        used,
                        quota: self.quota(),
                    });
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = admitted {
            record_upload("simple", Some(&e), Instant::now());
            drain(body, content_length).await;
            return Err(e);
        }
        let this = self.clone();
        let started = Instant::now();
        let result = tokio::spawn(async move {
            this.upload_task(owner, claimed, opaque, content_length, body)
                .await
        })
        .await
        .unwrap_or_else(|e| Err(MediaError::internal(format!("upload task failed: {e}"))));
        record_upload("simple", result.as_ref().err(), started);
        result
    }

    async fn upload_task<S, E>(
        &self,
        owner: String,
        claimed: Option<BlobHash>,
        opaque: bool,
        content_length: Option<u64>,
        mut body: S,
    ) -> Result<Stored, MediaError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let id = UploadId::random();
        let state = self.blobs.begin(&id).await?;
        let result = async {
            let mut appender = self.blobs.append(&id, &state).await?;
            let mut p = Progress::new();
            let max = self.cfg.max_upload_bytes;
            let end = self
                .pump(
                    &mut body,
                    &mut appender,
                    &mut p,
                    max,
                    || MediaError::TooLarge { max },
                    opaque,
                    None,
                )
                .await;
            let reason = match end {
                Ok(PumpEnd::Eof) if content_length.is_none_or(|n| n == p.len) => None,
                Ok(PumpEnd::Eof) => Some(format!(
                    "Content-Length was {}",
                    content_length.unwrap_or_default()
                )),
                Ok(PumpEnd::BodyError(reason)) => Some(reason),
                Err(e) => {
                    appender.abort().await;
                    return Err(e);
                }
            };
            if let Some(reason) = reason {
                appender.abort().await;
                return Err(MediaError::Truncated {
                    received: p.len,
                    reason,
                });
            }
            appender.finish(true).await?;
            self.finalize(Finalize {
                id: &id,
                progress: p,
                claimed,
                opaque,
                owner: &owner,
                upload: None,
            })
            .await
        }
        .await;
        if result.is_err() {
            // Nothing half-stored: the staging object goes with the failure.
            if let Err(e) = self.blobs.discard(&id, None).await {
                tracing::warn!(error = %e, "media: could not remove a failed upload's staging object");
            }
        }
        result
    }

    // ---------------------------------------------------------------- finalisation

    /// Verifies, thumbnails and moves a sealed staging object into place (or
    /// drops it when the same bytes are stored already). On error the staging
    /// object is left for the caller to discard or retry.
    async fn finalize(&self, f: Finalize<'_>) -> Result<Stored, MediaError> {
        let hash = f.progress.hasher.clone().finish();
        let len = f.progress.len;
        if let Some(claimed) = f.claimed
            && claimed != hash
        {
            return Err(MediaError::HashMismatch {
                claimed: claimed.to_hex(),
                actual: hash.to_hex(),
            });
        }
        let sniffed = if f.opaque {
            Sniffed {
                mime: OCTET_STREAM,
                kind: Kind::Other,
            }
        } else {
            let s = sniff::sniff(&f.progress.head);
            self.check_type(&s)?;
            s
        };
        let hex = hash.to_hex();
        // The same bytes stored already: no decoding, just a new owner.
        let already = self
            .store
            .blob(&hex)
            .await?
            .is_some_and(|b| b.state == store::state::READY);
        let processed = if already {
            Processed::none("")
        } else if f.opaque {
            Processed::none("opaque upload: stored as sent, no thumbnail")
        } else {
            self.process(f.id, &sniffed, len).await?
        };
        let now = self.now();
        let (tw, th, preview, pw, ph) = match &processed.thumbs {
            Some(t) => {
                use base64::Engine;
                (
                    Some(i64::from(t.thumb.width)),
                    Some(i64::from(t.thumb.height)),
                    Some(base64::engine::general_purpose::STANDARD.encode(&t.preview.bytes)),
                    Some(i64::from(t.preview.width)),
                    Some(i64::from(t.preview.height)),
                )
            }
            None => (None, None, None, None, None),
        };
        let mut record = BlobRecord {
            hash: hex.clone(),
            size: len as i64,
            content_type: sniffed.mime.to_owned(),
            opaque: f.opaque,
            state: store::state::PENDING.to_owned(),
            width: processed.width.map(i64::from),
            height: processed.height.map(i64::from),
            thumb_width: tw,
            thumb_height: th,
            preview,
            preview_width: pw,
            preview_height: ph,
            thumb_note: processed.note.clone(),
            uploader: f.owner.to_owned(),
            created_at: now,
            last_ref_at: now,
            held_refs: 0,
        };
        for _ in 0..CLAIM_ATTEMPTS {
            match self
                .store
                .claim_blob(&record, f.owner, self.quota(), f.upload, now)
                .await?
            {
                Claim::Created => {
                    let stored = async {
                        if let Some(t) = &processed.thumbs {
                            self.blobs
                                .put(&ObjectKey::Thumb(hash), Bytes::from(t.thumb.bytes.clone()))
                                .await?;
                        }
                        self.blobs.promote(f.id, &hash).await?;
                        self.store.mark_ready(&hex).await?;
                        Ok::<_, MediaError>(())
                    }
                    .await;
                    if let Err(e) = stored {
                        // Undo: the row (refunding the owner) and whatever was written.
                        if let Err(u) = self.store.unclaim(&hex).await {
                            tracing::warn!(error = %u, "media: unclaim failed; the collector will remove the pending blob");
                        }
                        let _ = self.blobs.delete(&ObjectKey::Thumb(hash)).await;
                        let _ = self.blobs.delete(&ObjectKey::Blob(hash)).await;
                        return Err(e);
                    }
                    record.state = store::state::READY.to_owned();
                    metrics::counter!("media_stored_bytes_total", "backend" => self.blobs.backend()).increment(len);
                    return Ok(Stored {
                        record,
                        deduplicated: false,
                    });
                }
                Claim::Existing(existing) => {
                    self.blobs.discard(f.id, None).await?;
                    metrics::counter!("media_deduplicated_total").increment(1);
                    return Ok(Stored {
                        record: *existing,
                        deduplicated: true,
                    });
                }
                Claim::QuotaExceeded { used, quota } => {
                    return Err(MediaError::QuotaExceeded { used, quota });
                }
                Claim::Busy => tokio::time::sleep(CLAIM_RETRY).await,
            }
        }
        Err(MediaError::Busy)
    }

    // Thumbnailing is in `process`, resumable uploads (TUS) in `resumable`.

    // ---------------------------------------------------------------- references

    /// Records that a message or profile uses a blob. Only an owner may: a
    /// reference keeps the blob, and so every owner's charge for it, alive,
    /// and knowing a hash must not be enough to pin someone else's upload
    /// (a user who has the bytes uploads them, is charged, and becomes an
    /// owner). Owners are only removed with the blob itself, so checking
    /// before the insert leaves no window: a deleted blob answers `NoBlob`.
    pub async fn add_reference(
        &self,
        hash: &BlobHash,
        kind: RefKind,
        ref_id: &str,
        by: &str,
    ) -> Result<RefAdded, MediaError> {
        check_ref_id(ref_id)?;
        let hex = hash.to_hex();
        if !self.store.is_owner(&hex, by).await? {
            return match self.store.blob(&hex).await? {
                Some(b) if b.state == store::state::READY => Err(MediaError::NotAnOwner),
                _ => Ok(RefAdded::NoBlob),
            };
        }
        let added = self
            .store
            .add_ref(
                &hash.to_hex(),
                kind.as_str(),
                ref_id,
                kind.holds(),
                by,
                self.now(),
            )
            .await?;
        Ok(added)
    }

    /// Removes a reference; false if there was none.
    pub async fn remove_reference(
        &self,
        hash: &BlobHash,
        kind: RefKind,
        ref_id: &str,
    ) -> Result<bool, MediaError> {
        check_ref_id(ref_id)?;
        Ok(self
            .store
            .remove_ref(&hash.to_hex(), kind.as_str(), ref_id, self.now())
            .await?)
    }

    /// A downloadable blob's metadata.
    pub async fn ready_blob(&self, hash: &BlobHash) -> Result<BlobRecord, MediaError> {
        match self.store.blob(&hash.to_hex()).await? {
            Some(b) if b.state == store::state::READY => Ok(b),
            _ => Err(MediaError::NotFound),
        }
    }

    /// When a blob expires (ms), or `None` while held.
    pub fn expires_at(&self, b: &BlobRecord) -> Option<i64> {
        b.expires_at(self.retention_ms())
    }

    // ---------------------------------------------------------------- garbage collection

    /// One collection pass: expired uploads, expired and crashed blobs (with
    /// thumbnails), and staging objects no upload owns any more.
    pub async fn collect_garbage(&self) -> Result<GcReport, MediaError> {
        let mut report = GcReport::default();
        let now = self.now();
        loop {
            let batch = self.store.expired_uploads(now, 100).await?;
            let n = batch.len();
            for row in batch {
                if !self.store.delete_expired_upload(&row.id, now).await? {
                    continue;
                }
                if row.completed_hash.is_none()
                    && let Ok(id) = row.id.parse::<UploadId>()
                {
                    let state: Option<PartialState> = serde_json::from_str(&row.backend_state).ok();
                    self.blobs.discard(&id, state.as_ref()).await?;
                }
                report.uploads += 1;
            }
            if n < 100 {
                break;
            }
        }
        let ref_cutoff = now.saturating_sub(self.retention_ms());
        let pending_cutoff = now - PENDING_GRACE_MS;
        loop {
            let batch = self
                .store
                .collectable_blobs(ref_cutoff, pending_cutoff, 100)
                .await?;
            let n = batch.len();
            let mut progressed = false;
            for b in batch {
                if !self
                    .store
                    .begin_delete(&b.hash, ref_cutoff, pending_cutoff)
                    .await?
                {
                    continue;
                }
                let Ok(hash) = b.hash.parse::<BlobHash>() else {
                    continue;
                };
                // Bytes first, row last: if we crash in between, the row (state
                // `deleting`) brings us back here.
                self.blobs.delete(&ObjectKey::Thumb(hash)).await?;
                self.blobs.delete(&ObjectKey::Blob(hash)).await?;
                self.store.finish_delete(&b.hash).await?;
                report.blobs += 1;
                report.bytes += b.size.max(0) as u64;
                progressed = true;
            }
            if n < 100 || !progressed {
                break;
            }
        }
        // Staging objects older than any live upload could be (expiry plus a
        // lease) and not named by an upload row: leftovers of crashes.
        let age = Duration::from_secs(
            u64::from(self.cfg.upload_expiry_secs) + u64::from(self.cfg.upload_lease_secs) + 3600,
        );
        let older_than =
            std::time::UNIX_EPOCH + Duration::from_millis(now.max(0) as u64).saturating_sub(age);
        for id in self.blobs.list_staging(older_than).await? {
            if self.store.upload(id.as_str()).await?.is_none() {
                self.blobs.discard(&id, None).await?;
                report.staging += 1;
            }
        }
        metrics::counter!("media_gc_blobs_deleted_total").increment(report.blobs);
        metrics::counter!("media_gc_bytes_deleted_total").increment(report.bytes);
        metrics::counter!("media_gc_uploads_expired_total").increment(report.uploads);
        metrics::counter!("media_gc_staging_removed_total").increment(report.staging);
        Ok(report)
    }
}

fn record_upload(kind: &'static str, error: Option<&MediaError>, started: Instant) {
    let outcome = error.map_or("stored", MediaError::label);
    metrics::counter!("media_uploads_total", "kind" => kind, "outcome" => outcome).increment(1);
    if error.is_none() {
        metrics::histogram!("media_upload_seconds", "kind" => kind)
            .record(started.elapsed().as_secs_f64());
    }
}

/// Reads and drops a refused request's body when it is small, so the client
/// gets the error response instead of a reset connection; large bodies are cut
/// off (the connection then closes, as with any server).
async fn drain<S, E>(mut body: S, declared: Option<u64>)
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    const DRAIN_MAX: u64 = 4 << 20;
    if declared.is_some_and(|n| n > DRAIN_MAX) {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let mut n = 0u64;
        while let Some(Ok(chunk)) = body.next().await {
            n += chunk.len() as u64;
            if n > DRAIN_MAX {
                break;
            }
        }
    })
    .await;
}
