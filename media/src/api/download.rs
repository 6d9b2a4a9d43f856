//! Downloads by hash: with a bearer token or a signed expiring URL; `Range`,
//! `ETag` (the hash), conditional requests and `HEAD`. Only blobs and their
//! thumbnails can be reached: the path segment must parse as a hash, and
//! storage keys are built from the parsed value.

use super::types::*;
use super::{MediaState, media_info, parse_hash};
use crate::blob::ObjectKey;
use crate::error::MediaError;
use crate::hash::BlobHash;
use crate::range::{self, RangeOutcome};
use crate::sign::{Object, SignError};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use natter_common::{ApiError, Authed};

/// Download a blob. Send the bearer token, or use a signed URL from an upload
/// or info response (`?exp=…&sig=…`). The `ETag` is the quoted hash.
#[utoipa::path(
    get, path = "/v1/media/{hash}", tag = "media",
    params(("hash" = String, Path, description = "SHA-256, 64 hex digits"), SignedQuery,
           ("Range" = Option<String>, Header, description = "One byte range, e.g. bytes=0-1023")),
    responses(
        (status = 200, description = "The blob", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "The requested range", body = Vec<u8>),
        (status = 304, description = "If-None-Match matched"),
        (status = 400, description = "Not a hash", body = ErrorResponse),
        (status = 401, description = "No token and no signature", body = ErrorResponse),
        (status = 403, description = "Bad or expired signature", body = ErrorResponse),
        (status = 404, body = ErrorResponse),
        (status = 416, description = "Range past the end"),
    ),
    security(("bearer" = []), ())
)]
pub(super) async fn download(
    State(state): State<MediaState>,
    Path(hash): Path<String>,
    RawQuery(query): RawQuery,
    method: Method,
    headers: HeaderMap,
    auth: Result<Authed, ApiError>,
) -> Result<Response, ApiError> {
    let hash = parse_hash(&hash)?;
    authorize(&state, Object::Blob, &hash, query.as_deref(), auth)?;
    let record = state.media.ready_blob(&hash).await?;
    let meta = ObjectMeta {
        key: ObjectKey::Blob(hash),
        etag: format!("\"{hash}\""),
        content_type: record.content_type.clone(),
        size: Some(record.size.max(0) as u64),
    };
    serve(&state, meta, &method, &headers, "blob").await
}

/// Download a blob's JPEG thumbnail (token or signed URL, as for the blob).
#[utoipa::path(
    get, path = "/v1/media/{hash}/thumbnail", tag = "media",
    params(("hash" = String, Path, description = "SHA-256 of the blob"), SignedQuery),
    responses(
        (status = 200, description = "The thumbnail", content_type = "image/jpeg", body = Vec<u8>),
        (status = 206, body = Vec<u8>),
        (status = 304, description = "If-None-Match matched"),
        (status = 401, body = ErrorResponse),
        (status = 403, body = ErrorResponse),
        (status = 404, description = "No such blob, or it has no thumbnail", body = ErrorResponse),
    ),
    security(("bearer" = []), ())
)]
pub(super) async fn thumbnail(
    State(state): State<MediaState>,
    Path(hash): Path<String>,
    RawQuery(query): RawQuery,
    method: Method,
    headers: HeaderMap,
    auth: Result<Authed, ApiError>,
) -> Result<Response, ApiError> {
    let hash = parse_hash(&hash)?;
    authorize(&state, Object::Thumbnail, &hash, query.as_deref(), auth)?;
    let record = state.media.ready_blob(&hash).await?;
    if !record.has_thumbnail() {
        return Err(ApiError::not_found(
            "no_thumbnail",
            "this media has no thumbnail",
        ));
    }
    let meta = ObjectMeta {
        key: ObjectKey::Thumb(hash),
        etag: format!("\"{hash}.thumb\""),
        content_type: "image/jpeg".into(),
        size: None,
    };
    serve(&state, meta, &method, &headers, "thumbnail").await
}

/// A blob's metadata, preview and fresh signed URLs (for receivers of a message).
#[utoipa::path(
    get, path = "/v1/media/{hash}/info", tag = "media",
    params(("hash" = String, Path, description = "SHA-256 of the blob")),
    responses((status = 200, body = MediaInfo), (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse)),
    security(("bearer" = []))
)]
pub(super) async fn info(
    State(state): State<MediaState>,
    _auth: Authed,
    Path(hash): Path<String>,
) -> Result<Json<MediaInfo>, ApiError> {
    let hash = parse_hash(&hash)?;
    let record = state.media.ready_blob(&hash).await?;
    Ok(Json(media_info(&state.media, &record)?))
}

/// A signed URL, if the query carries one; otherwise the bearer token.
fn authorize(
    state: &MediaState,
    what: Object,
    hash: &BlobHash,
    query: Option<&str>,
    auth: Result<Authed, ApiError>,
) -> Result<(), ApiError> {
    let (mut exp, mut sig) = (None, None);
    for pair in query.unwrap_or_default().split('&') {
        match pair.split_once('=') {
            Some(("exp", v)) => exp = Some(v),
            Some(("sig", v)) => sig = Some(v),
            _ => {}
        }
    }
    let Some(sig) = sig else {
        return auth.map(|_| ());
    };
    let exp: i64 = exp
        .and_then(|e| e.parse().ok())
        .ok_or(MediaError::BadSignature)?;
    let m = &state.media;
    match m.signer.verify(what, hash, exp, sig, m.clock.now_secs()) {
        Ok(()) => Ok(()),
        Err(SignError::Expired(_)) => Err(MediaError::UrlExpired.into()),
        Err(SignError::Invalid) => Err(MediaError::BadSignature.into()),
    }
}

struct ObjectMeta {
    key: ObjectKey,
    etag: String,
    content_type: String,
    /// Known size (blobs); thumbnails are sized by the store.
    size: Option<u64>,
}

/// Content types that browsers may show inline; everything else is an attachment.
fn inline(content_type: &str) -> bool {
    [
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/heic",
    ]
    .contains(&content_type)
        || content_type.starts_with("video/")
        || content_type.starts_with("audio/")
}

async fn serve(
    state: &MediaState,
    meta: ObjectMeta,
    method: &Method,
    headers: &HeaderMap,
    label: &'static str,
) -> Result<Response, ApiError> {
    let blobs = &state.media.blobs;
    let mut common = HeaderMap::new();
    let hv = |s: &str| HeaderValue::from_str(s).map_err(MediaError::internal);
    common.insert(header::ETAG, hv(&meta.etag)?);
    // Content never changes under a hash; access control is in the URL or token.
    common.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    common.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    common.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    common.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    let ct = if meta.content_type.starts_with("text/") {
        format!("{}; charset=utf-8", meta.content_type)
    } else {
        meta.content_type.clone()
    };
    common.insert(header::CONTENT_TYPE, hv(&ct)?);
    common.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static(if inline(&meta.content_type) {
            "inline"
        } else {
            "attachment"
        }),
    );

    if let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        && inm
            .split(',')
            .any(|t| t.trim() == meta.etag || t.trim() == "*")
    {
        return Ok((StatusCode::NOT_MODIFIED, common).into_response());
    }
    let size = match meta.size {
        Some(s) => s,
        None => blobs
            .size(&meta.key)
            .await
            .map_err(MediaError::from)?
            .ok_or(MediaError::NotFound)?,
    };
    // If-Range with another validator: send everything (RFC 9110 §13.1.5).
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim() == meta.etag);
    let range_header = if if_range_ok {
        headers.get(header::RANGE).and_then(|v| v.to_str().ok())
    } else {
        None
    };
    let (status, range) = match range::evaluate(range_header, size) {
        RangeOutcome::Full => (StatusCode::OK, 0..size),
        RangeOutcome::Partial(r) => (StatusCode::PARTIAL_CONTENT, r),
        RangeOutcome::Unsatisfiable => {
            common.insert(header::CONTENT_RANGE, hv(&format!("bytes */{size}"))?);
            common.remove(header::CONTENT_TYPE);
            return Ok((StatusCode::RANGE_NOT_SATISFIABLE, common).into_response());
        }
    };
    if status == StatusCode::PARTIAL_CONTENT {
        common.insert(
            header::CONTENT_RANGE,
            hv(&format!(
                "bytes {}-{}/{size}",
                range.start,
                range.end.saturating_sub(1)
            ))?,
        );
    }
    let len = range.end - range.start;
    common.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    metrics::counter!("media_downloads_total", "object" => label, "method" => method.as_str().to_owned()).increment(1);
    if method == Method::HEAD {
        return Ok((status, common).into_response());
    }
    let read = blobs
        .get(&meta.key, Some(range))
        .await
        .map_err(MediaError::from)?
        .ok_or(MediaError::NotFound)?;
    let backend = blobs.backend();
    let body = read.body.map(move |chunk| {
        if let Ok(c) = &chunk {
            metrics::counter!("media_download_bytes_total", "backend" => backend)
                .increment(c.len() as u64);
        }
        chunk
    });
    Ok((status, common, Body::from_stream(body)).into_response())
}
