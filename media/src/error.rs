//! What can go wrong with media requests, each with its HTTP status and stable
//! code (see `docs/media.md`).

use axum::http::StatusCode;
use natter_common::ApiError;

/// A media request failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// A hash that is not 64 hex digits.
    #[error("a media hash is 64 hexadecimal digits (the SHA-256 of the content)")]
    InvalidHash,
    /// Opaque uploads must say which hash they will have.
    #[error("an opaque upload must claim its SHA-256 (sha256=<hex>)")]
    HashRequired,
    /// Opaque uploads are switched off.
    #[error("this server does not accept opaque uploads")]
    OpaqueNotAllowed,
    /// Larger than `media.max_upload_bytes`.
    #[error("the upload is larger than the limit of {max} bytes")]
    TooLarge {
        /// The limit.
        max: u64,
    },
    /// Over the per-user quota.
    #[error("storage quota exceeded: {used} of {quota} bytes in use")]
    QuotaExceeded {
        /// In use (reservations included).
        used: u64,
        /// Quota.
        quota: u64,
    },
    /// Too many open resumable uploads.
    #[error("too many unfinished uploads ({open}); finish or delete some first")]
    TooManyOpenUploads {
        /// Open now.
        open: u32,
    },
    /// The sniffed type is not allowed.
    #[error("content of type {mime} is not accepted")]
    UnsupportedType {
        /// Sniffed type.
        mime: &'static str,
    },
    /// The content does not have the hash the client claimed.
    #[error("the content's SHA-256 is {actual}, not the claimed {claimed}")]
    HashMismatch {
        /// Claimed.
        claimed: String,
        /// Computed.
        actual: String,
    },
    /// The request body ended early or broke.
    #[error("the upload was cut off after {received} bytes: {reason}")]
    Truncated {
        /// Bytes received.
        received: u64,
        /// What happened.
        reason: String,
    },
    /// The image header declares too many pixels (decompression bomb).
    #[error("image is {width}×{height} pixels; at most {max} pixels are accepted")]
    ImageTooLarge {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Limit.
        max: u64,
    },
    /// Decoding the image would need more memory than the whole process-wide
    /// decode budget (`media.decode_memory_bytes`).
    #[error(
        "decoding this image needs about {need} bytes of memory; this server decodes at most {budget} bytes at once"
    )]
    DecodeBudget {
        /// Bytes the decode would reserve.
        need: u64,
        /// The budget.
        budget: u64,
    },
    /// The image cannot be decoded.
    #[error("corrupt image: {0}")]
    CorruptImage(String),
    /// No such resumable upload (or not the caller's).
    #[error("no such upload")]
    UploadNotFound,
    /// The resumable upload expired.
    #[error("this upload expired; start a new one")]
    UploadExpired,
    /// Another PATCH is writing to the upload.
    #[error("another request is writing to this upload; retry after it ends")]
    UploadBusy,
    /// `Upload-Offset` is not where the upload is.
    #[error("Upload-Offset is {given} but the upload has {expected} bytes; resume from {expected}")]
    OffsetMismatch {
        /// The upload's offset.
        expected: u64,
        /// Sent.
        given: u64,
    },
    /// More bytes than `Upload-Length`.
    #[error("the body goes past the declared Upload-Length of {length} bytes")]
    ExceedsLength {
        /// Declared length.
        length: u64,
    },
    /// `Upload-Checksum` does not match the body.
    #[error("the body does not match its Upload-Checksum; nothing of it was stored")]
    ChecksumMismatch,
    /// `Upload-Checksum` names an algorithm we do not support.
    #[error("unsupported checksum algorithm {0:?} (use sha1 or sha256)")]
    UnsupportedChecksum(String),
    /// A malformed header.
    #[error("invalid {name} header: {reason}")]
    InvalidHeader {
        /// Header.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// Missing or other `Tus-Resumable` version.
    #[error("Tus-Resumable: 1.0.0 is required")]
    UnsupportedTusVersion,
    /// Wrong body type for a PATCH.
    #[error("PATCH bodies must have Content-Type: application/offset+octet-stream")]
    WrongPatchContentType,
    /// No such blob (or thumbnail).
    #[error("no such media")]
    NotFound,
    /// A signed URL whose time is up.
    #[error("this signed URL expired; ask for a new one")]
    UrlExpired,
    /// A signed URL whose signature does not match.
    #[error("the URL signature is invalid")]
    BadSignature,
    /// A reference kind or id we do not accept.
    #[error("invalid reference: {0}")]
    InvalidRef(String),
    /// A reference to a blob the caller did not upload.
    #[error(
        "only an owner of this media (a user who uploaded its bytes) may reference it; upload it to become one"
    )]
    NotAnOwner,
    /// Temporarily unable (a concurrent upload or deletion of the same bytes).
    #[error("the same content is being stored or deleted right now; retry shortly")]
    Busy,
    /// Rate limited.
    #[error("too many uploads; retry in {0} s")]
    RateLimited(u64),
    /// Anything else; logged once, shown as "internal error".
    #[error("internal error: {0}")]
    Internal(String),
}

/// TUS's status for a checksum mismatch (TUS 1.0 checksum extension).
pub const CHECKSUM_MISMATCH: u16 = 460;

impl MediaError {
    /// An internal error from anything displayable.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        MediaError::Internal(e.to_string())
    }

    /// Status and stable code.
    pub fn status_code(&self) -> (StatusCode, &'static str) {
        use MediaError::*;
        match self {
            InvalidHash => (StatusCode::BAD_REQUEST, "invalid_hash"),
            HashRequired => (StatusCode::BAD_REQUEST, "hash_required"),
            OpaqueNotAllowed => (StatusCode::FORBIDDEN, "opaque_not_allowed"),
            TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            QuotaExceeded { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded"),
            TooManyOpenUploads { .. } => (StatusCode::CONFLICT, "too_many_open_uploads"),
            UnsupportedType { .. } => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_type"),
            HashMismatch { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "hash_mismatch"),
            Truncated { .. } => (StatusCode::BAD_REQUEST, "truncated_upload"),
            ImageTooLarge { .. } | DecodeBudget { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "image_too_large")
            }
            CorruptImage(_) => (StatusCode::UNPROCESSABLE_ENTITY, "corrupt_image"),
            UploadNotFound => (StatusCode::NOT_FOUND, "upload_not_found"),
            UploadExpired => (StatusCode::GONE, "upload_expired"),
            UploadBusy => (StatusCode::LOCKED, "upload_busy"),
            OffsetMismatch { .. } => (StatusCode::CONFLICT, "offset_mismatch"),
            ExceedsLength { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "exceeds_upload_length"),
            ChecksumMismatch => (
                StatusCode::from_u16(CHECKSUM_MISMATCH).unwrap_or(StatusCode::BAD_REQUEST),
                "checksum_mismatch",
            ),
            UnsupportedChecksum(_) => (StatusCode::BAD_REQUEST, "unsupported_checksum_algorithm"),
            InvalidHeader { .. } => (StatusCode::BAD_REQUEST, "invalid_header"),
            UnsupportedTusVersion => (StatusCode::PRECONDITION_FAILED, "unsupported_tus_version"),
            WrongPatchContentType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "wrong_content_type"),
            NotFound => (StatusCode::NOT_FOUND, "not_found"),
            UrlExpired => (StatusCode::FORBIDDEN, "url_expired"),
            BadSignature => (StatusCode::FORBIDDEN, "invalid_signature"),
            InvalidRef(_) => (StatusCode::BAD_REQUEST, "invalid_reference"),
            NotAnOwner => (StatusCode::FORBIDDEN, "not_an_owner"),
            Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }

    /// Whether the client caused it (as opposed to the server or its backends).
    pub fn is_client_error(&self) -> bool {
        self.status_code().0.is_client_error()
    }

    /// Short label for metrics.
    pub fn label(&self) -> &'static str {
        self.status_code().1
    }
}

impl From<MediaError> for ApiError {
    fn from(e: MediaError) -> Self {
        let (status, code) = e.status_code();
        match &e {
            MediaError::Internal(cause) => ApiError::internal(cause),
            MediaError::RateLimited(secs) => ApiError::too_many(code, e.to_string(), *secs),
            MediaError::Busy => ApiError {
                retry_after_secs: Some(1),
                ..ApiError::new(status, code, e.to_string())
            },
            MediaError::QuotaExceeded { used, quota } => ApiError::new(status, code, e.to_string())
                .with_details(serde_json::json!({"used_bytes": used, "quota_bytes": quota})),
            MediaError::HashMismatch { claimed, actual } => {
                ApiError::new(status, code, e.to_string())
                    .with_details(serde_json::json!({"claimed": claimed, "actual": actual}))
            }
            MediaError::OffsetMismatch { expected, .. } => {
                ApiError::new(status, code, e.to_string())
                    .with_details(serde_json::json!({"offset": expected}))
            }
            _ => ApiError::new(status, code, e.to_string()),
        }
    }
}

impl From<crate::store::StoreError> for MediaError {
    fn from(e: crate::store::StoreError) -> Self {
        MediaError::Internal(e.to_string())
    }
}

impl From<crate::blob::BlobError> for MediaError {
    fn from(e: crate::blob::BlobError) -> Self {
        MediaError::Internal(e.to_string())
    }
}
