//! Media metadata: one trait, implemented for SQLite and PostgreSQL from one
//! body of SQL (`sql.rs`), checked by one contract suite
//! (`tests/store_contract.rs`) against both.
//!
//! Each method that must be atomic (claiming a blob and charging its owner,
//! adding a reference, deleting a blob and refunding its owners) is one
//! transaction, so callers cannot get the ordering wrong. Quota checks lock the
//! user's usage row first, which serialises one user's uploads (and, in
//! SQLite, takes the write lock at the start of the transaction instead of
//! upgrading later, which could fail with "database is locked").

mod sql;

use async_trait::async_trait;
use natter_common::{Db, UnixMillis};
use std::sync::Arc;

pub use sql::{PgStore, SqliteStore};

/// A database failure.
#[derive(Debug, thiserror::Error)]
#[error("media store: {0}")]
pub struct StoreError(#[from] pub sqlx::Error);

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// Blob states.
pub mod state {
    /// Bytes being moved into place; not downloadable yet.
    pub const PENDING: &str = "pending";
    /// Downloadable.
    pub const READY: &str = "ready";
    /// Being removed by the collector.
    pub const DELETING: &str = "deleting";
}

/// A stored blob.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BlobRecord {
    /// SHA-256, lowercase hex.
    pub hash: String,
    /// Size in bytes.
    pub size: i64,
    /// Sniffed MIME type (`application/octet-stream` for opaque blobs).
    pub content_type: String,
    /// Uploaded as opaque (end-to-end encrypted).
    pub opaque: bool,
    /// See [`state`].
    pub state: String,
    /// Image width (as displayed).
    pub width: Option<i64>,
    /// Image height (as displayed).
    pub height: Option<i64>,
    /// Thumbnail width, when a thumbnail exists.
    pub thumb_width: Option<i64>,
    /// Thumbnail height.
    pub thumb_height: Option<i64>,
    /// Tiny JPEG preview, base64.
    pub preview: Option<String>,
    /// Preview width.
    pub preview_width: Option<i64>,
    /// Preview height.
    pub preview_height: Option<i64>,
    /// Why there is no thumbnail, when there is none.
    pub thumb_note: Option<String>,
    /// First uploader.
    pub uploader: String,
    /// Stored at.
    pub created_at: UnixMillis,
    /// Last reference (upload, message reference, profile release).
    pub last_ref_at: UnixMillis,
    /// References that hold the blob (profiles).
    pub held_refs: i64,
}

impl BlobRecord {
    /// Whether a thumbnail object exists.
    pub fn has_thumbnail(&self) -> bool {
        self.thumb_width.is_some()
    }

    /// When the blob expires with `retention_ms`, or `None` while held.
    pub fn expires_at(&self, retention_ms: i64) -> Option<UnixMillis> {
        (self.held_refs == 0).then_some(self.last_ref_at.saturating_add(retention_ms))
    }
}

/// Outcome of claiming a hash for an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// A new pending row is ours: move the bytes into place, then `mark_ready`.
    Created,
    /// The blob is already stored (and the caller is now one of its owners).
    Existing(Box<BlobRecord>),
    /// Another upload of the same bytes is being stored, or the collector is
    /// deleting them: try again shortly.
    Busy,
    /// The owner's quota would be exceeded; nothing changed.
    QuotaExceeded {
        /// Bytes in use, reservations included.
        used: u64,
        /// The quota.
        quota: u64,
    },
}

/// A reference to a blob.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BlobRef {
    /// `message` or `profile`.
    pub kind: String,
    /// Message id or user id.
    pub ref_id: String,
    /// Whether it holds the blob.
    pub holds: bool,
    /// Who added it.
    pub created_by: String,
    /// When.
    pub created_at: UnixMillis,
}

/// Outcome of adding a reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefAdded {
    /// New reference.
    Added,
    /// It was already there (idempotent).
    Exists,
    /// No such blob (or not downloadable).
    NoBlob,
}

/// A user's storage use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Bytes of live blobs the user uploaded.
    pub bytes: u64,
    /// Declared lengths of the user's open resumable uploads.
    pub reserved: u64,
    /// Open resumable uploads.
    pub open_uploads: u32,
}

/// A resumable upload.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UploadRow {
    /// Upload id (32 hex digits).
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// Declared length.
    pub length: i64,
    /// Bytes received and durable.
    pub received: i64,
    /// Opaque (end-to-end-encrypted) upload.
    pub opaque: bool,
    /// Hash the client claims (checked at completion).
    pub claimed_hash: Option<String>,
    /// The `Upload-Metadata` header as sent (echoed by HEAD).
    pub metadata: String,
    /// Saved SHA-256 state of the bytes received.
    pub hash_state: Vec<u8>,
    /// First bytes (for type sniffing).
    pub head: Vec<u8>,
    /// Backend progress ([`crate::blob::PartialState`] as JSON).
    pub backend_state: String,
    /// Created at.
    pub created_at: UnixMillis,
    /// Expires at (moved forward by every PATCH).
    pub expires_at: UnixMillis,
    /// The PATCH holding the upload.
    pub lease_token: Option<String>,
    /// Until when it holds it.
    pub lease_until: UnixMillis,
    /// Set once stored.
    pub completed_hash: Option<String>,
}

/// What a PATCH changed.
#[derive(Debug, Clone)]
pub struct UploadProgress {
    /// New received count.
    pub received: i64,
    /// Saved hash state.
    pub hash_state: Vec<u8>,
    /// First bytes.
    pub head: Vec<u8>,
    /// Backend state JSON.
    pub backend_state: String,
    /// New expiry.
    pub expires_at: UnixMillis,
}

/// Outcome of creating a resumable upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadCreated {
    /// Stored.
    Created,
    /// The declared length would exceed the quota.
    QuotaExceeded {
        /// Bytes in use, reservations included.
        used: u64,
        /// The quota.
        quota: u64,
    },
    /// The user has too many open uploads.
    TooManyOpen(u32),
}

/// Everything media stores besides the bytes.
#[async_trait]
pub trait MediaStore: Send + Sync + 'static {
    /// Creates the schema (idempotent).
    async fn migrate(&self) -> StoreResult<()>;

    // --- blobs ---
    /// A blob by hash, in any state.
    async fn blob(&self, hash: &str) -> StoreResult<Option<BlobRecord>>;
    /// In one transaction: makes `owner` an owner of `blob.hash` (charging
    /// `blob.size` once, within `quota` bytes, 0 = unlimited; the open upload
    /// `finishing_upload` no longer counts as a reservation), and inserts a
    /// pending row for it unless one exists. An existing ready blob has its last
    /// reference moved to `now`.
    async fn claim_blob(
        &self,
        blob: &BlobRecord,
        owner: &str,
        quota: u64,
        finishing_upload: Option<&str>,
        now: UnixMillis,
    ) -> StoreResult<Claim>;
    /// Makes a pending blob downloadable.
    async fn mark_ready(&self, hash: &str) -> StoreResult<()>;
    /// Undoes a `Created` claim whose bytes could not be stored: removes the
    /// pending row and refunds its owners.
    async fn unclaim(&self, hash: &str) -> StoreResult<()>;

    // --- references ---
    /// Adds a reference to a ready blob; a new one moves its last reference to
    /// `now`, and a holding one holds it.
    async fn add_ref(
        &self,
        hash: &str,
        kind: &str,
        ref_id: &str,
        holds: bool,
        by: &str,
        now: UnixMillis,
    ) -> StoreResult<RefAdded>;
    /// Removes a reference (moving the last reference to `now`); false if absent.
    async fn remove_ref(
        &self,
        hash: &str,
        kind: &str,
        ref_id: &str,
        now: UnixMillis,
    ) -> StoreResult<bool>;
    /// References of a blob.
    async fn refs(&self, hash: &str) -> StoreResult<Vec<BlobRef>>;
    /// Whether the user is one of the blob's owners (uploaded its bytes and
    /// is charged for them).
    async fn is_owner(&self, hash: &str, user_id: &str) -> StoreResult<bool>;
    /// A user's storage use.
    async fn usage(&self, user_id: &str) -> StoreResult<Usage>;

    // --- resumable uploads ---
    /// Stores a new upload if the user's quota (0 = unlimited) and open-upload
    /// limit allow its declared length.
    async fn create_upload(
        &self,
        u: &UploadRow,
        quota: u64,
        max_open: u32,
    ) -> StoreResult<UploadCreated>;
    /// An upload by id.
    async fn upload(&self, id: &str) -> StoreResult<Option<UploadRow>>;
    /// Takes the upload's lease for one PATCH unless another live lease holds
    /// it; returns the row as leased, or `None` (unknown, or busy).
    async fn lease_upload(
        &self,
        id: &str,
        token: &str,
        now: UnixMillis,
        until: UnixMillis,
    ) -> StoreResult<Option<UploadRow>>;
    /// Saves a PATCH's progress if the lease is still ours and `received` is
    /// still `expected_received`; with `release`, gives the lease back in the
    /// same write. Why in the same write: a client that reads the new offset
    /// (HEAD) and resumes at once must not find the upload still leased.
    async fn save_upload_progress(
        &self,
        id: &str,
        token: &str,
        expected_received: i64,
        p: &UploadProgress,
        release: bool,
    ) -> StoreResult<bool>;
    /// Gives the lease back.
    async fn release_upload(&self, id: &str, token: &str) -> StoreResult<()>;
    /// Marks the upload stored as `hash` and releases the lease; it stops
    /// counting against the quota.
    async fn complete_upload(&self, id: &str, hash: &str) -> StoreResult<()>;
    /// Deletes an upload; returns it if it existed.
    async fn delete_upload(&self, id: &str) -> StoreResult<Option<UploadRow>>;
    /// Uploads past their expiry and not leased.
    async fn expired_uploads(&self, now: UnixMillis, limit: i64) -> StoreResult<Vec<UploadRow>>;
    /// Deletes an upload only if it is still expired and unleased.
    async fn delete_expired_upload(&self, id: &str, now: UnixMillis) -> StoreResult<bool>;

    // --- garbage collection ---
    /// Blobs to collect: ready, unheld and last referenced at or before
    /// `ref_cutoff`; pending since before `pending_cutoff` (a crashed upload);
    /// or already being deleted.
    async fn collectable_blobs(
        &self,
        ref_cutoff: UnixMillis,
        pending_cutoff: UnixMillis,
        limit: i64,
    ) -> StoreResult<Vec<BlobRecord>>;
    /// Marks a blob `deleting` if it is still collectable; false if a reference
    /// or upload revived it meanwhile.
    async fn begin_delete(
        &self,
        hash: &str,
        ref_cutoff: UnixMillis,
        pending_cutoff: UnixMillis,
    ) -> StoreResult<bool>;
    /// Removes a `deleting` blob's row, owners (refunding their usage) and references.
    async fn finish_delete(&self, hash: &str) -> StoreResult<()>;
}

/// Opens the store for a pool.
pub fn for_db(db: &Db) -> Arc<dyn MediaStore> {
    match db {
        Db::Sqlite(pool) => Arc::new(SqliteStore::new(pool.clone())),
        Db::Postgres(pool) => Arc::new(PgStore::new(pool.clone())),
    }
}
