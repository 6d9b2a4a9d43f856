//! Request and response bodies of the media API (JSON). Field names are public API.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A stored blob, as clients see it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MediaInfo {
    /// SHA-256 of the content, lowercase hex: the blob's id. Put this in messages.
    pub hash: String,
    /// Size in bytes.
    pub size: u64,
    /// Type sniffed from the bytes (`application/octet-stream` for opaque blobs).
    pub content_type: String,
    /// Stored as sent by the client (end-to-end encrypted); never thumbnailed.
    pub opaque: bool,
    /// Image width as displayed (after EXIF orientation), for images.
    pub width: Option<u32>,
    /// Image height as displayed, for images.
    pub height: Option<u32>,
    /// The thumbnail, or why there is none.
    pub thumbnail: ThumbnailInfo,
    /// A tiny JPEG preview to put inline in the message, for images and videos.
    pub preview: Option<Preview>,
    /// A signed download URL for the blob (no token needed).
    pub url: String,
    /// When `url` stops working (Unix seconds).
    pub url_expires_at: i64,
    /// When the blob will be deleted unless referenced again (Unix seconds);
    /// `null` while a profile holds it.
    pub expires_at: Option<i64>,
}

/// Whether a thumbnail exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ThumbnailStatus {
    /// A JPEG thumbnail is stored beside the blob.
    Created,
    /// None was made; `reason` says why.
    None,
}

/// The thumbnail of a blob.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ThumbnailInfo {
    /// `created` or `none`.
    pub status: ThumbnailStatus,
    /// Width (when created).
    pub width: Option<u32>,
    /// Height (when created).
    pub height: Option<u32>,
    /// Signed URL of the JPEG (when created).
    pub url: Option<String>,
    /// Why there is no thumbnail (e.g. "ffmpeg is not available on this server").
    pub reason: Option<String>,
}

/// An inline preview image.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Preview {
    /// Always `image/jpeg`.
    pub content_type: String,
    /// Width (at most 32).
    pub width: u32,
    /// Height (at most 32).
    pub height: u32,
    /// The JPEG, standard base64.
    pub data_base64: String,
}

/// The result of an upload.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UploadResponse {
    /// The stored blob.
    #[serde(flatten)]
    pub media: MediaInfo,
    /// The same content was stored already; this upload was not stored again.
    pub deduplicated: bool,
}

/// Query of a simple upload.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// The SHA-256 the client expects (hex); the upload fails if the content differs.
    /// Required with `opaque=true`.
    pub sha256: Option<String>,
    /// Store the bytes as they are (end-to-end-encrypted media): typed
    /// `application/octet-stream`, no sniffing restrictions, no thumbnail.
    pub opaque: Option<bool>,
}

/// Query of a signed download URL.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SignedQuery {
    /// Expiry, Unix seconds.
    pub exp: Option<i64>,
    /// Signature (base64url HMAC-SHA256).
    pub sig: Option<String>,
}

/// Add a reference to a blob.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefRequest {
    /// `message` (extends the blob's life by the retention period from now) or
    /// `profile` (holds the blob until the reference is removed; `id` must be
    /// the caller's own user id).
    pub kind: String,
    /// Message id, or user id for `profile`: 1–128 of `A-Z a-z 0-9 . _ : -`.
    pub id: String,
}

/// A reference that exists.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RefResponse {
    /// The blob.
    pub hash: String,
    /// Kind.
    pub kind: String,
    /// Id.
    pub id: String,
    /// False when the same reference existed already.
    pub created: bool,
    /// When the blob will expire now (Unix seconds), `null` while held.
    pub expires_at: Option<i64>,
}

/// The caller's storage use.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UsageResponse {
    /// Bytes of live blobs the caller uploaded.
    pub used_bytes: u64,
    /// Declared lengths of the caller's unfinished resumable uploads.
    pub reserved_bytes: u64,
    /// The quota (`null` = unlimited).
    pub quota_bytes: Option<u64>,
    /// Unfinished resumable uploads.
    pub open_uploads: u32,
    /// Largest single upload accepted.
    pub max_upload_bytes: u64,
}

/// Error body: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    /// `{"code": "...", "message": "..."}` plus endpoint-specific fields.
    #[schema(value_type = Object)]
    pub error: serde_json::Value,
}
