//! Simple (single-request) uploads and the usage report.

use super::types::*;
use super::{MediaState, media_info};
use crate::error::MediaError;
use crate::hash::BlobHash;
use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use natter_common::{ApiError, Authed};

/// Upload a file in one request. The body is streamed to storage while its
/// SHA-256 is computed (never held in memory whole); the type is sniffed from
/// the bytes. Images get a thumbnail and an inline preview; identical content
/// is stored once.
#[utoipa::path(
    post, path = "/v1/media", tag = "media",
    params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's bytes"),
    responses(
        (status = 201, description = "Stored", body = UploadResponse),
        (status = 200, description = "The same content was already stored", body = UploadResponse),
        (status = 400, description = "Invalid hash or query, truncated body", body = ErrorResponse),
        (status = 401, body = ErrorResponse),
        (status = 403, description = "Opaque uploads are switched off", body = ErrorResponse),
        (status = 413, description = "Over media.max_upload_bytes or the quota", body = ErrorResponse),
        (status = 415, description = "Sniffed type not allowed", body = ErrorResponse),
        (status = 422, description = "Hash mismatch, corrupt image, or too many pixels", body = ErrorResponse),
        (status = 429, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub(super) async fn upload(
    State(state): State<MediaState>,
    Authed(claims): Authed,
    query: Result<Query<UploadQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<UploadResponse>), ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let claimed = q
        .sha256
        .as_deref()
        .map(|h| h.parse::<BlobHash>().map_err(|_| MediaError::InvalidHash))
        .transpose()?;
    let content_length = content_length(&headers)?;
    let stored = state
        .media
        .upload(
            claims.sub,
            claimed,
            q.opaque.unwrap_or(false),
            content_length,
            body.into_data_stream(),
        )
        .await?;
    let status = if stored.deduplicated {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let media = media_info(&state.media, &stored.record)?;
    Ok((
        status,
        Json(UploadResponse {
            media,
            deduplicated: stored.deduplicated,
        }),
    ))
}

pub(super) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, MediaError> {
    headers
        .get(header::CONTENT_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| crate::tus::parse_u64("Content-Length", s).ok())
                .ok_or(MediaError::InvalidHeader {
                    name: "Content-Length",
                    reason: "must be a non-negative integer".into(),
                })
        })
        .transpose()
}

/// The caller's storage use and limits.
#[utoipa::path(
    get, path = "/v1/media/usage", tag = "media",
    responses((status = 200, body = UsageResponse), (status = 401, body = ErrorResponse)),
    security(("bearer" = []))
)]
pub(super) async fn usage(
    State(state): State<MediaState>,
    Authed(claims): Authed,
) -> Result<Json<UsageResponse>, ApiError> {
    let m = &state.media;
    let u = m.store.usage(&claims.sub).await.map_err(MediaError::from)?;
    let quota = m.cfg.quota_bytes_per_user;
    Ok(Json(UsageResponse {
        used_bytes: u.bytes,
        reserved_bytes: u.reserved,
        quota_bytes: (quota != 0).then_some(quota),
        open_uploads: u.open_uploads,
        max_upload_bytes: m.cfg.max_upload_bytes,
    }))
}
