//! The end-to-end-encryption key directory: each device publishes an identity
//! key, a signed prekey and one-time prekeys; others fetch a bundle to start a
//! session, claiming one one-time prekey that is never handed out twice.

use super::types::*;
use super::{AuthState, LiveDevice};
use crate::rules::{self, KeyError};
use crate::store::{DeviceKeys, OneTimePrekey, PrekeysAdded};
use axum::Json;
use axum::extract::{Path, State};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use natter_common::{ApiError, ApiJson};
use std::collections::HashSet;

fn key_error(e: KeyError) -> ApiError {
    ApiError::bad_request("invalid_key", e.to_string())
}

fn decode_prekeys(list: &[PrekeyDto], max: u32) -> Result<Vec<OneTimePrekey>, ApiError> {
    if list.len() > max as usize {
        return Err(ApiError::bad_request(
            "too_many_prekeys",
            format!(
                "at most {max} one-time prekeys per device; got {}",
                list.len()
            ),
        ));
    }
    let mut seen = HashSet::new();
    list.iter()
        .map(|p| {
            if !seen.insert(p.key_id) {
                return Err(ApiError::bad_request(
                    "duplicate_key_id",
                    format!("one-time prekey id {} appears twice", p.key_id),
                ));
            }
            Ok(OneTimePrekey {
                key_id: i64::from(p.key_id),
                public_key: rules::decode_key("one_time_prekeys[].public_key", &p.public_key, 32)
                    .map_err(key_error)?,
            })
        })
        .collect()
}

fn added_result(r: PrekeysAdded, max: u32) -> Result<u32, ApiError> {
    match r {
        PrekeysAdded::Stored(n) => Ok(n),
        PrekeysAdded::TooMany { stored } => Err(ApiError::bad_request(
            "too_many_prekeys",
            format!("this device holds {stored} one-time prekeys; at most {max} are kept"),
        )),
        PrekeysAdded::DuplicateId(id) => Err(ApiError::conflict(
            "duplicate_key_id",
            format!("one-time prekey id {id} is already stored for this device"),
        )),
        PrekeysAdded::NoIdentity => Err(ApiError::conflict(
            "no_identity_key",
            "upload the identity key and signed prekey (PUT /v1/keys) first",
        )),
    }
}

/// Publish this device's identity key, signed prekey and (optionally) one-time
/// prekeys. The signed prekey's signature is checked. A new identity key drops
/// the device's old one-time prekeys.
#[utoipa::path(
    put, path = "/v1/keys", tag = "keys", security(("bearer" = [])),
    request_body = PutKeysRequest,
    responses(
        (status = 200, body = PrekeyCount),
        (status = 400, description = "Bad key, bad signature, too many prekeys", body = ErrorResponse),
        (status = 409, description = "Duplicate one-time prekey id", body = ErrorResponse),
    )
)]
pub(super) async fn put_keys(
    State(state): State<AuthState>,
    LiveDevice(me): LiveDevice,
    ApiJson(req): ApiJson<PutKeysRequest>,
) -> Result<Json<PrekeyCount>, ApiError> {
    let max = state.0.cfg.max_one_time_prekeys;
    let identity_key =
        rules::decode_key("identity_key", &req.identity_key, 32).map_err(key_error)?;
    let signing_key = rules::decode_key("signing_key", &req.signing_key, 32).map_err(key_error)?;
    let spk_public = rules::decode_key(
        "signed_prekey.public_key",
        &req.signed_prekey.public_key,
        32,
    )
    .map_err(key_error)?;
    let spk_signature =
        rules::decode_key("signed_prekey.signature", &req.signed_prekey.signature, 64)
            .map_err(key_error)?;
    rules::verify_prekey_signature(&signing_key, &spk_public, &spk_signature).map_err(key_error)?;
    let prekeys = decode_prekeys(&req.one_time_prekeys, max)?;
    let keys = DeviceKeys {
        identity_key,
        signing_key,
        spk_id: i64::from(req.signed_prekey.key_id),
        spk_public,
        spk_signature,
        updated_at: state.now_ms(),
    };
    let store = &state.0.store;
    store
        .put_device_keys(&me.user_id, me.device_id, &keys)
        .await
        .map_err(ApiError::internal)?;
    let count = if prekeys.is_empty() {
        store
            .count_prekeys(&me.user_id, me.device_id)
            .await
            .map_err(ApiError::internal)?
    } else {
        added_result(
            store
                .add_prekeys(&me.user_id, me.device_id, &prekeys, max)
                .await
                .map_err(ApiError::internal)?,
            max,
        )?
    };
    tracing::info!(user_id = %me.user_id, device_id = me.device_id, one_time_prekeys = count, "keys uploaded");
    Ok(Json(PrekeyCount {
        one_time_prekeys: count,
    }))
}

/// Add one-time prekeys (all or nothing).
#[utoipa::path(
    post, path = "/v1/keys/one-time", tag = "keys", security(("bearer" = [])),
    request_body = AddPrekeysRequest,
    responses(
        (status = 200, body = PrekeyCount),
        (status = 400, body = ErrorResponse),
        (status = 409, description = "Duplicate id, or no identity key yet", body = ErrorResponse),
    )
)]
pub(super) async fn add_prekeys(
    State(state): State<AuthState>,
    LiveDevice(me): LiveDevice,
    ApiJson(req): ApiJson<AddPrekeysRequest>,
) -> Result<Json<PrekeyCount>, ApiError> {
    let max = state.0.cfg.max_one_time_prekeys;
    let prekeys = decode_prekeys(&req.one_time_prekeys, max)?;
    let r = state
        .0
        .store
        .add_prekeys(&me.user_id, me.device_id, &prekeys, max)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(PrekeyCount {
        one_time_prekeys: added_result(r, max)?,
    }))
}

/// How many one-time prekeys this device has left (refill when low).
#[utoipa::path(
    get, path = "/v1/keys/count", tag = "keys", security(("bearer" = [])),
    responses((status = 200, body = PrekeyCount))
)]
pub(super) async fn count_prekeys(
    State(state): State<AuthState>,
    LiveDevice(me): LiveDevice,
) -> Result<Json<PrekeyCount>, ApiError> {
    let n = state
        .0
        .store
        .count_prekeys(&me.user_id, me.device_id)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(PrekeyCount {
        one_time_prekeys: n,
    }))
}

/// Whether `caller` may take one more of `target`'s one-time prekeys: at most
/// `limit_prekey_claims_per_pair` per caller and target, and
/// `limit_prekey_claims_per_target` per target from everyone. Past either, the
/// bundle carries the signed prekey only: sessions can still be set up, but a
/// stranger looping over the endpoint cannot empty someone's prekeys.
fn may_take_prekey(state: &AuthState, caller: &str, target: &str) -> bool {
    let now = state.now_ms();
    let limits = &state.0.limits;
    let pair = format!("{caller}|{target}");
    if limits.prekey_claims_per_pair.peek(&pair, now).is_err()
        || limits.prekey_claims_per_target.check(target, now).is_err()
    {
        metrics::counter!("auth_prekey_claims_limited_total").increment(1);
        return false;
    }
    let _ = limits.prekey_claims_per_pair.check(&pair, now);
    true
}

async fn claim(
    state: &AuthState,
    caller: &str,
    user_id: &str,
    device_id: i64,
) -> Result<Option<PrekeyBundle>, ApiError> {
    // A device fetching its own account's bundles (a new linked device) is not limited.
    let take = caller == user_id || may_take_prekey(state, caller, user_id);
    let claimed = state
        .0
        .store
        .claim_bundle(user_id, device_id, take)
        .await
        .map_err(ApiError::internal)?;
    Ok(claimed.map(|(keys, otk)| {
        if otk.is_none() && take {
            metrics::counter!("auth_prekeys_exhausted_total").increment(1);
        }
        PrekeyBundle {
            user_id: user_id.to_owned(),
            device_id: device_id as u32,
            identity_key: B64.encode(&keys.identity_key),
            signing_key: B64.encode(&keys.signing_key),
            signed_prekey: SignedPrekey {
                key_id: keys.spk_id as u32,
                public_key: B64.encode(&keys.spk_public),
                signature: B64.encode(&keys.spk_signature),
            },
            one_time_prekey: otk.map(|k| PrekeyDto {
                key_id: k.key_id as u32,
                public_key: B64.encode(&k.public_key),
            }),
        }
    }))
}

fn check_fetch_limit(state: &AuthState, caller: &str, n: u32) -> Result<(), ApiError> {
    let now = state.now_ms();
    for _ in 0..n.max(1) {
        state
            .0
            .limits
            .key_fetch_per_user
            .check(caller, now)
            .map_err(|r| ApiError::too_many("rate_limited", "too many prekey fetches", r.secs()))?;
    }
    Ok(())
}

/// One device's prekey bundle, claiming one of its one-time prekeys.
#[utoipa::path(
    get, path = "/v1/keys/{user_id}/{device_id}", tag = "keys", security(("bearer" = [])),
    params(
        ("user_id" = String, Path, description = "Account"),
        ("device_id" = u32, Path, description = "Device"),
    ),
    responses(
        (status = 200, body = PrekeyBundle),
        (status = 404, description = "No keys for that device", body = ErrorResponse),
        (status = 429, body = ErrorResponse),
    )
)]
pub(super) async fn get_device_bundle(
    State(state): State<AuthState>,
    LiveDevice(me): LiveDevice,
    Path((user_id, device_id)): Path<(String, u32)>,
) -> Result<Json<PrekeyBundle>, ApiError> {
    check_fetch_limit(&state, &me.user_id, 1)?;
    claim(&state, &me.user_id, &user_id, i64::from(device_id))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("keys_not_found", "that device has not published keys"))
}

/// Bundles for every device of a user (one claim per device).
#[utoipa::path(
    get, path = "/v1/keys/{user_id}", tag = "keys", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "Account")),
    responses(
        (status = 200, body = BundleList),
        (status = 404, description = "No device of that user has keys", body = ErrorResponse),
        (status = 429, body = ErrorResponse),
    )
)]
pub(super) async fn get_user_bundles(
    State(state): State<AuthState>,
    LiveDevice(me): LiveDevice,
    Path(user_id): Path<String>,
) -> Result<Json<BundleList>, ApiError> {
    let devices = state
        .0
        .store
        .devices_with_keys(&user_id)
        .await
        .map_err(ApiError::internal)?;
    if devices.is_empty() {
        return Err(ApiError::not_found(
            "keys_not_found",
            "no device of that user has published keys",
        ));
    }
    check_fetch_limit(&state, &me.user_id, devices.len() as u32)?;
    let mut bundles = Vec::with_capacity(devices.len());
    for d in devices {
        if let Some(b) = claim(&state, &me.user_id, &user_id, d).await? {
            bundles.push(b);
        }
    }
    Ok(Json(BundleList { bundles }))
}
