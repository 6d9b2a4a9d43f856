//! The chat REST API under `/v1`: message status and pending messages (the
//! message service's filters), groups, presence, contacts and push tokens.
//! Every endpoint takes `Authorization: Bearer <access token>` and checks the
//! device against auth's device table (a logged-out device is refused at once).

use crate::state::ChatState;
use crate::store::DeviceRef;
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::get;
use natter_common::{ApiError, Authed};
use natter_proto::UserId;
use serde::Serialize;
use std::sync::Arc;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

mod groups;
mod messages;
mod presence;

pub use groups::{AddMembers, CreateGroup, GroupList, RenameGroup};
pub use messages::{PendingQuery, PendingResponse};
pub use presence::{ContactsBody, PresenceResponse, PrivacyBody, PushTokenBody};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Natter chat API",
        description = "The chat REST API: pending messages and message status, groups, presence, contacts and push tokens. Messages, receipts, typing and call signaling run over the WebSocket at /v1/ws (docs/protocol.md).",
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

/// Error body: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    /// `{"code": "...", "message": "..."}` plus endpoint-specific fields.
    #[schema(value_type = Object)]
    pub error: serde_json::Value,
}

fn api_router() -> OpenApiRouter<ChatState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(messages::pending))
        .routes(routes!(messages::message_status))
        .routes(routes!(groups::create_group, groups::my_groups))
        .routes(routes!(groups::get_group, groups::rename_group))
        .routes(routes!(groups::add_members))
        .routes(routes!(groups::remove_member))
        .routes(routes!(groups::add_admin, groups::remove_admin))
        .routes(routes!(presence::get_privacy, presence::set_privacy))
        .routes(routes!(presence::get_contacts, presence::set_contacts))
        .routes(routes!(presence::get_presence))
        .routes(routes!(
            presence::set_push_token,
            presence::delete_push_token
        ))
}

/// The OpenAPI document of the chat REST API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().split_for_parts().1
}

/// The chat routes (REST, `/v1/chat/openapi.json` and the WebSocket at
/// `/v1/ws`), with body limits and request metrics.
pub fn router(state: ChatState) -> Router {
    let max_body = state.0.cfg.max_rest_body_bytes;
    let (rest, doc) = api_router().split_for_parts();
    let doc = Arc::new(doc);
    rest.route(natter_proto::WS_PATH, get(crate::gateway::upgrade))
        .route(
            "/v1/chat/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { axum::Json((*doc).clone()) }
            }),
        )
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(|req, next| {
            natter_common::metrics::track_http("chat", req, next)
        }))
        .with_state(state)
}

/// The calling device: a valid token whose device still exists at the token's
/// generation.
pub struct Caller(pub DeviceRef);

impl FromRequestParts<ChatState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ChatState) -> Result<Self, ApiError> {
        let Authed(claims) = Authed::from_request_parts(parts, state).await?;
        let user = UserId(claims.sub);
        match state
            .0
            .store
            .device_generation(&user, claims.dev)
            .await
            .map_err(ApiError::internal)?
        {
            Some(g) if g == i64::from(claims.generation) => Ok(Caller(DeviceRef {
                user,
                device: claims.dev,
                generation: g,
            })),
            _ => Err(ApiError::unauthorized(
                "token_revoked",
                "this device was logged out, removed or re-registered",
            )),
        }
    }
}

fn check_users(users: &[UserId]) -> Result<(), ApiError> {
    if let Some(bad) = users.iter().find(|u| !u.is_valid()) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("users: {:?} is not a valid user id", bad.0),
        ));
    }
    Ok(())
}
