//! The media HTTP API under `/v1/media`: handlers, state and the OpenAPI document.

mod download;
mod refs;
mod tus;
pub mod types;
mod upload;

use crate::engine::Media;
use crate::error::MediaError;
use crate::hash::BlobHash;
use crate::sign::Object;
use crate::store::BlobRecord;
use axum::extract::FromRef;
use natter_common::TokenVerifier;
use natter_common::token::TokenKeys;
use std::sync::Arc;
use types::*;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Everything the handlers share.
#[derive(Clone)]
pub struct MediaState {
    pub(crate) media: Arc<Media>,
    tokens: Arc<TokenKeys>,
    /// Refuses tokens of logged-out devices.
    live: Arc<natter_common::credentials::LiveCredentials>,
}

impl MediaState {
    /// Wraps the engine.
    pub(crate) fn new(
        media: Arc<Media>,
        tokens: Arc<TokenKeys>,
        live: Arc<natter_common::credentials::LiveCredentials>,
    ) -> Self {
        Self {
            media,
            tokens,
            live,
        }
    }

    /// The engine.
    pub fn media(&self) -> &Arc<Media> {
        &self.media
    }
}

impl FromRef<MediaState> for TokenVerifier {
    fn from_ref(state: &MediaState) -> Self {
        TokenVerifier {
            keys: state.tokens.clone(),
            clock: state.media.clock.clone(),
            live: Some(state.live.clone()),
        }
    }
}

/// The client view of a blob, with fresh signed URLs.
pub(crate) fn media_info(m: &Media, b: &BlobRecord) -> Result<MediaInfo, MediaError> {
    let hash: BlobHash = b
        .hash
        .parse()
        .map_err(|_| MediaError::internal("stored hash is not hex"))?;
    let exp = m.clock.now_secs() + i64::from(m.cfg.signed_url_ttl_secs);
    let thumbnail = if b.has_thumbnail() {
        ThumbnailInfo {
            status: ThumbnailStatus::Created,
            width: b.thumb_width.map(|v| v as u32),
            height: b.thumb_height.map(|v| v as u32),
            url: Some(m.signer.url(&m.public_url, Object::Thumbnail, &hash, exp)),
            reason: None,
        }
    } else {
        ThumbnailInfo {
            status: ThumbnailStatus::None,
            width: None,
            height: None,
            url: None,
            reason: Some(
                b.thumb_note
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| "no thumbnail".into()),
            ),
        }
    };
    let preview = match (&b.preview, b.preview_width, b.preview_height) {
        (Some(data), Some(w), Some(h)) => Some(Preview {
            content_type: "image/jpeg".into(),
            width: w as u32,
            height: h as u32,
            data_base64: data.clone(),
        }),
        _ => None,
    };
    Ok(MediaInfo {
        hash: b.hash.clone(),
        size: b.size.max(0) as u64,
        content_type: b.content_type.clone(),
        opaque: b.opaque,
        width: b.width.map(|v| v as u32),
        height: b.height.map(|v| v as u32),
        thumbnail,
        preview,
        url: m.signer.url(&m.public_url, Object::Blob, &hash, exp),
        url_expires_at: exp,
        expires_at: m.expires_at(b).map(|ms| ms.div_euclid(1000)),
    })
}

/// Parses a hash from a path segment.
pub(crate) fn parse_hash(s: &str) -> Result<BlobHash, MediaError> {
    s.parse().map_err(|_| MediaError::InvalidHash)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Natter media API",
        description = "Content-addressed media: streaming and resumable (TUS 1.0) uploads, thumbnails and previews, signed download URLs, references and lifecycle.",
        version = "1"
    ),
    components(schemas(ErrorResponse)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

fn api_router() -> OpenApiRouter<MediaState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(upload::upload))
        .routes(routes!(upload::usage))
        .routes(routes!(tus::options, tus::create))
        .routes(routes!(tus::status, tus::patch, tus::terminate))
        .routes(routes!(download::download))
        .routes(routes!(download::thumbnail))
        .routes(routes!(download::info))
        .routes(routes!(refs::add_ref))
        .routes(routes!(refs::remove_ref))
}

/// The OpenAPI document of this API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().split_for_parts().1
}

/// The media routes (`/v1/media…` and `/v1/media/openapi.json`), with request
/// metrics. Upload bodies are streamed, never buffered, so no body-size layer
/// applies to them; the limits are `media.max_upload_bytes` and the quota.
pub fn router(state: MediaState) -> axum::Router {
    let (router, doc) = api_router().split_for_parts();
    let doc = Arc::new(doc);
    router
        .route(
            "/v1/media/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json((*doc).clone()) }
            }),
        )
        .layer(axum::middleware::from_fn(|req, next| {
            natter_common::metrics::track_http("media", req, next)
        }))
        .with_state(state)
}
