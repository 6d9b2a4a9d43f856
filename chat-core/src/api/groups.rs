//! Groups: create, list, read, rename, members and admins. Every change
//! goes through the single writer, counted against `chat.limit_group_writes`.

use super::{Caller, ErrorResponse, check_users};
use crate::state::ChatState;
use crate::store::{GroupChange, GroupInfo, GroupOutcome};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use natter_common::{ApiError, ApiJson};
use natter_proto::{GroupId, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/groups`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    /// Name (1 to `chat.max_group_name_chars` characters).
    pub name: String,
    /// Other members (the creator is added as admin).
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub members: Vec<UserId>,
}

/// `PATCH /v1/groups/{id}`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameGroup {
    /// New name.
    pub name: String,
}

/// `POST /v1/groups/{id}/members`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMembers {
    /// Users to add.
    #[schema(value_type = Vec<String>)]
    pub users: Vec<UserId>,
}

/// A list of groups.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
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

/// Create a group; the caller is its first admin.
#[utoipa::path(
    post, path = "/v1/groups", tag = "groups",
    request_body = CreateGroup,
    responses(
        (status = 201, body = GroupInfo),
        (status = 401, body = ErrorResponse),
        (status = 404, description = "An unknown member", body = ErrorResponse),
        (status = 422, description = "A bad name or user id, or too many members", body = ErrorResponse),
        (status = 429, description = "Too many group changes from this account (`chat.limit_group_writes`)", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub(super) async fn create_group(
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

/// The caller's groups.
#[utoipa::path(
    get, path = "/v1/groups", tag = "groups",
    responses((status = 200, body = GroupList), (status = 401, body = ErrorResponse)),
    security(("bearer" = []))
)]
pub(super) async fn my_groups(
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

/// A group the caller is a member of.
#[utoipa::path(
    get, path = "/v1/groups/{group_id}", tag = "groups",
    params(("group_id" = String, Path, description = "Group id")),
    responses(
        (status = 200, body = GroupInfo),
        (status = 401, body = ErrorResponse),
        (status = 404, description = "No such group that you are a member of", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub(super) async fn get_group(
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

/// Rename a group (admins).
#[utoipa::path(
    patch, path = "/v1/groups/{group_id}", tag = "groups",
    params(("group_id" = String, Path, description = "Group id")),
    request_body = RenameGroup,
    responses(
        (status = 200, body = GroupInfo),
        (status = 401, body = ErrorResponse),
        (status = 403, description = "Not a member, or not an admin", body = ErrorResponse),
        (status = 404, description = "No such group", body = ErrorResponse),
        (status = 422, description = "A bad name or user id, or the group would be too large", body = ErrorResponse),
        (status = 429, description = "Too many group changes from this account (`chat.limit_group_writes`)", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub(super) async fn rename_group(
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

/// Add members (admins).
#[utoipa::path(
    post, path = "/v1/groups/{group_id}/members", tag = "groups",
    params(("group_id" = String, Path, description = "Group id")),
    request_body = AddMembers,
    responses(
        (status = 200, body = GroupInfo),
        (status = 401, body = ErrorResponse),
        (status = 403, description = "Not a member, or not an admin", body = ErrorResponse),
        (status = 404, description = "No such group", body = ErrorResponse),
        (status = 422, description = "A bad name or user id, or the group would be too large", body = ErrorResponse),
        (status = 429, description = "Too many group changes from this account (`chat.limit_group_writes`)", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub(super) async fn add_members(
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

/// Remove a member (admins), or leave (yourself).
#[utoipa::path(
    delete, path = "/v1/groups/{group_id}/members/{user_id}", tag = "groups",
    params(("group_id" = String, Path, description = "Group id"), ("user_id" = String, Path, description = "Member")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, body = ErrorResponse),
        (status = 403, description = "Not a member, or not an admin", body = ErrorResponse),
        (status = 404, description = "No such group", body = ErrorResponse),
        (status = 422, description = "A bad name or user id, or the group would be too large", body = ErrorResponse),
        (status = 429, description = "Too many group changes from this account (`chat.limit_group_writes`)", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub(super) async fn remove_member(
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

/// Make a member an admin (admins).
#[utoipa::path(
    put, path = "/v1/groups/{group_id}/admins/{user_id}", tag = "groups",
    params(("group_id" = String, Path, description = "Group id"), ("user_id" = String, Path, description = "Member")),
    responses(
        (status = 200, body = GroupInfo),
        (status = 401, body = ErrorResponse),
        (status = 403, description = "Not a member, or not an admin", body = ErrorResponse),
        (status = 404, description = "No such group", body = ErrorResponse),
        (status = 422, description = "A bad name or user id, or the group would be too large", body = ErrorResponse),
        (status = 429, description = "Too many group changes from this account (`chat.limit_group_writes`)", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub(super) async fn add_admin(
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

/// Take a member's admin rights (admins).
#[utoipa::path(
    delete, path = "/v1/groups/{group_id}/admins/{user_id}", tag = "groups",
    params(("group_id" = String, Path, description = "Group id"), ("user_id" = String, Path, description = "Member")),
    responses(
        (status = 200, body = GroupInfo),
        (status = 401, body = ErrorResponse),
        (status = 403, description = "Not a member, or not an admin", body = ErrorResponse),
        (status = 404, description = "No such group", body = ErrorResponse),
        (status = 422, description = "A bad name or user id, or the group would be too large", body = ErrorResponse),
        (status = 429, description = "Too many group changes from this account (`chat.limit_group_writes`)", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub(super) async fn remove_admin(
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
