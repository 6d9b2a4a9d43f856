//! Where blob bytes live: a small trait with a local-filesystem and an S3
//! implementation, checked by one contract suite (`tests/blob_contract.rs`).
//!
//! Every upload is written to a staging object first (`staging/<upload id>`),
//! appended to over one or many requests, sealed, and only moved to its final
//! key (`blobs/<hash>`) once its hash has been verified — so a failed or
//! refused upload never leaves anything under `blobs/`. Keys are built from
//! parsed hashes and upload ids only, never from request text.

mod fs;
mod s3;

use crate::hash::BlobHash;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::time::SystemTime;

pub use fs::FsBlobStore;
pub use s3::S3BlobStore;

/// A backend failure, with the operation and key.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{backend} blob store: {op} {key}: {message}")]
pub struct BlobError {
    /// `fs` or `s3`.
    pub backend: &'static str,
    /// What was attempted.
    pub op: &'static str,
    /// The key involved.
    pub key: String,
    /// The cause.
    pub message: String,
}

/// Result alias.
pub type BlobResult<T> = Result<T, BlobError>;

/// The id of an upload (and of its staging object): 32 lowercase hex digits.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct UploadId(String);

impl UploadId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(hex::encode(natter_common::random::bytes::<16>()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UploadId {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        if s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(())
        }
    }
}

impl std::fmt::Display for UploadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for UploadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UploadId({})", self.0)
    }
}

/// An object in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectKey {
    /// A verified blob.
    Blob(BlobHash),
    /// The JPEG thumbnail of a blob.
    Thumb(BlobHash),
    /// The sealed staging object of an upload.
    Staging(UploadId),
}

impl ObjectKey {
    /// The relative key: `blobs/ab/<hash>`, `thumbs/ab/<hash>.jpg`, `staging/<id>`.
    /// The two-digit fan-out keeps directories small on filesystems.
    pub fn path(&self) -> String {
        match self {
            ObjectKey::Blob(h) => {
                let h = h.to_hex();
                format!("blobs/{}/{h}", &h[..2])
            }
            ObjectKey::Thumb(h) => {
                let h = h.to_hex();
                format!("thumbs/{}/{h}.jpg", &h[..2])
            }
            ObjectKey::Staging(id) => format!("staging/{id}"),
        }
    }
}

/// How far a staging object has been written, stored with a resumable upload
/// so that any node can continue it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialState {
    /// Bytes durably appended.
    pub len: u64,
    /// The staging object is complete and readable.
    #[serde(default)]
    pub sealed: bool,
    /// S3 only: multipart upload progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Partial>,
}

/// S3 multipart progress: whole parts uploaded, plus a tail shorter than a part
/// kept as its own object until the next append fills a part.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Partial {
    /// The multipart upload, once the first part was sent.
    pub multipart_id: Option<String>,
    /// Parts in order.
    pub parts: Vec<S3Part>,
    /// Bytes in the tail object.
    pub tail: u64,
}

/// One uploaded part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Part {
    /// Part number (1-based).
    pub number: i32,
    /// ETag returned for it.
    pub etag: String,
    /// Size in bytes.
    pub size: u64,
}

/// A stream of bytes read from the store.
pub type ByteStream = Pin<Box<dyn Stream<Item = BlobResult<Bytes>> + Send>>;

/// An object being read.
pub struct ObjectRead {
    /// Size of the whole object.
    pub size: u64,
    /// The bytes asked for.
    pub body: ByteStream,
}

/// Appends to a staging object. Dropping it without [`finish`](Appender::finish)
/// discards what it wrote: the next append starts again from the last finished
/// state.
#[async_trait]
pub trait Appender: Send {
    /// Appends bytes.
    async fn write(&mut self, chunk: Bytes) -> BlobResult<()>;
    /// Makes everything written durable and returns the new state; with `seal`,
    /// also makes the staging object complete and readable.
    async fn finish(self: Box<Self>, seal: bool) -> BlobResult<PartialState>;
    /// Gives up: waits for work in flight, keeps nothing past the last finished
    /// state. Call it instead of dropping, so no late write races the next append.
    async fn abort(self: Box<Self>);
}

/// Blob storage.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// `fs` or `s3`, for logs and metrics.
    fn backend(&self) -> &'static str;
    /// Creates an empty staging object for `id`.
    async fn begin(&self, id: &UploadId) -> BlobResult<PartialState>;
    /// Opens the staging object for appending after `state.len` bytes.
    async fn append(&self, id: &UploadId, state: &PartialState) -> BlobResult<Box<dyn Appender>>;
    /// A PATCH has taken over `id` from one whose lease lapsed while it was
    /// still running (a stalled client): make sure that writer can no longer
    /// change the staging object, whose first `state.len` bytes are the ones to
    /// keep. The default does nothing, for backends where a writer's bytes only
    /// count once the writer records them.
    async fn take_over(&self, _id: &UploadId, _state: &PartialState) -> BlobResult<()> {
        Ok(())
    }
    /// Moves the sealed staging object of `id` to `Blob(hash)` (replacing an
    /// identical one if present).
    async fn promote(&self, id: &UploadId, hash: &BlobHash) -> BlobResult<()>;
    /// Removes everything an upload wrote (staging object, parts, tail).
    /// Idempotent.
    async fn discard(&self, id: &UploadId, state: Option<&PartialState>) -> BlobResult<()>;
    /// Writes a small object in one go (thumbnails), atomically.
    async fn put(&self, key: &ObjectKey, data: Bytes) -> BlobResult<()>;
    /// Reads an object, or the byte range `range` of it; `None` if it does not exist.
    async fn get(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> BlobResult<Option<ObjectRead>>;
    /// The size of an object, if it exists.
    async fn size(&self, key: &ObjectKey) -> BlobResult<Option<u64>>;
    /// Deletes an object. Idempotent.
    async fn delete(&self, key: &ObjectKey) -> BlobResult<()>;
    /// Staging objects last written before `older_than` (for the sweeper).
    async fn list_staging(&self, older_than: SystemTime) -> BlobResult<Vec<UploadId>>;
    /// A local file path for an object, when the backend has one (ffmpeg reads it).
    fn local_path(&self, key: &ObjectKey) -> Option<PathBuf>;

    /// Reads a whole object into memory, refusing objects larger than `max`.
    async fn read_all(&self, key: &ObjectKey, max: u64) -> BlobResult<Option<Bytes>> {
        use futures_util::TryStreamExt;
        let Some(read) = self.get(key, None).await? else {
            return Ok(None);
        };
        if read.size > max {
            return Err(BlobError {
                backend: self.backend(),
                op: "read_all",
                key: key.path(),
                message: format!("object is {} bytes, more than {max}", read.size),
            });
        }
        let mut buf = bytes::BytesMut::with_capacity(read.size as usize);
        let mut body = read.body;
        while let Some(chunk) = body.try_next().await? {
            buf.extend_from_slice(&chunk);
        }
        Ok(Some(buf.freeze()))
    }
}
