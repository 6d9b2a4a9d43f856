//! Presence (a user's state, privacy, contacts) and this device's push token.

use super::{Caller, ErrorResponse, check_users};
use crate::state::ChatState;
use crate::store::PushToken;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use natter_common::{ApiError, ApiJson};
use natter_proto::{PresencePrivacy, PresenceState, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A user's presence as the caller may see it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PresenceResponse {
    /// Whose.
    #[schema(value_type = String)]
    pub user_id: UserId,
    /// `online`, `offline` or `hidden`.
    #[schema(value_type = String)]
    pub state: PresenceState,
    /// Last seen (Unix ms), when offline and visible.
    pub last_seen: Option<i64>,
}

/// Privacy setting.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrivacyBody {
    /// `everyone`, `contacts` or `nobody`.
    #[schema(value_type = String)]
    pub privacy: PresencePrivacy,
}

/// Contact list.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactsBody {
    /// User ids.
    #[schema(value_type = Vec<String>)]
    pub users: Vec<UserId>,
}

/// A user's presence and last seen, as their privacy setting lets the caller see it.
#[utoipa::path(
    get, path = "/v1/presence/{user_id}", tag = "presence",
    params(("user_id" = String, Path, description = "Whose")),
    responses(
        (status = 200, body = PresenceResponse),
        (status = 404, description = "No such user", body = ErrorResponse),
        (status = 401, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub(super) async fn get_presence(
    State(st): State<ChatState>,
    Caller(dev): Caller,
    Path(user_id): Path<String>,
) -> Result<ApiJson<PresenceResponse>, ApiError> {
    let user = UserId(user_id);
    if !st
        .0
        .store
        .user_exists(&user)
        .await
        .map_err(ApiError::internal)?
    {
        return Err(ApiError::not_found(
            "unknown_user",
            format!("no user {user}"),
        ));
    }
    let (state, last_seen) = crate::presence::current(&st, &user, &dev.user)
        .await
        .map_err(ApiError::internal)?;
    Ok(ApiJson(PresenceResponse {
        user_id: user,
        state,
        last_seen,
    }))
}

/// The caller's presence privacy.
#[utoipa::path(
    get, path = "/v1/presence/privacy", tag = "presence",
    responses(
        (status = 200, body = PrivacyBody),
        (status = 401, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub(super) async fn get_privacy(
    State(st): State<ChatState>,
    Caller(dev): Caller,
) -> Result<ApiJson<PrivacyBody>, ApiError> {
    let (privacy, _) =
        st.0.store
            .presence(&dev.user)
            .await
            .map_err(ApiError::internal)?;
    Ok(ApiJson(PrivacyBody { privacy }))
}

/// Set who sees the caller's presence and last seen.
#[utoipa::path(
    put, path = "/v1/presence/privacy", tag = "presence",
    request_body = PrivacyBody,
    responses(
        (status = 200, body = PrivacyBody),
        (status = 400, body = ErrorResponse),
        (status = 401, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub(super) async fn set_privacy(
    State(st): State<ChatState>,
    Caller(dev): Caller,
    ApiJson(req): ApiJson<PrivacyBody>,
) -> Result<ApiJson<PrivacyBody>, ApiError> {
    st.0.store
        .set_privacy(&dev.user, req.privacy)
        .await
        .map_err(ApiError::internal)?;
    Ok(ApiJson(req))
}

/// The caller's contacts (who sees presence under `contacts`).
#[utoipa::path(
    get, path = "/v1/presence/contacts", tag = "presence",
    responses(
        (status = 200, body = ContactsBody),
        (status = 401, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub(super) async fn get_contacts(
    State(st): State<ChatState>,
    Caller(dev): Caller,
) -> Result<ApiJson<ContactsBody>, ApiError> {
    let users =
        st.0.store
            .contacts(&dev.user)
            .await
            .map_err(ApiError::internal)?;
    Ok(ApiJson(ContactsBody { users }))
}

/// Replace the caller's contacts.
#[utoipa::path(
    put, path = "/v1/presence/contacts", tag = "presence",
    request_body = ContactsBody,
    responses(
        (status = 204, description = "Replaced"),
        (status = 422, description = "A bad user id, or more than `chat.max_contacts`", body = ErrorResponse),
        (status = 401, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub(super) async fn set_contacts(
    State(st): State<ChatState>,
    Caller(dev): Caller,
    ApiJson(req): ApiJson<ContactsBody>,
) -> Result<impl IntoResponse, ApiError> {
    let max = st.0.cfg.max_contacts;
    if req.users.len() > max {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_contacts",
            format!("at most {max} contacts (chat.max_contacts)"),
        ));
    }
    check_users(&req.users)?;
    st.0.store
        .set_contacts(&dev.user, &req.users)
        .await
        .map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /v1/push/token`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushTokenBody {
    /// `fcm` (Android), `apns` (iOS), or with the webhook backend any name its
    /// gateway knows (`a-z 0-9 _`).
    pub platform: String,
    /// The provider's device token (for `apns`, the hex device token).
    pub token: String,
    /// `apns` only: the device's PushKit token, for VoIP pushes (calls). Without
    /// it a call is announced with an alert push to `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voip_token: Option<String>,
}

/// An APNs token: hex (32 bytes today; Apple says it may grow).
fn apns_token_ok(t: &str) -> bool {
    (64..=200).contains(&t.len())
        && t.len().is_multiple_of(2)
        && t.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Register this device's push token (FCM, APNs, ...): messages and calls wake it when it is offline.
#[utoipa::path(
    put, path = "/v1/push/token", tag = "push",
    request_body = PushTokenBody,
    responses(
        (status = 204, description = "Stored"),
        (status = 422, description = "A bad platform or token, or a platform this server has no provider for (`unsupported_platform`)", body = ErrorResponse),
        (status = 401, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub(super) async fn set_push_token(
    State(st): State<ChatState>,
    Caller(dev): Caller,
    ApiJson(req): ApiJson<PushTokenBody>,
) -> Result<impl IntoResponse, ApiError> {
    let platform_ok = !req.platform.is_empty()
        && req.platform.len() <= 32
        && req
            .platform
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !platform_ok {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "platform: 1 to 32 of a-z 0-9 _",
        ));
    }
    if req.token.is_empty() || req.token.len() > 4096 || req.token.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "token: 1 to 4096 printable characters",
        ));
    }
    let bad = |msg: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", msg);
    if req.platform == "apns" {
        if !apns_token_ok(&req.token) {
            return Err(bad(
                "token: an APNs device token is 64 to 200 hex digits".into()
            ));
        }
        if req.voip_token.as_deref().is_some_and(|v| !apns_token_ok(v)) {
            return Err(bad(
                "voip_token: a PushKit token is 64 to 200 hex digits".into()
            ));
        }
    } else if req.voip_token.is_some() {
        return Err(bad("voip_token: only for platform apns".into()));
    }
    let push = &st.0.cfg.push;
    if push.backend == crate::config::PushBackend::Providers {
        let served = match req.platform.as_str() {
            "fcm" => push.fcm.is_configured(),
            "apns" => push.apns.is_configured(),
            _ => false,
        };
        if !served {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unsupported_platform",
                format!(
                    "platform: this server pushes to {}",
                    crate::push::providers::PLATFORMS
                        .iter()
                        .filter(|p| match **p {
                            "fcm" => push.fcm.is_configured(),
                            _ => push.apns.is_configured(),
                        })
                        .copied()
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            ));
        }
    }
    let token = PushToken {
        platform: req.platform,
        token: req.token,
        voip_token: req.voip_token,
    };
    st.0.store
        .set_push_token(&dev, &token, st.0.clock.now_ms())
        .await
        .map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Forget this device's push token.
#[utoipa::path(
    delete, path = "/v1/push/token", tag = "push",
    responses(
        (status = 204, description = "Forgotten"),
        (status = 401, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub(super) async fn delete_push_token(
    State(st): State<ChatState>,
    Caller(dev): Caller,
) -> Result<impl IntoResponse, ApiError> {
    st.0.store
        .delete_push_token(&dev.user, dev.device)
        .await
        .map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}
