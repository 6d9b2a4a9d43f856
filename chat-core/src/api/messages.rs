//! `GET /v1/messages/pending` and `GET /v1/messages/{msg_id}`.

use super::{Caller, ErrorResponse};
use crate::state::ChatState;
use crate::store::{MessageStatus, PendingFilter};
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use natter_common::{ApiError, ApiJson};
use natter_proto::{Message, MsgId, Target};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Query of `GET /v1/messages/pending`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
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
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PendingResponse {
    /// Oldest first, in queue order: `msg` frames as on the WebSocket
    /// (docs/protocol.md).
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<Message>,
}

/// This device's messages not yet acknowledged, with filters (the same
/// entries the WebSocket delivers; fetching does not acknowledge them).
#[utoipa::path(
    get, path = "/v1/messages/pending", tag = "messages",
    params(PendingQuery),
    responses(
        (status = 200, body = PendingResponse),
        (status = 400, description = "A bad filter", body = ErrorResponse),
        (status = 401, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub(super) async fn pending(
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

/// A sent message's delivery state, per recipient (only for its sender;
/// anyone else gets the same 404 as for an unknown id).
#[utoipa::path(
    get, path = "/v1/messages/{msg_id}", tag = "messages",
    params(("msg_id" = u64, Path, description = "The server's message id")),
    responses(
        (status = 200, body = MessageStatus),
        (status = 400, body = ErrorResponse),
        (status = 401, body = ErrorResponse),
        (status = 404, description = "No message with this id sent by you", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub(super) async fn message_status(
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
