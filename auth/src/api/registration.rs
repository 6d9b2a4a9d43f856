//! Registration: a session proves the caller receives codes at a number; a
//! verified session becomes an account (or moves one to a new primary device).

use super::types::*;
use super::{AuthState, account};
use crate::phone;
use crate::rules;
use crate::sms::{CodeMessage, Transport};
use crate::store::{RegSession, Registered};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use natter_common::http::ClientIp;
use natter_common::ratelimit::RetryAfter;
use natter_common::{ApiError, ApiJson};

fn rate_limited(what: &str, r: RetryAfter) -> ApiError {
    ApiError::too_many(
        "rate_limited",
        format!("too many {what}; try again in {} s", r.secs()),
        r.secs(),
    )
}

fn to_response(s: &RegSession, max_attempts: u32) -> SessionResponse {
    SessionResponse {
        session_id: s.id.clone(),
        number: s.number.clone(),
        verified: s.verified_at.is_some(),
        code_expires_at: s.code_expires_at / 1000,
        next_code_at: s.next_send_at / 1000,
        attempts_left: (i64::from(max_attempts) - s.attempts).max(0),
        expires_at: s.expires_at / 1000,
    }
}

/// Loads a session that is still usable, or the error saying why not.
async fn live_session(state: &AuthState, id: &str) -> Result<RegSession, ApiError> {
    let session = state
        .0
        .store
        .session(id)
        .await
        .map_err(ApiError::internal)?;
    let Some(session) = session else {
        return Err(ApiError::not_found(
            "session_not_found",
            "no such registration session",
        ));
    };
    if session.expires_at <= state.now_ms() {
        return Err(ApiError::new(
            StatusCode::GONE,
            "session_expired",
            "registration session expired; start a new one",
        ));
    }
    Ok(session)
}

/// Counts a code send against the per-IP, per-number and per-prefix limits.
fn check_send_limits(state: &AuthState, ip: &str, number: &phone::E164) -> Result<(), ApiError> {
    let now = state.now_ms();
    let l = &state.0.limits;
    l.per_ip
        .check(ip, now)
        .map_err(|r| rate_limited("codes from this address", r))?;
    l.per_number
        .check(number.as_str(), now)
        .map_err(|r| rate_limited("codes for this number", r))?;
    l.per_prefix
        .check(number.pumping_prefix(), now)
        .map_err(|r| rate_limited("codes for numbers in this range", r))?;
    Ok(())
}

/// Makes, stores (hashed) and sends a new code for `session`.
async fn send_code(
    state: &AuthState,
    session: &RegSession,
    transport: Transport,
) -> Result<RegSession, ApiError> {
    let cfg = &state.0.cfg;
    let now = state.now_ms();
    // A test number's code is fixed by configuration and never sent.
    let test_number = cfg.is_test_number(&session.number);
    let code = if test_number {
        cfg.test_code.expose().to_owned()
    } else {
        natter_common::random::digits(6)
    };
    let code_hash = state
        .0
        .hasher
        .hash(code.clone())
        .await
        .map_err(ApiError::internal)?;
    let sends = session.sends + 1;
    let code_expires_at = now + i64::from(cfg.code_ttl_secs) * 1000;
    let next_send_at =
        now + i64::from(rules::resend_wait_secs(sends, &cfg.resend_waits_secs)) * 1000;
    let recorded = state
        .0
        .store
        .record_code_sent(
            &session.id,
            session.sends,
            &code_hash,
            code_expires_at,
            next_send_at,
        )
        .await
        .map_err(ApiError::internal)?;
    if !recorded {
        return Err(ApiError::conflict(
            "concurrent_request",
            "another code request for this session is in progress",
        ));
    }
    let number = phone::parse(&session.number).map_err(ApiError::internal)?;
    let msg = CodeMessage {
        to: number,
        code,
        transport,
        session_id: session.id.clone(),
    };
    if test_number {
        tracing::info!(session_id = %session.id, "test number: its configured code stands, nothing sent");
        return live_session(state, &session.id).await;
    }
    if let Err(e) = state.0.sms.send(&msg).await {
        tracing::error!(session_id = %session.id, error = %e, "code could not be sent");
        if let crate::sms::SmsError::Undeliverable(_) = e {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "code_undeliverable",
                match transport {
                    Transport::Sms => {
                        "the code could not be sent: this number cannot receive it by SMS; ask for a voice call"
                    }
                    Transport::Voice => {
                        "the code could not be sent: this number cannot take the call"
                    }
                },
            ));
        }
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "sms_unavailable",
            "the code could not be sent; try again later",
        ));
    }
    metrics::counter!("auth_codes_sent_total", "transport" => match transport { Transport::Sms => "sms", Transport::Voice => "voice" }).increment(1);
    live_session(state, &session.id).await
}

/// Start registering a number: creates a session and sends the first code.
#[utoipa::path(
    post, path = "/v1/registration/sessions", tag = "registration",
    request_body = CreateSessionRequest,
    responses(
        (status = 201, description = "Session created, code sent", body = SessionResponse),
        (status = 400, description = "Not a valid phone number", body = ErrorResponse),
        (status = 429, description = "Rate limited (see Retry-After)", body = ErrorResponse),
        (status = 422, description = "The provider cannot deliver a code to this number by SMS (`code_undeliverable`): ask for a voice call", body = ErrorResponse),
        (status = 502, description = "The SMS provider failed (`sms_unavailable`)", body = ErrorResponse),
    )
)]
pub(super) async fn create_session(
    State(state): State<AuthState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<CreateSessionRequest>,
) -> Result<(StatusCode, Json<SessionResponse>), ApiError> {
    let number = phone::parse(&req.number)
        .map_err(|e| ApiError::bad_request("invalid_phone_number", e.to_string()))?;
    check_send_limits(&state, &ip.to_string(), &number)?;
    let now = state.now_ms();
    let session = RegSession {
        id: hex::encode(natter_common::random::bytes::<16>()),
        number: number.as_str().to_owned(),
        created_at: now,
        expires_at: now + i64::from(state.0.cfg.session_ttl_secs) * 1000,
        code_hash: None,
        code_expires_at: 0,
        sends: 0,
        next_send_at: now,
        attempts: 0,
        verified_at: None,
        used: false,
    };
    state
        .0
        .store
        .insert_session(&session)
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(session_id = %session.id, "registration session created");
    let session = send_code(&state, &session, req.transport.unwrap_or(Transport::Sms)).await?;
    Ok((
        StatusCode::CREATED,
        Json(to_response(&session, state.0.cfg.max_code_attempts)),
    ))
}

/// A session's state.
#[utoipa::path(
    get, path = "/v1/registration/sessions/{session_id}", tag = "registration",
    params(("session_id" = String, Path, description = "From session creation")),
    responses(
        (status = 200, body = SessionResponse),
        (status = 404, body = ErrorResponse),
        (status = 410, description = "Expired", body = ErrorResponse),
    )
)]
pub(super) async fn get_session(
    State(state): State<AuthState>,
    Path(session_id): Path<String>,
) -> Result<Json<SessionResponse>, ApiError> {
    let session = live_session(&state, &session_id).await?;
    Ok(Json(to_response(&session, state.0.cfg.max_code_attempts)))
}

/// Send another code (waits between codes grow: 1, 2, 5, then 10 minutes).
#[utoipa::path(
    post, path = "/v1/registration/sessions/{session_id}/code", tag = "registration",
    params(("session_id" = String, Path, description = "From session creation")),
    request_body = ResendRequest,
    responses(
        (status = 200, description = "Code sent", body = SessionResponse),
        (status = 404, body = ErrorResponse),
        (status = 409, description = "Already verified", body = ErrorResponse),
        (status = 410, description = "Expired", body = ErrorResponse),
        (status = 429, description = "Too soon or too many (see Retry-After)", body = ErrorResponse),
        (status = 422, description = "The provider cannot deliver a code to this number by this transport (`code_undeliverable`)", body = ErrorResponse),
        (status = 502, description = "The SMS/voice provider failed (`sms_unavailable`)", body = ErrorResponse),
    )
)]
pub(super) async fn resend_code(
    State(state): State<AuthState>,
    ClientIp(ip): ClientIp,
    Path(session_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<SessionResponse>, ApiError> {
    // The body is optional: an empty one means "send by SMS".
    let req: ResendRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ResendRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_json", format!("malformed JSON: {e}")))?
    };
    let session = live_session(&state, &session_id).await?;
    if session.verified_at.is_some() {
        return Err(ApiError::conflict(
            "already_verified",
            "this session is already verified",
        ));
    }
    let cfg = &state.0.cfg;
    if session.sends >= i64::from(cfg.max_sends_per_session) {
        let wait = ((session.expires_at - state.now_ms()) / 1000).max(1) as u64;
        return Err(ApiError::too_many(
            "too_many_codes",
            format!(
                "{} codes were sent in this session; start a new session later",
                session.sends
            ),
            wait,
        ));
    }
    let now = state.now_ms();
    if now < session.next_send_at {
        let wait = RetryAfter {
            wait_ms: session.next_send_at - now,
        };
        return Err(ApiError::too_many(
            "resend_too_soon",
            format!("wait {} s before asking for another code", wait.secs()),
            wait.secs(),
        ));
    }
    let number = phone::parse(&session.number).map_err(ApiError::internal)?;
    check_send_limits(&state, &ip.to_string(), &number)?;
    let session = send_code(&state, &session, req.transport.unwrap_or(Transport::Sms)).await?;
    Ok(Json(to_response(&session, cfg.max_code_attempts)))
}

/// Check a code. Five wrong codes burn the session.
#[utoipa::path(
    post, path = "/v1/registration/sessions/{session_id}/verify", tag = "registration",
    params(("session_id" = String, Path, description = "From session creation")),
    request_body = VerifyRequest,
    responses(
        (status = 200, description = "Verified", body = SessionResponse),
        (status = 400, description = "Wrong or malformed code (`attempts_left` says how many tries remain)", body = ErrorResponse),
        (status = 404, body = ErrorResponse),
        (status = 410, description = "Session or code expired", body = ErrorResponse),
        (status = 429, description = "No attempts left, or rate limited", body = ErrorResponse),
    )
)]
pub(super) async fn verify_code(
    State(state): State<AuthState>,
    ClientIp(ip): ClientIp,
    Path(session_id): Path<String>,
    ApiJson(req): ApiJson<VerifyRequest>,
) -> Result<Json<SessionResponse>, ApiError> {
    let cfg = &state.0.cfg;
    let now = state.now_ms();
    state
        .0
        .limits
        .verify_per_ip
        .check(&ip.to_string(), now)
        .map_err(|r| rate_limited("code checks from this address", r))?;
    let session = live_session(&state, &session_id).await?;
    if session.verified_at.is_some() {
        return Ok(Json(to_response(&session, cfg.max_code_attempts)));
    }
    rules::check_code_shape(&req.code).map_err(|m| ApiError::bad_request("invalid_code", m))?;
    let Some(code_hash) = session.code_hash.clone() else {
        return Err(ApiError::conflict(
            "no_code_sent",
            "no code was sent in this session yet",
        ));
    };
    if session.code_expires_at <= now {
        return Err(ApiError::new(
            StatusCode::GONE,
            "code_expired",
            "this code expired; ask for a new one",
        ));
    }
    // Count the attempt before checking, atomically, so parallel guesses cannot
    // exceed the cap.
    let max = i64::from(cfg.max_code_attempts);
    let Some(attempts) = state
        .0
        .store
        .take_attempt(&session.id, max)
        .await
        .map_err(ApiError::internal)?
    else {
        let wait = ((session.expires_at - now) / 1000).max(1) as u64;
        return Err(ApiError::too_many(
            "too_many_attempts",
            format!("{max} wrong codes: this session is closed; start a new one"),
            wait,
        ));
    };
    let right = state
        .0
        .hasher
        .verify(req.code, code_hash)
        .await
        .map_err(ApiError::internal)?;
    if !right {
        metrics::counter!("auth_code_checks_total", "outcome" => "wrong").increment(1);
        let left = max - attempts;
        return Err(ApiError::bad_request(
            "wrong_code",
            format!("wrong code; {left} attempts left"),
        )
        .with_details(serde_json::json!({ "attempts_left": left })));
    }
    metrics::counter!("auth_code_checks_total", "outcome" => "right").increment(1);
    state
        .0
        .store
        .mark_verified(&session.id, now)
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(session_id = %session.id, "registration session verified");
    let session = live_session(&state, &session.id).await?;
    Ok(Json(to_response(&session, cfg.max_code_attempts)))
}

/// Create the account from a verified session, or re-register an existing
/// number on this new primary device (removing its old devices).
#[utoipa::path(
    post, path = "/v1/accounts", tag = "registration",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created", body = RegisterResponse),
        (status = 200, description = "Existing account re-registered on this device", body = RegisterResponse),
        (status = 403, description = "Session not verified, or TOTP required/wrong", body = ErrorResponse),
        (status = 409, description = "Session already used", body = ErrorResponse),
        (status = 423, description = "Registration lock: PIN required or wrong", body = ErrorResponse),
        (status = 429, description = "Too many wrong PINs/codes: locked out", body = ErrorResponse),
    )
)]
pub(super) async fn register(
    State(state): State<AuthState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>), ApiError> {
    // Registration carries PIN and TOTP guesses: it is limited like code checks.
    state
        .0
        .limits
        .register_per_ip
        .check(&ip.to_string(), state.now_ms())
        .map_err(|r| rate_limited("registration attempts from this address", r))?;
    let name = req.device_name.trim();
    if name.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_device_name",
            "device_name must not be empty",
        ));
    }
    rules::check_text("device_name", name, 64)
        .map_err(|m| ApiError::bad_request("invalid_device_name", m))?;
    let session = live_session(&state, &req.session_id).await?;
    if session.verified_at.is_none() {
        return Err(ApiError::forbidden(
            "session_not_verified",
            "verify the code first",
        ));
    }
    if session.used {
        return Err(ApiError::conflict(
            "session_used",
            "this session was already used to register",
        ));
    }
    if let Some(account) = state
        .0
        .store
        .account_by_number(&session.number)
        .await
        .map_err(ApiError::internal)?
    {
        account::check_second_factors(
            &state,
            &account,
            req.registration_lock_pin.as_deref(),
            req.totp_code.as_deref(),
            req.recovery_code.as_deref(),
        )
        .await?;
    }
    let (device, refresh) = state.new_device(name);
    let user_id = uuid::Uuid::new_v4().to_string();
    let now = state.now_ms();
    let outcome = state
        .0
        .store
        .register(&session.id, &session.number, &user_id, &device, now)
        .await
        .map_err(ApiError::internal)?;
    let (account, reregistered) = match outcome {
        Registered::Created(a) => (a, false),
        Registered::Reregistered(a) => (a, true),
        Registered::SessionUnusable => {
            return Err(ApiError::conflict(
                "session_used",
                "this session was already used to register",
            ));
        }
    };
    let stored = state
        .0
        .store
        .device(&account.user_id, 1)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal("registered device vanished"))?;
    tracing::info!(user_id = %account.user_id, device_id = 1, reregistered, "account registered");
    metrics::counter!("auth_registrations_total", "kind" => if reregistered { "reregistered" } else { "created" }).increment(1);
    let credentials = state.credentials(&stored, refresh, device.refresh.expires_at);
    let status = if reregistered {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(RegisterResponse {
            credentials,
            number: account.number,
            reregistered,
        }),
    ))
}
