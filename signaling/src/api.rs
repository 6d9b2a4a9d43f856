//! REST: `GET /v1/calls` (the caller's call log) and
//! `GET /v1/calls/ice-servers` (STUN/TURN URLs with fresh TURN credentials).
//! Both need an access token. The OpenAPI document is served at
//! `/v1/calls/openapi.json` and checked in as `docs/api/signaling.openapi.json`.

use crate::call::CallRecord;
use crate::ice::{IceServers, ice_servers};
use crate::state::SignalingState;
use axum::extract::{Query, State};
use axum::{Json, Router};
use natter_common::{ApiError, Authed};
use natter_proto::{CallId, CallMedia, DeviceId, EndReason, UserId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Natter signaling API",
        description = "Calls: the call log and ICE servers with short-lived TURN credentials. Call set-up itself runs over the chat WebSocket (docs/protocol.md, Calls).",
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
    /// `{"code": "...", "message": "..."}`.
    #[schema(value_type = Object)]
    pub error: serde_json::Value,
}

fn api_router() -> OpenApiRouter<SignalingState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(history))
        .routes(routes!(ice))
}

/// The OpenAPI document of this API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().split_for_parts().1
}

/// The routes (and `/v1/calls/openapi.json`).
pub fn router(state: SignalingState) -> Router {
    let (router, doc) = api_router().split_for_parts();
    let doc = Arc::new(doc);
    router
        .route(
            "/v1/calls/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { Json((*doc).clone()) }
            }),
        )
        .layer(axum::middleware::from_fn(|req, next| {
            natter_common::metrics::track_http("signaling", req, next)
        }))
        .with_state(state)
}

/// Query of `GET /v1/calls`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only calls that started before this (Unix ms); for paging.
    pub before: Option<i64>,
    /// Page size (default 50, at most `max_history_page`).
    pub limit: Option<u32>,
}

/// Placed or received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// This user called.
    Outgoing,
    /// This user was called.
    Incoming,
}

/// One entry of the call log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CallLogEntry {
    /// The call.
    #[schema(value_type = String)]
    pub call_id: CallId,
    /// Placed or received.
    pub direction: Direction,
    /// The other party.
    #[schema(value_type = String)]
    pub peer: UserId,
    /// Audio or video (`audio`, `video`).
    #[schema(value_type = String)]
    pub media: CallMedia,
    /// When it was offered (Unix ms).
    pub started_at: i64,
    /// When it was answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<i64>,
    /// When it ended.
    pub ended_at: i64,
    /// Milliseconds from answer to end (0 if never answered).
    pub duration_ms: u64,
    /// `answered`, `rejected`, `busy`, `missed`, `cancelled`, `unavailable`, `failed`.
    pub outcome: String,
    /// The `call.ended` reason (`hangup`, `rejected`, `busy`, `missed`,
    /// `cancelled`, `unavailable`, `glare`, `connection_lost`,
    /// `answered_elsewhere`).
    #[schema(value_type = String)]
    pub reason: EndReason,
    /// For received calls: the device that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u32>)]
    pub answered_device: Option<DeviceId>,
}

/// `GET /v1/calls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CallLog {
    /// Newest first.
    pub calls: Vec<CallLogEntry>,
    /// Pass as `before` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

/// The caller's call log, newest first: calls placed and received that
/// ended (a call that was live when its node stopped is logged `failed`,
/// `connection_lost`).
#[utoipa::path(
    get, path = "/v1/calls", tag = "calls",
    params(HistoryQuery),
    responses(
        (status = 200, body = CallLog),
        (status = 400, description = "A bad `before` or `limit`", body = ErrorResponse),
        (status = 401, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
async fn history(
    State(st): State<SignalingState>,
    Authed(claims): Authed,
    q: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<CallLog>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let max = st.0.cfg.max_history_page;
    let limit = q.limit.unwrap_or(50.min(max));
    if limit == 0 || limit > max {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit: must be within 1..={max}"),
        ));
    }
    let me = UserId(claims.sub);
    let rows =
        st.0.store
            .history(&me, q.before.unwrap_or(i64::MAX), limit)
            .await
            .map_err(ApiError::internal)?;
    let next_before = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.started_at))
        .flatten();
    Ok(Json(CallLog {
        calls: rows.into_iter().map(|r| entry(&me, r)).collect(),
        next_before,
    }))
}

fn entry(me: &UserId, r: CallRecord) -> CallLogEntry {
    let outgoing = r.caller == *me;
    CallLogEntry {
        duration_ms: r.duration_ms(),
        direction: if outgoing {
            Direction::Outgoing
        } else {
            Direction::Incoming
        },
        peer: if outgoing { r.callee } else { r.caller },
        call_id: r.call_id,
        media: r.media,
        started_at: r.started_at,
        answered_at: r.answered_at,
        ended_at: r.ended_at,
        outcome: r.outcome.as_str().to_owned(),
        reason: r.reason,
        answered_device: if outgoing { None } else { r.answered_device },
    }
}

/// STUN and TURN servers for a call, with TURN credentials (the TURN REST
/// API: `expiry:user_id` and an HMAC of it) valid for `ttl_secs`.
#[utoipa::path(
    get, path = "/v1/calls/ice-servers", tag = "calls",
    responses(
        (status = 200, body = IceServers),
        (status = 401, body = ErrorResponse),
        (status = 429, description = "Too many requests (`signaling.ice_servers_rate`); `Retry-After` says when", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
async fn ice(
    State(st): State<SignalingState>,
    Authed(claims): Authed,
) -> Result<Json<IceServers>, ApiError> {
    let now_ms = st.0.clock.now_ms();
    if let Err(wait) = st.0.ice_limiter.check(claims.sub.as_str(), now_ms) {
        return Err(ApiError::too_many(
            "rate_limited",
            "too many ICE server requests; each one mints a TURN credential",
            wait.secs(),
        ));
    }
    let cfg = &st.0.cfg;
    Ok(Json(ice_servers(
        cfg.effective_stun_urls(),
        &cfg.turn_urls.0,
        &st.0.turn_secret,
        &claims.sub,
        st.0.clock.now_secs(),
        cfg.credential_ttl_secs,
    )))
}
