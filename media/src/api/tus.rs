//! Resumable uploads, TUS 1.0: creation (with upload), HEAD for the offset,
//! PATCH, checksum, expiration and termination. Every response carries
//! `Tus-Resumable: 1.0.0`; errors keep the JSON error body of the other
//! endpoints. A completed upload answers with `Natter-Media-Hash`, and its
//! details are at `GET /v1/media/{hash}/info`.

use super::MediaState;
use super::types::*;
use crate::blob::UploadId;
use crate::engine::PatchDone;
use crate::error::MediaError;
use crate::tus::{self, Checksum};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use natter_common::{ApiError, Authed};

const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
const UPLOAD_CHECKSUM: HeaderName = HeaderName::from_static("upload-checksum");
const MEDIA_HASH: HeaderName = HeaderName::from_static("natter-media-hash");

/// An error response with the TUS headers.
pub(super) struct TusError(ApiError, Option<u64>);

impl From<MediaError> for TusError {
    fn from(e: MediaError) -> Self {
        let offset = match &e {
            MediaError::OffsetMismatch { expected, .. } => Some(*expected),
            _ => None,
        };
        TusError(e.into(), offset)
    }
}

impl From<ApiError> for TusError {
    fn from(e: ApiError) -> Self {
        TusError(e, None)
    }
}

impl IntoResponse for TusError {
    fn into_response(self) -> Response {
        let mut r = self.0.into_response();
        r.headers_mut()
            .insert(TUS_RESUMABLE, HeaderValue::from_static(tus::VERSION));
        if let Some(offset) = self.1 {
            r.headers_mut()
                .insert(UPLOAD_OFFSET, HeaderValue::from(offset));
        }
        r
    }
}

fn header_str<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a str>, MediaError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str().map_err(|_| MediaError::InvalidHeader {
                name: "header",
                reason: format!("{name} is not visible ASCII"),
            })
        })
        .transpose()
}

fn require_version(headers: &HeaderMap) -> Result<(), MediaError> {
    match header_str(headers, &TUS_RESUMABLE)? {
        Some(tus::VERSION) => Ok(()),
        _ => Err(MediaError::UnsupportedTusVersion),
    }
}

fn parse_id(id: &str) -> Result<UploadId, MediaError> {
    id.parse().map_err(|_| MediaError::UploadNotFound)
}

fn upload_url(state: &MediaState, id: &str) -> String {
    format!(
        "{}/v1/media/uploads/{id}",
        state.media.public_url.trim_end_matches('/')
    )
}

fn expires(ms: i64) -> HeaderValue {
    // An HTTP date is always visible ASCII.
    HeaderValue::from_str(&tus::http_date(ms.div_euclid(1000)))
        .unwrap_or(HeaderValue::from_static(""))
}

/// Reads a PATCH-style body's headers: `Content-Type`, `Content-Length`,
/// `Upload-Checksum`.
fn body_headers(headers: &HeaderMap) -> Result<(Option<u64>, Option<Checksum>), MediaError> {
    let ct = header_str(headers, &header::CONTENT_TYPE)?.unwrap_or_default();
    if ct.split(';').next().unwrap_or_default().trim() != tus::PATCH_CONTENT_TYPE {
        return Err(MediaError::WrongPatchContentType);
    }
    let len = super::upload::content_length(headers)?;
    let checksum = header_str(headers, &UPLOAD_CHECKSUM)?
        .map(tus::parse_checksum)
        .transpose()?;
    Ok((len, checksum))
}

/// The server's TUS capabilities.
#[utoipa::path(
    options, path = "/v1/media/uploads", tag = "resumable",
    responses((status = 204, description = "Tus-Version, Tus-Extension, Tus-Max-Size and Tus-Checksum-Algorithm headers"))
)]
pub(super) async fn options(State(state): State<MediaState>) -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (TUS_RESUMABLE, HeaderValue::from_static(tus::VERSION)),
            (
                HeaderName::from_static("tus-version"),
                HeaderValue::from_static(tus::VERSION),
            ),
            (
                HeaderName::from_static("tus-extension"),
                HeaderValue::from_static(tus::EXTENSIONS),
            ),
            (
                HeaderName::from_static("tus-max-size"),
                HeaderValue::from(state.media.cfg.max_upload_bytes),
            ),
            (
                HeaderName::from_static("tus-checksum-algorithm"),
                HeaderValue::from_static(tus::CHECKSUM_ALGORITHMS),
            ),
        ],
    )
        .into_response()
}

/// Create a resumable upload. `Upload-Length` is required (the length is
/// reserved against the quota); `Upload-Metadata` may carry `sha256` (hex, the
/// hash the content must have) and `opaque`. A body with
/// `Content-Type: application/offset+octet-stream` is the first chunk.
#[utoipa::path(
    post, path = "/v1/media/uploads", tag = "resumable",
    params(
        ("Tus-Resumable" = String, Header, description = "1.0.0"),
        ("Upload-Length" = u64, Header, description = "Total size in bytes"),
        ("Upload-Metadata" = Option<String>, Header, description = "key base64(value) pairs: sha256, opaque, filename"),
    ),
    responses(
        (status = 201, description = "Created; Location is the upload URL, Upload-Offset and Upload-Expires set"),
        (status = 400, body = ErrorResponse),
        (status = 401, body = ErrorResponse),
        (status = 409, description = "Too many unfinished uploads", body = ErrorResponse),
        (status = 412, description = "Tus-Resumable missing or not 1.0.0", body = ErrorResponse),
        (status = 413, description = "Over media.max_upload_bytes or the quota", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub(super) async fn create(
    State(state): State<MediaState>,
    auth: Result<Authed, ApiError>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, TusError> {
    let Authed(claims) = auth?;
    require_version(&headers)?;
    let length = header_str(&headers, &UPLOAD_LENGTH)?
        .ok_or(MediaError::InvalidHeader {
            name: "Upload-Length",
            reason: "required (deferred lengths are not supported)".into(),
        })
        .and_then(|v| tus::parse_u64("Upload-Length", v))?;
    let meta = tus::parse_metadata(header_str(&headers, &UPLOAD_METADATA)?.unwrap_or_default())?;
    // creation-with-upload: a body typed as a PATCH body is the first chunk.
    let with_body = header_str(&headers, &header::CONTENT_TYPE)?.is_some_and(|ct| {
        ct.split(';').next().unwrap_or_default().trim() == tus::PATCH_CONTENT_TYPE
    });
    let body_info = if with_body {
        Some(body_headers(&headers)?)
    } else {
        None
    };
    let row = state.media.tus_create(&claims.sub, length, meta).await?;
    let id: UploadId = parse_id(&row.id)?;
    let mut offset = 0;
    let mut expires_at = row.expires_at;
    let mut hash = None;
    if body_info.is_some() || length == 0 {
        // creation-with-upload (or an empty upload, complete at once).
        let (len, checksum) = body_info.unwrap_or((Some(0), None));
        let done = state
            .media
            .tus_patch(&claims.sub, &id, 0, len, checksum, body.into_data_stream())
            .await?;
        offset = done.offset;
        expires_at = done.expires_at;
        hash = done.stored.map(|s| s.record.hash);
    }
    let mut r = (
        StatusCode::CREATED,
        [
            (TUS_RESUMABLE, HeaderValue::from_static(tus::VERSION)),
            (
                header::LOCATION,
                HeaderValue::from_str(&upload_url(&state, &row.id))
                    .map_err(MediaError::internal)?,
            ),
            (UPLOAD_OFFSET, HeaderValue::from(offset)),
            (UPLOAD_EXPIRES, expires(expires_at)),
        ],
    )
        .into_response();
    if let Some(h) = hash {
        r.headers_mut().insert(
            MEDIA_HASH,
            HeaderValue::from_str(&h).map_err(MediaError::internal)?,
        );
    }
    Ok(r)
}

/// Where an upload is: `Upload-Offset` says from which byte to resume.
#[utoipa::path(
    head, path = "/v1/media/uploads/{id}", tag = "resumable",
    params(("id" = String, Path, description = "Upload id (from Location)"), ("Tus-Resumable" = String, Header, description = "1.0.0")),
    responses(
        (status = 200, description = "Upload-Offset, Upload-Length, Upload-Expires; Natter-Media-Hash once complete"),
        (status = 404, description = "Unknown upload"),
        (status = 410, description = "Expired"),
    ),
    security(("bearer" = []))
)]
pub(super) async fn status(
    State(state): State<MediaState>,
    auth: Result<Authed, ApiError>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, TusError> {
    let Authed(claims) = auth?;
    require_version(&headers)?;
    let id = parse_id(&id)?;
    let row = state.media.tus_upload(&claims.sub, &id).await?;
    let mut r = (
        StatusCode::OK,
        [
            (TUS_RESUMABLE, HeaderValue::from_static(tus::VERSION)),
            (UPLOAD_OFFSET, HeaderValue::from(row.received.max(0) as u64)),
            (UPLOAD_LENGTH, HeaderValue::from(row.length.max(0) as u64)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response();
    let h = r.headers_mut();
    if row.completed_hash.is_none() {
        h.insert(UPLOAD_EXPIRES, expires(row.expires_at));
    }
    if !row.metadata.is_empty()
        && let Ok(v) = HeaderValue::from_str(&row.metadata)
    {
        h.insert(UPLOAD_METADATA, v);
    }
    if let Some(hash) = &row.completed_hash
        && let Ok(v) = HeaderValue::from_str(hash)
    {
        h.insert(MEDIA_HASH, v);
    }
    Ok(r)
}

/// Append bytes at `Upload-Offset`. If the connection breaks, the bytes that
/// arrived are kept (unless `Upload-Checksum` was sent): HEAD, then resume.
/// The PATCH that completes the upload stores the blob (verifying the claimed
/// hash, refusing bombs and corrupt images) and returns `Natter-Media-Hash`.
#[utoipa::path(
    patch, path = "/v1/media/uploads/{id}", tag = "resumable",
    params(
        ("id" = String, Path, description = "Upload id"),
        ("Tus-Resumable" = String, Header, description = "1.0.0"),
        ("Upload-Offset" = u64, Header, description = "Must equal the upload's offset"),
        ("Upload-Checksum" = Option<String>, Header, description = "sha1|sha256 <base64 digest> of this body"),
    ),
    request_body(content = Vec<u8>, content_type = "application/offset+octet-stream"),
    responses(
        (status = 204, description = "Appended; Upload-Offset is the new offset"),
        (status = 400, body = ErrorResponse),
        (status = 404, body = ErrorResponse),
        (status = 409, description = "Wrong Upload-Offset (the response's Upload-Offset is right)", body = ErrorResponse),
        (status = 410, description = "Expired", body = ErrorResponse),
        (status = 413, description = "Past Upload-Length, or quota", body = ErrorResponse),
        (status = 415, description = "Wrong Content-Type, or the content's type is not allowed", body = ErrorResponse),
        (status = 422, description = "Hash mismatch, corrupt image, too many pixels (the upload is deleted)", body = ErrorResponse),
        (status = 423, description = "Another PATCH is in progress", body = ErrorResponse),
        (status = 460, description = "Upload-Checksum mismatch (nothing of this body was kept)", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub(super) async fn patch(
    State(state): State<MediaState>,
    auth: Result<Authed, ApiError>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, TusError> {
    let Authed(claims) = auth?;
    require_version(&headers)?;
    let id = parse_id(&id)?;
    let (len, checksum) = body_headers(&headers)?;
    let offset = header_str(&headers, &UPLOAD_OFFSET)?
        .ok_or(MediaError::InvalidHeader {
            name: "Upload-Offset",
            reason: "required".into(),
        })
        .and_then(|v| tus::parse_u64("Upload-Offset", v))?;
    let PatchDone {
        offset,
        stored,
        expires_at,
    } = state
        .media
        .tus_patch(
            &claims.sub,
            &id,
            offset,
            len,
            checksum,
            body.into_data_stream(),
        )
        .await?;
    let mut r = (
        StatusCode::NO_CONTENT,
        [
            (TUS_RESUMABLE, HeaderValue::from_static(tus::VERSION)),
            (UPLOAD_OFFSET, HeaderValue::from(offset)),
        ],
    )
        .into_response();
    match stored {
        Some(s) => {
            r.headers_mut().insert(
                MEDIA_HASH,
                HeaderValue::from_str(&s.record.hash).map_err(MediaError::internal)?,
            );
        }
        None => {
            r.headers_mut().insert(UPLOAD_EXPIRES, expires(expires_at));
        }
    }
    Ok(r)
}

/// Abandon an upload; its bytes are deleted.
#[utoipa::path(
    delete, path = "/v1/media/uploads/{id}", tag = "resumable",
    params(("id" = String, Path, description = "Upload id"), ("Tus-Resumable" = String, Header, description = "1.0.0")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorResponse),
        (status = 423, description = "A PATCH is in progress", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub(super) async fn terminate(
    State(state): State<MediaState>,
    auth: Result<Authed, ApiError>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, TusError> {
    let Authed(claims) = auth?;
    require_version(&headers)?;
    let id = parse_id(&id)?;
    state.media.tus_terminate(&claims.sub, &id).await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(TUS_RESUMABLE, HeaderValue::from_static(tus::VERSION))],
    )
        .into_response())
}
