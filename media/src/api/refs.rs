//! References: messages and profiles say they use a blob, which keeps it alive
//! (see `docs/media.md`, "Lifecycle").

use super::types::*;
use super::{MediaState, parse_hash};
use crate::engine::RefKind;
use crate::error::MediaError;
use crate::store::RefAdded;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use natter_common::{ApiError, ApiJson, Authed};

/// Reference a blob from a message (extends its life: it expires the retention
/// period after its last reference) or from the caller's profile (holds it
/// until removed). Only an owner of the blob (a user who uploaded its bytes)
/// may reference it. Idempotent.
#[utoipa::path(
    post, path = "/v1/media/{hash}/refs", tag = "media",
    params(("hash" = String, Path, description = "SHA-256 of the blob")),
    request_body = RefRequest,
    responses(
        (status = 201, description = "Added", body = RefResponse),
        (status = 200, description = "Already present", body = RefResponse),
        (status = 400, body = ErrorResponse),
        (status = 401, body = ErrorResponse),
        (status = 403, description = "A profile reference for another user, or a blob the caller did not upload", body = ErrorResponse),
        (status = 404, description = "No such blob", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub(super) async fn add_ref(
    State(state): State<MediaState>,
    Authed(claims): Authed,
    Path(hash): Path<String>,
    ApiJson(req): ApiJson<RefRequest>,
) -> Result<(StatusCode, Json<RefResponse>), ApiError> {
    let hash = parse_hash(&hash)?;
    let kind = RefKind::parse(&req.kind)?;
    if kind == RefKind::Profile && req.id != claims.sub {
        return Err(ApiError::forbidden(
            "not_your_profile",
            "a profile reference must name your own user id",
        ));
    }
    let m = &state.media;
    let status = match m.add_reference(&hash, kind, &req.id, &claims.sub).await? {
        RefAdded::Added => StatusCode::CREATED,
        RefAdded::Exists => StatusCode::OK,
        RefAdded::NoBlob => return Err(MediaError::NotFound.into()),
    };
    let record = m.ready_blob(&hash).await?;
    Ok((
        status,
        Json(RefResponse {
            hash: hash.to_hex(),
            kind: kind.as_str().to_owned(),
            id: req.id,
            created: status == StatusCode::CREATED,
            expires_at: m.expires_at(&record).map(|ms| ms.div_euclid(1000)),
        }),
    ))
}

/// Remove a reference (a deleted message, a changed avatar). The blob then
/// expires the retention period from now unless referenced again.
#[utoipa::path(
    delete, path = "/v1/media/{hash}/refs/{kind}/{id}", tag = "media",
    params(
        ("hash" = String, Path, description = "SHA-256 of the blob"),
        ("kind" = String, Path, description = "message or profile"),
        ("id" = String, Path, description = "Message id or user id"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, body = ErrorResponse),
        (status = 403, description = "Another user's profile reference or message reference", body = ErrorResponse),
        (status = 404, description = "No such reference", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub(super) async fn remove_ref(
    State(state): State<MediaState>,
    Authed(claims): Authed,
    Path((hash, kind, id)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let hash = parse_hash(&hash)?;
    let kind = RefKind::parse(&kind)?;
    let m = &state.media;
    // Only whoever added a reference may remove it.
    let refs = m
        .store
        .refs(&hash.to_hex())
        .await
        .map_err(MediaError::from)?;
    let Some(r) = refs
        .iter()
        .find(|r| r.kind == kind.as_str() && r.ref_id == id)
    else {
        return Err(ApiError::not_found("no_reference", "no such reference"));
    };
    if r.created_by != claims.sub {
        return Err(ApiError::forbidden(
            "not_your_reference",
            "only the user who added a reference may remove it",
        ));
    }
    if m.remove_reference(&hash, kind, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("no_reference", "no such reference"))
    }
}
