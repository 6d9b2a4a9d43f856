//! Devices: list, link a new one with a one-time code from the primary, remove.

use super::types::*;
use super::{AuthState, LiveDevice};
use crate::rules;
use crate::secrets::token_digest;
use crate::store::{Device, Linked};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use natter_common::http::ClientIp;
use natter_common::{ApiError, ApiJson};

fn info(d: &Device) -> DeviceInfo {
    DeviceInfo {
        device_id: d.device_id as u32,
        name: d.name.clone(),
        created_at: d.created_at / 1000,
        last_seen_at: d.last_seen_at / 1000,
        primary: d.device_id == 1,
    }
}

/// The account's devices.
#[utoipa::path(
    get, path = "/v1/devices", tag = "devices", security(("bearer" = [])),
    responses((status = 200, body = DeviceList), (status = 401, body = ErrorResponse))
)]
pub(super) async fn list_devices(
    State(state): State<AuthState>,
    LiveDevice(me): LiveDevice,
) -> Result<Json<DeviceList>, ApiError> {
    let devices = state
        .0
        .store
        .devices(&me.user_id)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(DeviceList {
        devices: devices.iter().map(info).collect(),
    }))
}

/// Make a one-time code for linking a new device (primary device only).
#[utoipa::path(
    post, path = "/v1/devices/link-codes", tag = "devices", security(("bearer" = [])),
    responses(
        (status = 201, body = LinkCodeResponse),
        (status = 403, description = "Not the primary device", body = ErrorResponse),
        (status = 401, body = ErrorResponse),
    )
)]
pub(super) async fn create_link_code(
    State(state): State<AuthState>,
    LiveDevice(me): LiveDevice,
) -> Result<(StatusCode, Json<LinkCodeResponse>), ApiError> {
    if me.device_id != 1 {
        return Err(ApiError::forbidden(
            "not_primary",
            "only the primary device can link devices",
        ));
    }
    let code = natter_common::random::token();
    let expires_at = state.now_ms() + i64::from(state.0.cfg.link_code_ttl_secs) * 1000;
    state
        .0
        .store
        .insert_link_code(&me.user_id, &token_digest(&code), expires_at)
        .await
        .map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        Json(LinkCodeResponse {
            link_code: code,
            expires_at: expires_at / 1000,
        }),
    ))
}

/// Link a new device with a code from the primary; returns its credentials.
#[utoipa::path(
    post, path = "/v1/devices/link", tag = "devices",
    request_body = LinkRequest,
    responses(
        (status = 201, body = Credentials),
        (status = 400, description = "Unknown, used or expired code", body = ErrorResponse),
        (status = 409, description = "The account has the maximum of linked devices", body = ErrorResponse),
        (status = 429, body = ErrorResponse),
    )
)]
pub(super) async fn link_device(
    State(state): State<AuthState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<LinkRequest>,
) -> Result<(StatusCode, Json<Credentials>), ApiError> {
    let now = state.now_ms();
    state
        .0
        .limits
        .link_per_ip
        .check(&ip.to_string(), now)
        .map_err(|r| {
            ApiError::too_many(
                "rate_limited",
                "too many link attempts from this address",
                r.secs(),
            )
        })?;
    let name = req.device_name.trim();
    if name.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_device_name",
            "device_name must not be empty",
        ));
    }
    rules::check_text("device_name", name, 64)
        .map_err(|m| ApiError::bad_request("invalid_device_name", m))?;
    if req.link_code.len() > 128 {
        return Err(ApiError::bad_request(
            "invalid_link_code",
            "unknown, used or expired link code",
        ));
    }
    let (device, refresh) = state.new_device(name);
    let max = i64::from(state.0.cfg.max_linked_devices);
    let outcome = state
        .0
        .store
        .link_device(&token_digest(&req.link_code), &device, max, now)
        .await
        .map_err(ApiError::internal)?;
    match outcome {
        Linked::Device(d) => {
            tracing::info!(user_id = %d.user_id, device_id = d.device_id, "device linked");
            Ok((
                StatusCode::CREATED,
                Json(state.credentials(&d, refresh, device.refresh.expires_at)),
            ))
        }
        Linked::InvalidCode => Err(ApiError::bad_request(
            "invalid_link_code",
            "unknown, used or expired link code",
        )),
        Linked::TooManyDevices => Err(ApiError::conflict(
            "too_many_devices",
            format!("an account can have at most {max} linked devices; remove one first"),
        )),
    }
}

/// Remove a device. The primary removes any linked device; a linked device
/// can remove itself. Its tokens and keys are deleted with it.
#[utoipa::path(
    delete, path = "/v1/devices/{device_id}", tag = "devices", security(("bearer" = [])),
    params(("device_id" = u32, Path, description = "Device to remove (not 1)")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "The primary cannot be removed", body = ErrorResponse),
        (status = 403, body = ErrorResponse),
        (status = 404, body = ErrorResponse),
    )
)]
pub(super) async fn remove_device(
    State(state): State<AuthState>,
    LiveDevice(me): LiveDevice,
    Path(device_id): Path<u32>,
) -> Result<StatusCode, ApiError> {
    let target = i64::from(device_id);
    if target == 1 {
        return Err(ApiError::bad_request(
            "cannot_remove_primary",
            "the primary device cannot be removed; delete the account or re-register instead",
        ));
    }
    if me.device_id != 1 && me.device_id != target {
        return Err(ApiError::forbidden(
            "not_primary",
            "only the primary device can remove other devices",
        ));
    }
    let removed = state
        .0
        .store
        .remove_device(&me.user_id, target)
        .await
        .map_err(ApiError::internal)?;
    if !removed {
        return Err(ApiError::not_found(
            "device_not_found",
            format!("no device {device_id}"),
        ));
    }
    tracing::info!(user_id = %me.user_id, device_id = target, "device removed");
    Ok(StatusCode::NO_CONTENT)
}
