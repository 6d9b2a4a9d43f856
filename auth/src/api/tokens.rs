//! Refresh-token rotation and logout.

use super::types::*;
use super::{AuthState, LiveDevice, new_generation};
use crate::secrets::token_digest;
use crate::store::{NewRefresh, Rotated};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use natter_common::http::ClientIp;
use natter_common::{ApiError, ApiJson};

/// Exchange a refresh token for new credentials. Each refresh token works once;
/// presenting a used one revokes every credential of that device.
#[utoipa::path(
    post, path = "/v1/tokens/refresh", tag = "tokens",
    request_body = RefreshRequest,
    responses(
        (status = 200, body = Credentials),
        (status = 401, description = "Unknown, expired or replayed refresh token", body = ErrorResponse),
        (status = 429, body = ErrorResponse),
    )
)]
pub(super) async fn refresh(
    State(state): State<AuthState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<Json<Credentials>, ApiError> {
    let now = state.now_ms();
    state
        .0
        .limits
        .refresh_per_ip
        .check(&ip.to_string(), now)
        .map_err(|r| {
            ApiError::too_many(
                "rate_limited",
                "too many refreshes from this address",
                r.secs(),
            )
        })?;
    // Tokens are 43 characters; anything far longer is not one of ours.
    if req.refresh_token.is_empty() || req.refresh_token.len() > 128 {
        return Err(ApiError::unauthorized(
            "invalid_refresh_token",
            "unknown or expired refresh token",
        ));
    }
    let token = natter_common::random::token();
    let next = NewRefresh {
        token_hash: token_digest(&token),
        expires_at: now + i64::from(state.0.cfg.refresh_ttl_secs) * 1000,
    };
    let outcome = state
        .0
        .store
        .rotate_refresh(
            &token_digest(&req.refresh_token),
            &next,
            new_generation(),
            now,
        )
        .await
        .map_err(ApiError::internal)?;
    match outcome {
        Rotated::Ok(device) => {
            metrics::counter!("auth_token_refreshes_total", "outcome" => "ok").increment(1);
            Ok(Json(state.credentials(&device, token, next.expires_at)))
        }
        Rotated::Replayed { user_id, device_id } => {
            metrics::counter!("auth_token_refreshes_total", "outcome" => "replayed").increment(1);
            tracing::warn!(%user_id, device_id, "refresh token replayed; device credentials revoked");
            Err(ApiError::unauthorized(
                "refresh_token_reused",
                "this refresh token was already used; the device's credentials are revoked, register or link again",
            ))
        }
        Rotated::Invalid => {
            metrics::counter!("auth_token_refreshes_total", "outcome" => "invalid").increment(1);
            Err(ApiError::unauthorized(
                "invalid_refresh_token",
                "unknown or expired refresh token",
            ))
        }
    }
}

/// Log this device out: its refresh tokens are deleted and its access tokens
/// stop working here at once (and everywhere within their short lifetime).
#[utoipa::path(
    post, path = "/v1/tokens/logout", tag = "tokens",
    security(("bearer" = [])),
    responses((status = 204, description = "Logged out"), (status = 401, body = ErrorResponse))
)]
pub(super) async fn logout(
    State(state): State<AuthState>,
    LiveDevice(device): LiveDevice,
) -> Result<StatusCode, ApiError> {
    state
        .0
        .store
        .revoke_device(&device.user_id, device.device_id, new_generation())
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(user_id = %device.user_id, device_id = device.device_id, "device logged out");
    Ok(StatusCode::NO_CONTENT)
}
