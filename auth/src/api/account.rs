//! The account: details, deletion, registration-lock PIN, TOTP second factor,
//! profile and number lookup.

use super::types::*;
use super::{AuthState, LiveDevice};
use crate::avatars::AvatarRefError;
use crate::phone;
use crate::rules;
use crate::secrets::token_digest;
use crate::store::{Account, ProfileUpdate};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use natter_common::{ApiError, ApiJson};
use totp_rs::{Builder, Secret as TotpSecret, Totp};

/// Checks the registration-lock PIN and TOTP an account requires before it may
/// be re-registered; counts failures towards a lockout.
///
/// The attempt is counted before anything is verified, in one atomic store
/// statement: reading the lock first and counting a failure after the (slow)
/// argon2 check let 40 concurrent wrong PINs all pass the lock read, and the
/// right PIN after them re-register the account past a lockout at 10.
pub(super) async fn check_second_factors(
    state: &AuthState,
    account: &Account,
    pin: Option<&str>,
    totp_code: Option<&str>,
    recovery_code: Option<&str>,
) -> Result<(), ApiError> {
    if account.reglock_hash.is_none() && !account.totp_enabled {
        return Ok(());
    }
    if account.reglock_hash.is_some() && pin.is_none() {
        return Err(ApiError::new(
            StatusCode::LOCKED,
            "registration_locked",
            "this number has a registration lock: send registration_lock_pin",
        ));
    }
    if account.totp_enabled && totp_code.is_none() && recovery_code.is_none() {
        return Err(ApiError::forbidden(
            "totp_required",
            "this account requires a TOTP code (totp_code) or a recovery_code",
        ));
    }
    let cfg = &state.0.cfg;
    let max = i64::from(cfg.second_factor_max_failures);
    let now = state.now_ms();
    let admitted = state
        .0
        .store
        .second_factor_attempt(
            &account.user_id,
            now,
            max,
            i64::from(cfg.second_factor_lockout_secs) * 1000,
        )
        .await
        .map_err(ApiError::internal)?;
    let Some((failures, locked_until)) = admitted else {
        let until = state
            .0
            .store
            .account(&account.user_id)
            .await
            .map_err(ApiError::internal)?
            .map_or(now, |a| a.sf_locked_until);
        return Err(locked(until, now));
    };
    let wrong = |status, code, message: &str| {
        if locked_until > now {
            tracing::warn!(user_id = %account.user_id, failures, "second factor locked out");
            return locked(locked_until, now);
        }
        let left = (max - failures).max(0);
        ApiError::new(status, code, format!("{message}; {left} attempts left"))
            .with_details(serde_json::json!({ "attempts_left": left }))
    };
    if let (Some(hash), Some(pin)) = (&account.reglock_hash, pin) {
        let right = state
            .0
            .hasher
            .verify(pin.to_owned(), hash.clone())
            .await
            .map_err(ApiError::internal)?;
        if !right {
            return Err(wrong(
                StatusCode::LOCKED,
                "wrong_pin",
                "wrong registration-lock PIN",
            ));
        }
    }
    if account.totp_enabled {
        let ok = match (totp_code, recovery_code) {
            (Some(code), _) => check_totp(state, account, code).await?,
            (None, Some(rc)) => state
                .0
                .store
                .use_recovery_code(&account.user_id, &token_digest(&normalise_recovery(rc)))
                .await
                .map_err(ApiError::internal)?,
            (None, None) => false,
        };
        if !ok {
            return Err(wrong(
                StatusCode::FORBIDDEN,
                "wrong_totp",
                "wrong TOTP or recovery code",
            ));
        }
    }
    state
        .0
        .store
        .second_factor_succeeded(&account.user_id)
        .await
        .map_err(ApiError::internal)?;
    Ok(())
}

fn locked(until: i64, now: i64) -> ApiError {
    ApiError::too_many(
        "second_factor_locked",
        "too many wrong PINs or codes; this number is locked",
        ((until - now) / 1000).max(1) as u64,
    )
}

fn totp_for(state: &AuthState, account: &Account, secret_b32: &str) -> Result<Totp, ApiError> {
    let secret = TotpSecret::try_from_base32(secret_b32)
        .map_err(|e| ApiError::internal(format!("stored totp secret: {e}")))?;
    Builder::new()
        .with_secret(secret)
        .with_account_name(account.number.clone())
        .with_issuer(Some(state.0.cfg.totp_issuer.clone()))
        .build()
        .map_err(|e| ApiError::internal(format!("totp: {e}")))
}

/// True if `code` is the account's current TOTP code (±1 step) and that step
/// was not used before (RFC 6238 §5.2: a code is accepted once).
async fn check_totp(state: &AuthState, account: &Account, code: &str) -> Result<bool, ApiError> {
    let Some(secret) = &account.totp_secret else {
        return Ok(false);
    };
    if rules::check_code_shape(code).is_err() {
        return Ok(false);
    }
    let totp = totp_for(state, account, secret)?;
    let now = state.0.clock.now_secs().max(0) as u64;
    let Some(step) = totp.check(code, now) else {
        return Ok(false);
    };
    state
        .0
        .store
        .accept_totp_step(&account.user_id, step as i64)
        .await
        .map_err(ApiError::internal)
}

fn normalise_recovery(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// 16 base32 characters (80 bits), shown as XXXX-XXXX-XXXX-XXXX.
fn new_recovery_code() -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let raw: String = (0..16)
        .map(|_| char::from(ALPHABET[natter_common::random::below(32) as usize]))
        .collect();
    format!(
        "{}-{}-{}-{}",
        &raw[0..4],
        &raw[4..8],
        &raw[8..12],
        &raw[12..16]
    )
}

async fn own_account(state: &AuthState, user_id: &str) -> Result<Account, ApiError> {
    state
        .0
        .store
        .account(user_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::unauthorized("token_revoked", "this account no longer exists"))
}

/// The caller's account.
#[utoipa::path(
    get, path = "/v1/account", tag = "account", security(("bearer" = [])),
    responses((status = 200, body = AccountInfo), (status = 401, body = ErrorResponse))
)]
pub(super) async fn get_account(
    State(state): State<AuthState>,
    LiveDevice(me): LiveDevice,
) -> Result<Json<AccountInfo>, ApiError> {
    let a = own_account(&state, &me.user_id).await?;
    Ok(Json(AccountInfo {
        user_id: a.user_id,
        number: a.number,
        created_at: a.created_at / 1000,
        registration_lock: a.reglock_hash.is_some(),
        totp_enabled: a.totp_enabled,
    }))
}

/// Delete the account and everything stored for it (primary device only).
#[utoipa::path(
    delete, path = "/v1/account", tag = "account", security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not the primary device", body = ErrorResponse),
    )
)]
pub(super) async fn delete_account(
    State(state): State<AuthState>,
    LiveDevice(me): LiveDevice,
) -> Result<StatusCode, ApiError> {
    if me.device_id != 1 {
        return Err(ApiError::forbidden(
            "not_primary",
            "only the primary device can delete the account",
        ));
    }
    let avatar = match state.avatar_refs() {
        Some(_) => own_account(&state, &me.user_id).await?.avatar,
        None => None,
    };
    state
        .0
        .store
        .delete_account(&me.user_id)
        .await
        .map_err(ApiError::internal)?;
    if let (Some(refs), Some(hash)) = (state.avatar_refs(), avatar) {
        refs.release(&me.user_id, &hash).await;
    }
    tracing::info!(user_id = %me.user_id, "account deleted");
    metrics::counter!("auth_accounts_deleted_total").increment(1);
    Ok(StatusCode::NO_CONTENT)
}

/// Set (or change) the registration-lock PIN.
#[utoipa::path(
    put, path = "/v1/account/registration-lock", tag = "account", security(("bearer" = [])),
    request_body = PinRequest,
    responses((status = 204, description = "Set"), (status = 400, body = ErrorResponse))
)]
pub(super) async fn set_registration_lock(
    State(state): State<AuthState>,
    LiveDevice(me): LiveDevice,
    ApiJson(req): ApiJson<PinRequest>,
) -> Result<StatusCode, ApiError> {
    rules::check_pin(&req.pin).map_err(|m| ApiError::bad_request("invalid_pin", m))?;
    let hash = state
        .0
        .hasher
        .hash(req.pin)
        .await
        .map_err(ApiError::internal)?;
    state
        .0
        .store
        .set_reglock(&me.user_id, Some(&hash))
        .await
        .map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove the registration lock.
#[utoipa::path(
    delete, path = "/v1/account/registration-lock", tag = "account", security(("bearer" = [])),
    responses((status = 204, description = "Removed"))
)]
pub(super) async fn clear_registration_lock(
    State(state): State<AuthState>,
    LiveDevice(me): LiveDevice,
) -> Result<StatusCode, ApiError> {
    state
        .0
        .store
        .set_reglock(&me.user_id, None)
        .await
        .map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Start TOTP enrolment: returns the secret, an otpauth URI and a QR code.
/// TOTP is required only after `/v1/account/totp/confirm`.
#[utoipa::path(
    post, path = "/v1/account/totp", tag = "account", security(("bearer" = [])),
    responses(
        (status = 201, body = TotpEnrolment),
        (status = 409, description = "Already enabled", body = ErrorResponse),
    )
)]
pub(super) async fn enrol_totp(
    State(state): State<AuthState>,
    LiveDevice(me): LiveDevice,
) -> Result<(StatusCode, Json<TotpEnrolment>), ApiError> {
    let account = own_account(&state, &me.user_id).await?;
    if account.totp_enabled {
        return Err(ApiError::conflict(
            "totp_enabled",
            "TOTP is already enabled; disable it first",
        ));
    }
    let secret = TotpSecret::from(natter_common::random::bytes::<20>()).to_base32();
    let totp = totp_for(&state, &account, &secret)?;
    let uri = totp
        .to_url()
        .map_err(|e| ApiError::internal(format!("totp url: {e}")))?;
    let qr = totp
        .to_qr_base64()
        .map_err(|e| ApiError::internal(format!("totp qr: {e}")))?;
    state
        .0
        .store
        .set_totp_pending(&me.user_id, &secret)
        .await
        .map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        Json(TotpEnrolment {
            secret,
            otpauth_uri: uri,
            qr_png_base64: qr,
        }),
    ))
}

/// Confirm TOTP with a current code: from now on it is required at
/// registration. Returns ten single-use recovery codes, shown only here.
#[utoipa::path(
    post, path = "/v1/account/totp/confirm", tag = "account", security(("bearer" = [])),
    request_body = TotpCodeRequest,
    responses(
        (status = 200, body = RecoveryCodes),
        (status = 400, description = "Wrong code", body = ErrorResponse),
        (status = 409, description = "No enrolment pending", body = ErrorResponse),
    )
)]
pub(super) async fn confirm_totp(
    State(state): State<AuthState>,
    LiveDevice(me): LiveDevice,
    ApiJson(req): ApiJson<TotpCodeRequest>,
) -> Result<Json<RecoveryCodes>, ApiError> {
    let account = own_account(&state, &me.user_id).await?;
    if account.totp_enabled || account.totp_secret.is_none() {
        return Err(ApiError::conflict(
            "no_totp_enrolment",
            "start enrolment with POST /v1/account/totp first",
        ));
    }
    let code = req.code.unwrap_or_default();
    if !check_totp(&state, &account, &code).await? {
        return Err(ApiError::bad_request("wrong_totp", "wrong TOTP code"));
    }
    let codes: Vec<String> = (0..10).map(|_| new_recovery_code()).collect();
    let hashes: Vec<String> = codes
        .iter()
        .map(|c| token_digest(&normalise_recovery(c)))
        .collect();
    state
        .0
        .store
        .enable_totp(&me.user_id, &hashes)
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(user_id = %me.user_id, "totp enabled");
    Ok(Json(RecoveryCodes {
        recovery_codes: codes,
    }))
}

/// Disable TOTP, proving possession with a current code or a recovery code.
#[utoipa::path(
    post, path = "/v1/account/totp/disable", tag = "account", security(("bearer" = [])),
    request_body = TotpCodeRequest,
    responses(
        (status = 204, description = "Disabled"),
        (status = 403, description = "Wrong code", body = ErrorResponse),
        (status = 409, description = "Not enabled", body = ErrorResponse),
    )
)]
pub(super) async fn disable_totp(
    State(state): State<AuthState>,
    LiveDevice(me): LiveDevice,
    ApiJson(req): ApiJson<TotpCodeRequest>,
) -> Result<StatusCode, ApiError> {
    let account = own_account(&state, &me.user_id).await?;
    if !account.totp_enabled {
        return Err(ApiError::conflict(
            "totp_not_enabled",
            "TOTP is not enabled",
        ));
    }
    // Same rules (and lockout) as at registration, minus the PIN.
    let without_pin = Account {
        reglock_hash: None,
        ..account
    };
    check_second_factors(
        &state,
        &without_pin,
        None,
        req.code.as_deref(),
        req.recovery_code.as_deref(),
    )
    .await?;
    state
        .0
        .store
        .disable_totp(&me.user_id)
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(user_id = %me.user_id, "totp disabled");
    Ok(StatusCode::NO_CONTENT)
}

fn profile_of(a: Account) -> Profile {
    Profile {
        user_id: a.user_id,
        display_name: a.display_name,
        about: a.about,
        avatar: a.avatar,
    }
}

/// The caller's profile.
#[utoipa::path(
    get, path = "/v1/profile", tag = "profile", security(("bearer" = [])),
    responses((status = 200, body = Profile))
)]
pub(super) async fn get_own_profile(
    State(state): State<AuthState>,
    LiveDevice(me): LiveDevice,
) -> Result<Json<Profile>, ApiError> {
    Ok(Json(profile_of(own_account(&state, &me.user_id).await?)))
}

/// Change the caller's profile.
#[utoipa::path(
    put, path = "/v1/profile", tag = "profile", security(("bearer" = [])),
    request_body = ProfileUpdateRequest,
    responses(
        (status = 200, body = Profile),
        (status = 400, body = ErrorResponse),
        (status = 403, description = "An avatar another user uploaded", body = ErrorResponse),
    )
)]
pub(super) async fn update_profile(
    State(state): State<AuthState>,
    LiveDevice(me): LiveDevice,
    ApiJson(req): ApiJson<ProfileUpdateRequest>,
) -> Result<Json<Profile>, ApiError> {
    if let Some(name) = &req.display_name {
        rules::check_text("display_name", name, 64)
            .map_err(|m| ApiError::bad_request("invalid_profile", m))?;
    }
    if let Some(about) = &req.about {
        rules::check_text("about", about, 140)
            .map_err(|m| ApiError::bad_request("invalid_profile", m))?;
    }
    if let Some(Some(hash)) = &req.avatar {
        rules::check_media_hash(hash).map_err(|m| ApiError::bad_request("invalid_profile", m))?;
    }
    // With media in process, the avatar blob is referenced before the profile
    // points at it (so it cannot be collected in between), and the old one is
    // released after.
    let refs = state
        .avatar_refs()
        .filter(|_| req.avatar.is_some())
        .cloned();
    let old_avatar = match &refs {
        Some(_) => own_account(&state, &me.user_id).await?.avatar,
        None => None,
    };
    let new_avatar = req.avatar.clone().flatten();
    if let (Some(refs), Some(hash)) = (&refs, &new_avatar)
        && old_avatar.as_ref() != Some(hash)
    {
        refs.hold(&me.user_id, hash).await.map_err(|e| match e {
            AvatarRefError::UnknownMedia => ApiError::bad_request(
                "unknown_media",
                "avatar: upload the image to /v1/media first; no media has this hash",
            ),
            AvatarRefError::NotYours => ApiError::forbidden(
                "not_an_owner",
                "avatar: upload the image yourself; another user's upload cannot be your avatar",
            ),
            AvatarRefError::Failed(m) => ApiError::internal(m),
        })?;
    }
    let update = ProfileUpdate {
        display_name: req.display_name,
        about: req.about,
        avatar: req.avatar,
    };
    state
        .0
        .store
        .update_profile(&me.user_id, &update)
        .await
        .map_err(ApiError::internal)?;
    if let (Some(refs), Some(old)) = (&refs, old_avatar)
        && new_avatar.as_ref() != Some(&old)
    {
        refs.release(&me.user_id, &old).await;
    }
    Ok(Json(profile_of(own_account(&state, &me.user_id).await?)))
}

/// Another user's profile.
#[utoipa::path(
    get, path = "/v1/profile/{user_id}", tag = "profile", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "Account id")),
    responses((status = 200, body = Profile), (status = 404, body = ErrorResponse))
)]
pub(super) async fn get_profile(
    State(state): State<AuthState>,
    LiveDevice(_me): LiveDevice,
    Path(user_id): Path<String>,
) -> Result<Json<Profile>, ApiError> {
    let account = state
        .0
        .store
        .account(&user_id)
        .await
        .map_err(ApiError::internal)?;
    account
        .map(|a| Json(profile_of(a)))
        .ok_or_else(|| ApiError::not_found("user_not_found", "no such user"))
}

/// Find the account registered with a phone number (contact discovery;
/// rate-limited per caller).
#[utoipa::path(
    post, path = "/v1/accounts/lookup", tag = "account", security(("bearer" = [])),
    request_body = CreateSessionRequest,
    responses(
        (status = 200, body = LookupResponse),
        (status = 400, body = ErrorResponse),
        (status = 404, body = ErrorResponse),
        (status = 429, body = ErrorResponse),
    )
)]
pub(super) async fn lookup_number(
    State(state): State<AuthState>,
    LiveDevice(me): LiveDevice,
    ApiJson(req): ApiJson<CreateSessionRequest>,
) -> Result<Json<LookupResponse>, ApiError> {
    state
        .0
        .limits
        .lookup_per_user
        .check(&me.user_id, state.now_ms())
        .map_err(|r| ApiError::too_many("rate_limited", "too many lookups", r.secs()))?;
    let number = phone::parse(&req.number)
        .map_err(|e| ApiError::bad_request("invalid_phone_number", e.to_string()))?;
    let account = state
        .0
        .store
        .account_by_number(number.as_str())
        .await
        .map_err(ApiError::internal)?;
    account
        .map(|a| Json(LookupResponse { user_id: a.user_id }))
        .ok_or_else(|| ApiError::not_found("user_not_found", "no account has this number"))
}
