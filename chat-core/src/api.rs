//! The chat REST API under `/v1`: message status and pending messages (the
//! message service's filters), groups, presence, contacts and push tokens.
//! Every endpoint takes `Authorization: Bearer <access token>` and checks the
//! device against auth's device table (a logged-out device is refused at once).

use crate::state::ChatState;
use crate::store::{DeviceRef, GroupChange, GroupInfo, GroupOutcome, PendingFilter, PushToken};
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use natter_common::{ApiError, ApiJson, Authed};
use natter_proto::{GroupId, Message, MsgId, PresencePrivacy, PresenceState, Target, UserId};
use serde::{Deserialize, Serialize};

/// The chat routes (REST and the WebSocket at `/v1/ws`), with body limits and
/// request metrics.
pub fn router(state: ChatState) -> Router {
    let max_body = state.0.cfg.max_rest_body_bytes;
    Router::new()
        .route(natter_proto::WS_PATH, get(crate::gateway::upgrade))
        .route("/v1/messages/pending", get(pending))
        .route("/v1/messages/{msg_id}", get(message_status))
        .route("/v1/groups", post(create_group).get(my_groups))
        .route("/v1/groups/{group_id}", get(get_group).patch(rename_group))
        .route("/v1/groups/{group_id}/members", post(add_members))
        .route(
            "/v1/groups/{group_id}/members/{user_id}",
            delete(remove_member),
        )
        .route(
            "/v1/groups/{group_id}/admins/{user_id}",
            put(add_admin).delete(remove_admin),
        )
        .route("/v1/presence/privacy", get(get_privacy).put(set_privacy))
        .route("/v1/presence/contacts", get(get_contacts).put(set_contacts))
        .route("/v1/presence/{user_id}", get(get_presence))
        .route(
            "/v1/push/token",
            put(set_push_token).delete(delete_push_token),
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

// --- messages ---

/// Query of `GET /v1/messages/pending`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingQuery {
    /// `u:<user_id>` or `g:<group_id>`.
    pub conversation: Option<String>,
    /// Stored at or after (Unix ms).
    pub since: Option<i64>,
    /// Stored before (Unix ms).
    pub until: Option<i64>,
    /// 1 to 500 (default 100).
    pub limit: Option<u32>,
}

/// Pending messages.
#[derive(Debug, Serialize, Deserialize)]
pub struct PendingResponse {
    /// Oldest first, in queue order.
    pub messages: Vec<Message>,
}

async fn pending(
    State(st): State<ChatState>,
    Caller(dev): Caller,
    q: Result<Query<PendingQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ApiJson<PendingResponse>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let conversation = match q.conversation.as_deref() {
        None => None,
        Some(c) => Some(Target::from_key(c).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                "conversation: expected u:<user_id> or g:<group_id>",
            )
        })?),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit: must be within 1..=500",
        ));
    }
    let filter = PendingFilter {
        conversation,
        since: q.since,
        until: q.until,
        limit,
    };
    let messages =
        st.0.store
            .pending(&dev, &filter)
            .await
            .map_err(ApiError::internal)?;
    Ok(ApiJson(PendingResponse { messages }))
}

async fn message_status(
    State(st): State<ChatState>,
    Caller(dev): Caller,
    Path(msg_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id: MsgId = msg_id
        .parse()
        .map_err(|_| ApiError::bad_request("invalid_id", "msg_id: expected a positive integer"))?;
    match st
        .0
        .store
        .message_status(id)
        .await
        .map_err(ApiError::internal)?
    {
        // Only the sender sees a message's status; others get the same 404 as
        // for an unknown id, so ids cannot be probed.
        Some(s) if s.sender == dev.user => Ok(ApiJson(s)),
        _ => Err(ApiError::not_found(
            "unknown_message",
            format!("no message {id} sent by you"),
        )),
    }
}

// --- groups ---

/// `POST /v1/groups`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    /// Name (1 to `chat.max_group_name_chars` characters).
    pub name: String,
    /// Other members (the creator is added as admin).
    #[serde(default)]
    pub members: Vec<UserId>,
}

/// `PATCH /v1/groups/{id}`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RenameGroup {
    /// New name.
    pub name: String,
}

/// `POST /v1/groups/{id}/members`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AddMembers {
    /// Users to add.
    pub users: Vec<UserId>,
}

/// A list of groups.
#[derive(Debug, Serialize, Deserialize)]
pub struct GroupList {
    /// By id.
    pub groups: Vec<GroupInfo>,
}

fn check_name(st: &ChatState, name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    let max = st.0.cfg.max_group_name_chars;
    if name.is_empty() || name.chars().count() > max || name.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("name: 1 to {max} characters, no control characters"),
        ));
    }
    Ok(name.to_owned())
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

async fn apply(st: &ChatState, change: GroupChange) -> Result<Option<GroupInfo>, ApiError> {
    let gid = change.group_id().clone();
    st.0.group_writes
        .check(&change.by().0, st.0.clock.now_ms())
        .map_err(|r| {
            metrics::counter!("chat_rest_limited_total", "what" => "group_writes").increment(1);
            ApiError::too_many(
                "rate_limited",
                "too many group changes from this account (chat.limit_group_writes)",
                r.secs(),
            )
        })?;
    let outcome =
        st.0.writer
            .group(change)
            .await
            .map_err(ApiError::internal)?;
    match outcome {
        GroupOutcome::Done(g) => Ok(g),
        GroupOutcome::NotFound | GroupOutcome::NotMember => Err(ApiError::not_found(
            "unknown_group",
            format!("no group {gid} that you are a member of"),
        )),
        GroupOutcome::NotAdmin => Err(ApiError::forbidden(
            "not_admin",
            "only group admins can do this",
        )),
        GroupOutcome::UserNotMember => Err(ApiError::not_found(
            "not_a_member",
            "that user is not a member of the group",
        )),
        GroupOutcome::UnknownUsers(u) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_user",
            format!(
                "no account for {}",
                u.iter()
                    .map(|u| u.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .with_details(serde_json::json!({ "users": u }))),
        GroupOutcome::Full { limit } => Err(ApiError::conflict(
            "group_full",
            format!("a group has at most {limit} members (chat.max_group_members)"),
        )),
        GroupOutcome::Exists => Err(ApiError::conflict(
            "group_exists",
            "group id already taken; retry",
        )),
    }
}

async fn create_group(
    State(st): State<ChatState>,
    Caller(dev): Caller,
    ApiJson(req): ApiJson<CreateGroup>,
) -> Result<impl IntoResponse, ApiError> {
    let name = check_name(&st, &req.name)?;
    check_users(&req.members)?;
    let change = GroupChange::Create {
        group_id: GroupId(uuid::Uuid::new_v4().to_string()),
        name,
        by: dev.user,
        members: req.members,
    };
    let g = apply(&st, change).await?;
    Ok((StatusCode::CREATED, ApiJson(g)))
}

async fn my_groups(
    State(st): State<ChatState>,
    Caller(dev): Caller,
) -> Result<ApiJson<GroupList>, ApiError> {
    let groups =
        st.0.store
            .groups_of(&dev.user)
            .await
            .map_err(ApiError::internal)?;
    Ok(ApiJson(GroupList { groups }))
}

async fn get_group(
    State(st): State<ChatState>,
    Caller(dev): Caller,
    Path(group_id): Path<String>,
) -> Result<ApiJson<GroupInfo>, ApiError> {
    match st
        .0
        .store
        .group(&GroupId(group_id.clone()))
        .await
        .map_err(ApiError::internal)?
    {
        Some(g) if g.members.iter().any(|m| m.user_id == dev.user) => Ok(ApiJson(g)),
        _ => Err(ApiError::not_found(
            "unknown_group",
            format!("no group {group_id} that you are a member of"),
        )),
    }
}

async fn rename_group(
    State(st): State<ChatState>,
    Caller(dev): Caller,
    Path(group_id): Path<String>,
    ApiJson(req): ApiJson<RenameGroup>,
) -> Result<impl IntoResponse, ApiError> {
    let name = check_name(&st, &req.name)?;
    let g = apply(
        &st,
        GroupChange::Rename {
            group_id: GroupId(group_id),
            by: dev.user,
            name,
        },
    )
    .await?;
    Ok(ApiJson(g))
}

async fn add_members(
    State(st): State<ChatState>,
    Caller(dev): Caller,
    Path(group_id): Path<String>,
    ApiJson(req): ApiJson<AddMembers>,
) -> Result<impl IntoResponse, ApiError> {
    if req.users.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "users: at least one",
        ));
    }
    check_users(&req.users)?;
    let g = apply(
        &st,
        GroupChange::AddMembers {
            group_id: GroupId(group_id),
            by: dev.user,
            users: req.users,
        },
    )
    .await?;
    Ok(ApiJson(g))
}

async fn remove_member(
    State(st): State<ChatState>,
    Caller(dev): Caller,
    Path((group_id, user_id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let change = GroupChange::RemoveMember {
        group_id: GroupId(group_id),
        by: dev.user,
        user: UserId(user_id),
    };
    apply(&st, change).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn add_admin(
    State(st): State<ChatState>,
    Caller(dev): Caller,
    Path((group_id, user_id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let change = GroupChange::SetAdmin {
        group_id: GroupId(group_id),
        by: dev.user,
        user: UserId(user_id),
        admin: true,
    };
    Ok(ApiJson(apply(&st, change).await?))
}

async fn remove_admin(
    State(st): State<ChatState>,
    Caller(dev): Caller,
    Path((group_id, user_id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let change = GroupChange::SetAdmin {
        group_id: GroupId(group_id),
        by: dev.user,
        user: UserId(user_id),
        admin: false,
    };
    Ok(ApiJson(apply(&st, change).await?))
}

// --- presence ---

/// A user's presence as the caller may see it.
#[derive(Debug, Serialize, Deserialize)]
pub struct PresenceResponse {
    /// Whose.
    pub user_id: UserId,
    /// Online, offline or hidden.
    pub state: PresenceState,
    /// Last seen (Unix ms), when offline and visible.
    pub last_seen: Option<i64>,
}

/// Privacy setting.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyBody {
    /// `everyone`, `contacts` or `nobody`.
    pub privacy: PresencePrivacy,
}

/// Contact list.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactsBody {
    /// User ids.
    pub users: Vec<UserId>,
}

async fn get_presence(
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

async fn get_privacy(
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

async fn set_privacy(
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

async fn get_contacts(
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

async fn set_contacts(
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

// --- push ---

/// `PUT /v1/push/token`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushTokenBody {
    /// `fcm`, `apns`, … (passed to the gateway).
    pub platform: String,
    /// The provider's device token.
    pub token: String,
}

async fn set_push_token(
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
    let token = PushToken {
        platform: req.platform,
        token: req.token,
    };
    st.0.store
        .set_push_token(&dev, &token, st.0.clock.now_ms())
        .await
        .map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_push_token(
    State(st): State<ChatState>,
    Caller(dev): Caller,
) -> Result<impl IntoResponse, ApiError> {
    st.0.store
        .delete_push_token(&dev.user, dev.device)
        .await
        .map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}
